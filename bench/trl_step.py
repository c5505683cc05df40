"""TRL's GRPOTrainer on the same tiny policy, tokenizer, prompts and settings as ``ablate train``.

Matching (see ``bench/README.md``): one generation of P×G completions per optimizer step
(``per_device_train_batch_size = P·G / microbatches``, ``gradient_accumulation_steps =
microbatches``, ``steps_per_generation`` = the same), ``loss_type="grpo"`` (seq-mean-token-mean),
group z-score advantages, ε = 0.2, β = 0 (no KL, no reference model), AdamW lr 1e-4, betas
(0.9, 0.999), no weight decay, constant schedule, grad-norm clip 1.0, temperature 1, top-p 1,
top-k 0, the task's verifier as the reward function, no eval, no logging backend.

The step time is the wall clock between consecutive ``on_step_end`` callbacks (everything the
trainer does for one optimizer step: sampling, generation, rewards, forward/backward, optimizer,
logging).
"""

from __future__ import annotations

import tempfile
import time
import warnings

from bench.common import StepSetup, build_tiny, quiet, state_digest


def run_trl(setup: StepSetup, *, silence: bool = True) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return _run_trl(setup, silence)


def _run_trl(setup: StepSetup, silence: bool) -> dict:
    import numpy as np
    import torch
    with quiet(silence):
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

    model, tok, task, cfg = build_tiny(setup)
    digest = state_digest(model)
    rng = np.random.default_rng(setup.seed)
    problems = task.train_problems(setup.prompts * (setup.steps + 2), rng)
    answers = {p.prompt: p for p in problems}
    ds = Dataset.from_dict({"prompt": [p.prompt for p in problems]})

    def reward(prompts, completions, **_):
        return [float(task.verify(answers[p], c).total) for p, c in zip(prompts, completions)]

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    mb = setup.microbatches
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as out:
        args = GRPOConfig(
            output_dir=out, max_steps=setup.steps, per_device_train_batch_size=setup.batch // mb,
            gradient_accumulation_steps=mb, steps_per_generation=mb, num_generations=setup.group,
            max_completion_length=setup.max_new_tokens, temperature=float(cfg.rollout.temperature),
            top_p=1.0, top_k=0, beta=0.0, epsilon=0.2, loss_type="grpo", scale_rewards="group",
            num_iterations=1, learning_rate=float(cfg.train.lr), weight_decay=0.0,
            adam_beta1=float(cfg.train.betas[0]), adam_beta2=float(cfg.train.betas[1]),
            max_grad_norm=float(cfg.train.max_grad_norm), lr_scheduler_type="constant",
            warmup_steps=0, optim="adamw_torch_fused", logging_steps=1, report_to="none",
            save_strategy="no", eval_strategy="no", use_cpu=True, bf16=False, fp16=False,
            seed=setup.seed, data_seed=setup.seed, dataloader_num_workers=0, disable_tqdm=True,
            log_completions=False, shuffle_dataset=True,
        )
        with quiet(silence):
            trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=ds,
                                  processing_class=tok, callbacks=[Stamp()])
            t0 = time.perf_counter()
            trainer.train()
            wall = time.perf_counter() - t0
        hist = [h for h in trainer.state.log_history if "loss" in h]
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    del trainer
    torch.set_grad_enabled(True)
    return {"step_s": steps, "wall_s": wall, "weights": digest,
            "reward_mean": [h.get("reward") for h in hist],
            "completion_len": [h.get("completions/mean_length") for h in hist]}


if __name__ == "__main__":  # python -m bench.trl_step  (a quick manual check)
    import json
    import sys
    P = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    r = run_trl(StepSetup(prompts=P, steps=4), silence=False)
    print(json.dumps(r, indent=1))
