"""Section `long`: GRPO steps with long answers on a real architecture, on CPU.

The bench builds its own checkpoint (no download): a Qwen2-architecture model of ~3.6M parameters
(hidden 256, 4 layers, 4 heads / 2 KV heads, MLP 768, tied embeddings) with a byte-level BPE
tokenizer trained with ``tokenizers`` on the GSM8K-format fixture (tests/fixtures/gsm8k_tiny.jsonl)
and a Qwen-style chat template, saved with ``save_pretrained`` and loaded by ``model.path=``.
Prompts are that fixture's questions in the chat format (``task.prompt_format=chat``). The model is
untrained: it emits ``<|im_end|>`` at random, so many responses run to the budget (mean ≈ 100 of
128 and ≈ 150 of 256 tokens; the row gives it) and a decode batch lasts until its longest row
ends, i.e. usually the whole budget. Per budget: `ablate train method=grpo` with P=4 prompts × G=4
(B=16), 2 microbatches, no KL, warm start off; steps 2..n-1 are kept (the first is warm-up, the
last carries the final eval). TRL's GRPOTrainer (bench/trl_step.py) runs the same work: the
same checkpoint, chat-formatted prompts and reward (the task's verifier), B, budget, 2
gradient-accumulation steps. Rows: median step time of each and their ratio, generation tokens/s
(response tokens / rollout phase), and training tokens/s (response tokens / step).
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
from pathlib import Path

from bench.ablate_run import run_ablate
from bench.common import Section, StepSetup, log, median, row
from bench.trl_step import run_trl

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "gsm8k_tiny.jsonl"
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_qwen2(out: Path, hidden: int = 256, layers: int = 4, vocab: int = 1000, heads: int = 4,
                kv_heads: int = 2, intermediate: int | None = None, max_positions: int = 1024) -> int:
    """Save a Qwen2 checkpoint + byte-level BPE tokenizer (trained on the GSM8K-format fixture) with
    a chat template; returns #params. The bench and tests/test_real_checkpoints.py both build theirs
    here."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    rows = [json.loads(x) for x in FIXTURE.read_text().splitlines()]
    texts = [f"{r['question']} {r['answer']} {r.get('demo', '')}" for r in rows] * 20
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.chat_template = TEMPLATE
    tok.save_pretrained(out)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads,
                      intermediate_size=intermediate or 3 * hidden,
                      max_position_embeddings=max_positions, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def _kept(xs):
    return list(xs[1:-1]) if len(xs) > 2 else list(xs[-1:])


def _rows(sec: Section, label: str, s: StepSetup, res: dict, trl: dict | None) -> None:
    step = median(_kept(res["step_s"]))
    roll = median(_kept(res["phases"]["rollout"]))
    lens = [x for x in _kept(res["response_len"]) if x is not None]
    tokens = s.batch * (sum(lens) / len(lens)) if lens else float("nan")
    sec.details[f"T={s.max_new_tokens}"] = {**res, "step_median_s": step, "rollout_median_s": roll,
                                           "response_tokens": tokens, "trl": trl}
    sec.rows.append(row(f"{label}: step", step, unit="s",
                        note=f"rollout {roll:.2f} s, fwd/bwd "
                             f"{median(_kept(res['phases']['forward_backward'])):.2f} s, "
                             f"old logp {median(_kept(res['phases']['logp'])):.2f} s; "
                             f"mean response {tokens / s.batch:.0f} tokens"))
    if trl is not None:
        trl_step = median(_kept(trl["step_s"]))
        trl_lens = [x for x in _kept(trl["completion_len"]) if x is not None]
        trl_tokens = s.batch * (sum(trl_lens) / len(trl_lens)) if trl_lens else float("nan")
        sec.details[f"T={s.max_new_tokens}"].update(trl_step_median_s=trl_step, trl_response_tokens=trl_tokens)
        sec.rows.append(row(f"{label}: ablate / TRL step", step / trl_step,
                            note=f"{step:.2f} s vs {trl_step:.2f} s; TRL mean response "
                                 f"{trl_tokens / s.batch:.0f} tokens, {trl_tokens / trl_step:.0f} tok/s"))
    sec.rows.append(row(f"{label}: generation tokens/s", tokens / roll, unit="tok/s",
                        note=f"training {tokens / step:.0f} tok/s (response tokens / step)"))


def run(quick: bool = False) -> Section:
    sec = Section("long")
    t0 = time.perf_counter()
    budgets = [16] if quick else [128, 256]
    with tempfile.TemporaryDirectory(prefix="bench-qwen2-") as d:
        n_params = build_qwen2(Path(d), hidden=64 if quick else 256, layers=1 if quick else 4)
        sec.details["params"] = n_params
        for T in budgets:
            s = StepSetup(prompts=2 if quick else 4, group=4, max_new_tokens=T, steps=3 if quick else 6,
                          extra=[f"model.path={d}", "task=gsm8k_jsonl", f"task.path={FIXTURE}",
                                 "task.prompt_format=chat", f"task.max_new_tokens={T}",
                                 "task.eval_fraction=0.2", "eval.num_prompts=2", "eval.n=1"])
            log(f"[bench] long: Qwen2 {n_params / 1e6:.1f}M, {s.label()}")
            res = run_ablate(s)
            trl = None  # the TRL row needs the bench extra; the suite's quick run has none (CI)
            if importlib.util.find_spec("trl") is not None:
                log(f"[bench] long: Qwen2 {n_params / 1e6:.1f}M, {s.label()}: TRL")
                trl = run_trl(s)
            _rows(sec, f"long Qwen2 {n_params / 1e6:.1f}M, {s.label()}", s, res, trl)
    sec.seconds = time.perf_counter() - t0
    return sec
