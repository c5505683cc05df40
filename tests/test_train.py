"""End-to-end training runs on a very small config: every preset, determinism, metrics, JSONL data."""

from __future__ import annotations

import json
import os
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ablate.config import compose_config
from ablate.methods.catalog import load_presets
from ablate.train.api import run_config

# A model and budget small enough for ~2 s per run; the warm start is cached per test session.
FAST = [
    "train.steps=2", "train.prompts_per_step=4", "train.group_size=4", "train.microbatches=2",
    "eval.num_prompts=4", "eval.n=4", "eval.every=0", "tracker=none",
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
    "model.warm_start.steps=10", "model.warm_start.target_pass1=null",
]
DESIGN_METRICS = ["eval/pass@1", "eval/pass@2", "eval/pass@4", "eval/mean@4", "train/entropy",
                  "train/grad_var", "train/grad_norm", "train/grad_snr", "train/clip_frac_low",
                  "train/clip_frac_high", "train/clip_frac_dual", "train/mask_frac",
                  "train/frac_zero_adv_groups", "train/reward_mean", "train/response_len",
                  "train/kl_old", "perf/step_s", "perf/tokens_per_s"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _run(tmp_path: Path, *overrides: str) -> tuple[dict, list[dict]]:
    cfg = compose_config(FAST + list(overrides))
    summary = run_config(cfg, run_dir=tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return summary, rows


@pytest.mark.parametrize("method", sorted(r["name"] for r in load_presets()))
def test_every_preset_runs_a_few_steps(tmp_path, method):
    # a preset's paper schedule (DAPO: 16 minibatches) needs rows for every minibatch's 2
    # microbatches: the CPU budget grows the batch, never drops the schedule (issue 18)
    mb = int(compose_config([f"method={method}"]).train.minibatches)
    more = [f"train.prompts_per_step={-(-mb * 2 // 4)}"] if mb * 2 > 16 else []
    summary, rows = _run(tmp_path, f"method={method}", *more)
    assert summary["status"] == "finished" and summary["steps_done"] == 2
    last = rows[-1]
    assert last["step"] == 2 and math.isfinite(last["train/pg_loss"])
    assert "eval/pass@1" in last


def test_same_seed_gives_identical_metrics(tmp_path):
    dapo = ("method=dapo", "train.prompts_per_step=8")  # 32 rows for DAPO's 16 minibatches (issue 18)
    _, a = _run(tmp_path / "a", *dapo, "seed=3")
    _, b = _run(tmp_path / "b", *dapo, "seed=3")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("perf/") and k != "time"}
                          for r in rows]  # noqa: E731
    assert strip(a) == strip(b)
    _, c = _run(tmp_path / "c", *dapo, "seed=4")
    assert strip(c) != strip(a)


def test_metrics_jsonl_has_design_names_and_wandb_history_reads_back(tmp_path, monkeypatch):
    from tests.wandb_reader import read_offline_history

    monkeypatch.setenv("ABLATE_WANDB_MODE", "offline")
    summary, rows = _run(tmp_path, "method=grpo", "tracker=wandb")
    keys = set().union(*rows)
    missing = [k for k in DESIGN_METRICS if k not in keys]
    assert not missing, missing
    assert "train/kl_ref" in keys  # GRPO carries a k3 KL to the frozen initial policy
    wdir = summary["wandb"]["dir"]
    assert wdir and Path(wdir).is_dir() and summary["wandb"]["mode"] == "offline"
    hist = read_offline_history(wdir)
    logged = [h for h in hist if "train/reward_mean" in h]
    assert len(logged) == 2
    assert logged[-1]["train/reward_mean"] == pytest.approx(rows[-1]["train/reward_mean"])


def test_gsm8k_style_jsonl_trains_end_to_end_with_math_verifier(tmp_path):
    fixture = Path(__file__).parent / "fixtures" / "gsm8k_tiny.jsonl"
    summary, rows = _run(tmp_path, "method=grpo", "task=gsm8k_jsonl", f"task.path={fixture}",
                         "task.max_new_tokens=12", "model.warm_start.steps=5")
    assert summary["status"] == "finished"
    assert rows[-1]["train/response_len"] > 0
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert samples and all("response" in s for s in samples)




def test_nan_loss_fails_the_run_and_is_recorded(tmp_path):
    cfg = compose_config(FAST + ["method=grpo", "advantage=sign", "advantage._target_=tests.slot_fixtures.NaNAdvantage"])
    with pytest.raises(FloatingPointError):
        run_config(cfg, run_dir=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "non-finite" in summary["error"]


def test_cli_bad_slot_variant_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "ablate.cli", "train", "mask=clip_hgher"],
                       capture_output=True, text=True)
    assert p.returncode == 2
    err = p.stderr.strip()
    assert "\n" not in err and "clip_hgher" in err and "clip_higher" in err


