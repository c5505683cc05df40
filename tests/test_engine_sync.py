"""The rollout engine gets the current weights after every update: an engine that keeps its own
copy (vLLM) would otherwise sample every step from the initial policy while ρ is computed against
the current one. A recording engine (HF sampling underneath) checks the pushes."""

from __future__ import annotations

import pytest
import torch

from ablate.config import compose_config
from ablate.rollout.hf import HFEngine

FAST = [
    "train.steps=3", "train.prompts_per_step=4", "train.group_size=4", "train.microbatches=2",
    "train.minibatches=2", "eval.num_prompts=4", "eval.n=4", "eval.every=0", "tracker=none",
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
    "model.warm_start.steps=10", "model.warm_start.target_pass1=null",
    "rollout._target_=tests.test_engine_sync.RecordingEngine",
]


class RecordingEngine(HFEngine):
    """Samples with HF generate, but from its *own* copy of the weights, like vLLM."""

    instances: list["RecordingEngine"] = []

    def __init__(self, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 8,
                 top_k: int = 0, batch_size=None, logprob_batch_size=None, is_correction="none",
                 is_cap=2.0):
        super().__init__(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                         top_k=top_k, batch_size=batch_size, logprob_batch_size=logprob_batch_size,
                         is_correction=is_correction, is_cap=is_cap)
        self.pushes: list[dict[str, torch.Tensor]] = []
        self.stale_generations = 0
        RecordingEngine.instances.append(self)

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.pushes.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    def generate(self, model, tokenizer, prompts, n, **kw):
        if self.pushes:  # what the engine would sample from must be the trainer's current policy
            current = model.state_dict()
            if any(not torch.equal(current[k], v) for k, v in self.pushes[-1].items()):
                self.stale_generations += 1
        return super().generate(model, tokenizer, prompts, n, **kw)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_weights_are_pushed_after_every_update_and_generation_uses_them():
    from ablate.train.trainer import Trainer

    RecordingEngine.instances.clear()
    tr = Trainer(compose_config(FAST + ["method=grpo", "advantage=constant"]))  # Â ≡ 1: weights move
    tr.run(progress=False)
    eng = RecordingEngine.instances[-1]
    assert len(eng.pushes) == 3  # one push per RL step, after its 2 optimizer steps
    final = tr.model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in eng.pushes[-1].items())
    assert any(not torch.equal(eng.pushes[0][k], eng.pushes[1][k]) for k in final)  # weights moved
    assert eng.stale_generations == 0  # steps 2, 3 and the final eval sampled the pushed weights


class MismatchedEngine(HFEngine):
    """Reports its own log-probs, off from the trainer's by a known amount (even rows −0.5, odd +1)."""

    reports_logprobs = True

    def generate(self, model, tokenizer, prompts, n, **kw):
        from ablate.policy import token_logprobs
        out = super().generate(model, tokenizer, prompts, n, **kw)
        with torch.no_grad():
            lp, _ = token_logprobs(model, out.input_ids, out.attention_mask, out.prompt_len,
                                   kw.get("temperature") or 1.0)
        shift = torch.tensor([0.5 if i % 2 == 0 else -1.0 for i in range(lp.shape[0])])[:, None]
        out.engine_logp = (lp + shift) * out.response_mask
        return out


@pytest.mark.parametrize("mode,even,odd", [("truncate", pytest.approx(0.60653066, rel=1e-4), 2.0),
                                           ("mask", 1.0, 0.0)])
def test_train_inference_correction_weights_tokens_by_behaviour_over_engine(mode, even, odd):
    from ablate.train.trainer import Trainer

    tr = Trainer(compose_config(FAST[:-1] + [
        "method=grpo", "rollout._target_=tests.test_engine_sync.MismatchedEngine",
        f"rollout.is_correction={mode}", "rollout.is_cap=2.0"]))
    assert tr.plan.logp_before_advantage  # the weights need π_old before the loss
    rollouts, _ = tr.collect(1)
    batch = tr.assemble(rollouts)
    w, rm = batch.rows["is_weight"], batch.response_mask.bool()
    for i in range(batch.batch_size):
        vals = w[i][rm[i]]
        if vals.numel():
            assert all(float(v) == (even if i % 2 == 0 else odd) for v in vals), (i, vals)
    tr.objective.compute_advantages(batch)
    m = tr.update(batch, 1)
    assert "train/is_weight_mean" in m


def test_correction_without_engine_logprobs_is_one_line_error():
    from ablate.errors import ConfigError
    from ablate.rollout import build_engine
    with pytest.raises(ConfigError, match=r"rollout.is_correction: got 'truncate'; allowed: none unless the engine reports its own log-probs"):
        build_engine({"_target_": "ablate.rollout.hf.HFEngine", "is_correction": "truncate"})
    with pytest.raises(ConfigError, match="rollout.is_correction: unknown value 'tis'"):
        build_engine({"_target_": "ablate.rollout.hf.HFEngine", "is_correction": "tis"})
