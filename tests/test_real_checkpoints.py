"""Real-checkpoint paths on CPU, with a checkpoint this test builds and saves itself (no download):
a Qwen2-architecture model with a byte-level BPE tokenizer and a Qwen-style chat template, trained
on a GSM8K-format JSONL file with `task.prompt_format=chat`; LoRA through peft; bf16 + gradient
checkpointing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ablate.config import compose_config
from ablate.errors import ConfigError

FIXTURE = Path(__file__).parent / "fixtures" / "gsm8k_tiny.jsonl"
FAST = ["train.steps=2", "train.prompts_per_step=4", "train.group_size=4", "train.microbatches=2",
        "eval.num_prompts=4", "eval.n=2", "eval.every=0", "tracker=none", "rollout.max_new_tokens=8"]


@pytest.fixture(scope="module")
def qwen_ckpt(tmp_path_factory) -> Path:
    from bench.long import build_qwen2

    out = tmp_path_factory.mktemp("qwen2-tiny")
    build_qwen2(out, hidden=32, layers=1, vocab=300, heads=2, kv_heads=1, intermediate=64,
                max_positions=512)
    return out


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _ckpt_overrides(ckpt: Path, *extra: str) -> list[str]:
    return FAST + [f"model.path={ckpt}", "task=gsm8k_jsonl", f"task.path={FIXTURE}",
                   "task.max_new_tokens=8", "task.eval_fraction=0.2", *extra]


def test_chat_format_applies_the_checkpoints_template_with_a_system_prompt(qwen_ckpt):
    from ablate.train.trainer import Trainer

    tr = Trainer(compose_config(_ckpt_overrides(qwen_ckpt, "method=grpo", "task.prompt_format=chat",
                                                "task.system_prompt=Answer briefly.")))
    p = tr.task.eval_problems(1)[0]
    expect = tr.tok.apply_chat_template([{"role": "system", "content": "Answer briefly."},
                                         {"role": "user", "content": p.question}],
                                        tokenize=False, add_generation_prompt=True)
    assert p.prompt == expect and p.prompt.endswith("<|im_start|>assistant\n")
    # responses end where the template ends an assistant turn
    rollouts, _ = tr.collect(1)
    eos = tr.tok.convert_tokens_to_ids("<|im_end|>")
    ended = [ids for ids, trunc in zip(rollouts.response_ids, rollouts.truncated) if not trunc]
    assert all(ids[-1] == eos for ids in ended)


def test_chat_checkpoint_trains_two_steps_on_gsm8k_jsonl(qwen_ckpt, tmp_path):
    from ablate.train.api import run_config

    cfg = compose_config(_ckpt_overrides(qwen_ckpt, "method=grpo", "task.prompt_format=chat"))
    summary = run_config(cfg, run_dir=tmp_path / "run")
    assert summary["status"] == "finished" and summary["steps_done"] == 2
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(rows[-1]["train/pg_loss"]) and "eval/pass@1" in rows[-1]


def test_chat_format_without_a_template_is_one_line_error():
    from ablate.train.trainer import Trainer

    with pytest.raises(ConfigError, match="prompt_format"):
        Trainer(compose_config(FAST + ["task.prompt_format=chat", "model.warm_start.steps=0"]))
    with pytest.raises(ConfigError, match="prompt_format: unknown value 'chatml'"):
        Trainer(compose_config(FAST + ["task.prompt_format=chatml"]))


def test_lora_trains_only_adapters_and_the_frozen_base_is_the_reference(qwen_ckpt):
    from ablate.policy import token_logprobs
    from ablate.policy.lora import FrozenBase
    from ablate.train.trainer import Trainer

    tr = Trainer(compose_config(_ckpt_overrides(qwen_ckpt, "method=grpo", "advantage=constant",
                                                "model.lora={r: 4, alpha: 8}")))
    assert isinstance(tr.ref_model, FrozenBase)  # no second copy of the weights
    base = {n: p.detach().clone() for n, p in tr.model.named_parameters() if "lora_" not in n}
    lora = {n: p.detach().clone() for n, p in tr.model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad == ("lora_" in n) for n, p in tr.model.named_parameters())
    rollouts, _ = tr.collect(1)
    batch = tr.assemble(rollouts)
    tr.objective.compute_advantages(batch)
    tr.update(batch, 1)
    after = dict(tr.model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in base.items())
    assert any(not torch.equal(after[n], v) for n, v in lora.items())
    # the reference log-probs are the base model's (adapters off), not the trained policy's
    with torch.no_grad():
        ref, _ = token_logprobs(tr.ref_model, batch.input_ids, batch.attention_mask, batch.prompt_len, 1.0)
        cur, _ = token_logprobs(tr.model, batch.input_ids, batch.attention_mask, batch.prompt_len, 1.0)
    torch.testing.assert_close(ref * batch.response_mask, batch.ref_logp, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ref * batch.response_mask, cur * batch.response_mask)
    state = tr.state_dict()["model"]
    assert state and all("lora_" in k for k in state)  # checkpoints hold the adapters


def test_bf16_with_gradient_checkpointing_trains(tmp_path):
    from ablate.train.api import run_config

    cfg = compose_config(FAST + ["method=grpo", "model.dtype=bfloat16", "model.gradient_checkpointing=true",
                                 "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
                                 "model.intermediate_size=64", "model.warm_start.steps=10",
                                 "model.warm_start.target_pass1=null"])
    summary = run_config(cfg, run_dir=tmp_path / "run")
    assert summary["status"] == "finished"
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(rows[-1]["train/pg_loss"]) and math.isfinite(rows[-1]["train/grad_norm"])


def test_cli_names_the_checkpoint_once_and_keeps_third_party_warnings_off(qwen_ckpt, tmp_path):
    """`ablate train model.path=<ckpt> model.lora=...` as a user runs it: one start line with the
    path, architecture, dtype, parameter and trainable (LoRA) counts; summary.json names the
    checkpoint; no third-party warning on the console (a FutureWarning from transformers is
    provoked below); --verbose lets it through."""
    import os
    import subprocess
    import sys

    from tests.conftest import child_env

    repo = Path(__file__).resolve().parents[1]
    # a third-party warning while the checkpoint loads (as transformers' own FutureWarnings do)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import warnings\nimport transformers\n"
        "orig = transformers.AutoModelForCausalLM.from_pretrained\n"
        "def noisy(*a, **k):\n"
        "    warnings.warn_explicit('third-party noise', FutureWarning, 'transformers/x.py', 1,\n"
        "                           module='transformers.x')\n"
        "    return orig(*a, **k)\n"
        "transformers.AutoModelForCausalLM.from_pretrained = noisy\n")
    env = child_env(PYTHONPATH=os.pathsep.join([str(site), str(repo)]),
                    ABLATE_CACHE=str(tmp_path / "cache"), ABLATE_RUNS=str(tmp_path / "runs"))

    def train(*extra: str) -> subprocess.CompletedProcess:
        args = _ckpt_overrides(qwen_ckpt, "method=grpo", "model.lora={r: 4, alpha: 8}",
                               "model.warm_start=null", "-q", *extra)
        return subprocess.run([sys.executable, "-m", "ablate.cli", "train", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)

    p = train()
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    lines = [ln for ln in out.splitlines() if f"model {qwen_ckpt}" in ln]
    assert len(lines) == 1, out
    assert "Qwen2ForCausalLM, float32," in lines[0] and "trainable" in lines[0] and "(LoRA)" in lines[0]
    assert "Warning" not in out, out
    (summary,) = [json.loads(f.read_text()) for f in (tmp_path / "runs").glob("*/summary.json")]
    m = summary["model"]
    assert m["source"] == str(qwen_ckpt) and m["architecture"] == "Qwen2ForCausalLM" and m["lora"]
    assert 0 < m["trainable_params"] < m["total_params"]
    assert f"{m['trainable_params']:,}" in lines[0]
    v = train("--verbose")
    assert v.returncode == 0 and "third-party noise" in v.stderr