def test_cli_bad_slot_parameter_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "ablate.cli", "train", "+mask.eps_hgh=0.3",
                        *FAST], capture_output=True, text=True)
    assert p.returncode == 2
    err = p.stderr.strip()
    assert "\n" not in err and "eps_hgh" in err and "eps_high" in err


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_grpo_run_beats_the_warm_start(tmp_path, seed, monkeypatch):
    """Issue 3's acceptance: the default `ablate train method=grpo` improves eval Pass@1."""
    monkeypatch.delenv("ABLATE_CACHE")
    cfg = compose_config(["method=grpo", f"seed={seed}", "tracker=none"])
    summary = run_config(cfg, run_dir=tmp_path / "run")
    assert summary["final"]["eval/pass@1"] > summary["initial_eval"]["eval/pass@1"]


@pytest.mark.parametrize("minibatches,epochs", [(1, 1), (2, 2)])
def test_behaviour_logprobs_equal_the_pre_update_policy(tmp_path, minibatches, epochs):
    """old_logp comes from the first training forward (first minibatch) or a no-grad pass (the
    rest); both must equal the policy that generated the batch, scored before any update."""
    from ablate.policy import token_logprobs
    from ablate.train.trainer import Trainer

    cfg = compose_config(FAST + ["method=grpo", "regularizers=none", f"train.minibatches={minibatches}",
                                 f"train.epochs={epochs}"])
    tr = Trainer(cfg)
    rollouts, _ = tr.collect(1)
    batch = tr.assemble(rollouts)
    with torch.no_grad():
        expect, _ = token_logprobs(tr.model, batch.input_ids, batch.attention_mask,
                                   batch.prompt_len, tr.temperature)
    tr.objective.compute_advantages(batch)
    m = tr.update(batch, 1)
    torch.testing.assert_close(batch.old_logp, expect * batch.response_mask, rtol=1e-5, atol=1e-5)
    if minibatches == 1 and epochs == 1:
        assert m["train/ratio_mean"] == pytest.approx(1.0, abs=1e-6)
        assert "logp" not in tr.timers.acc  # no extra scoring pass at all
    else:
        assert "logp" in tr.timers.acc


def test_zero_advantage_notice_is_one_line_per_stretch_and_a_count_at_the_end():
    from types import SimpleNamespace

    from ablate.train.api import ZERO_ADV, _ZeroAdvantageNotice

    said: list[str] = []
    notice = _ZeroAdvantageNotice(say=said.append)
    for step, frac in enumerate([1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 0.0], start=1):
        notice(SimpleNamespace(state=SimpleNamespace(last_metrics={ZERO_ADV: frac})), step)
    notice.close(7)
    assert len(said) == 3, said
    assert said[0].startswith("step 1: every group has zero advantage")
    assert said[1].startswith("step 5:") and "3 such step(s) so far" in said[1]
    assert said[2].startswith("5 of 7 steps had zero advantage")


def test_cli_train_help_lists_the_config_groups_and_where_to_look():
    from ablate.config import GROUPS

    p = subprocess.run([sys.executable, "-m", "ablate.cli", "train", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for g in GROUPS:
        assert f"\n  {g} " in p.stdout, g
    assert "clip_higher" in p.stdout  # a group's choices, read from conf/
    assert "ablate slots" in p.stdout and "ablate methods" in p.stdout and "--print-config" in p.stdout


def test_cli_print_config_prints_the_resolved_config_and_creates_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ABLATE_RUNS", "WANDB_DIR")}
    env["ABLATE_CACHE"] = str(tmp_path / "cache")
    p = subprocess.run([sys.executable, "-m", "ablate.cli", "train", "method=dapo", "train.lr=3e-4",
                        "--print-config"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    cfg = yaml.safe_load(p.stdout)
    assert cfg["choices"]["method"] == "dapo" and cfg["train"]["lr"] == 3e-4
    assert cfg["mask"]["_target_"].startswith("ablate.")  # resolved: the group's file content
    assert list(tmp_path.iterdir()) == []  # no run dir, no warm-start cache, no W&B dir
    bad = subprocess.run([sys.executable, "-m", "ablate.cli", "train", "train.stpes=3",
                          "--print-config"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "stpes" in bad.stderr and list(tmp_path.iterdir()) == []
