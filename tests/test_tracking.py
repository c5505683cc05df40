"""Tracking: run store round trip and crash safety, W&B offline runs read back, W&B failures that
never stop a run, mode resolution and tracker config."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from ablate.errors import ConfigError
from ablate.spec.groups import SLOT_FAMILIES
from ablate.tracking import (
    RunStore,
    WandbLogger,
    build_tracker,
    load_run,
    resolve_mode,
)
from ablate.tracking.tracker import tracker_config
from tests.wandb_reader import find_wandb_file, iter_record_payloads, read_offline_history, read_offline_run

REPO = Path(__file__).resolve().parents[1]
CHOICES = {"mask": "ppo_clip", "denominator": "behaviour", "advantage": "group_zscore",
           "likelihood": "identity", "aggregation": "seq_mean_token_mean", "method": "grpo",
           "task": "addition", "model": "tiny"}
CONFIG = {"seed": 3, "choices": CHOICES, "train": {"lr": 1e-4, "steps": 2},
          "mask": {"eps_low": 0.2, "eps_high": 0.2}}
WANDB_ON = {"wandb": {"enabled": True, "project": "ablate-test", "entity": None, "mode": "offline",
                      "group": None, "tags": ["extra"]}}
STEPS = 150


@pytest.fixture(autouse=True)
def _no_mode_override(monkeypatch):
    monkeypatch.delenv("ABLATE_WANDB_MODE", raising=False)


# ----------------------------------------------------------------------------------------- run store


def test_run_store_round_trip_with_nan_and_raw_strings(tmp_path):
    rd = tmp_path / "run"
    store = RunStore(rd)
    store.write_config(OmegaConf.create({"a": {"b": 1, "c": [1, 2]}, "s": "${a.b}"}))
    store.log({"train/loss": 1.5, "train/nan": float("nan"), "train/inf": float("inf"),
               "train/np": np.float32(0.25), "train/t": torch.tensor(2.0)}, step=1)
    store.log({"train/loss": 0.5, "eval/pass@1": 0.25}, step=2)
    nasty = 'line1\n<script>alert("x")</script> \u00e9\u4e2d \\ "q"'
    store.log_samples([{"prompt": "1+1=", "response": nasty, "reward": 1.0}], step=2)
    summary = store.finish("finished", {"method": "grpo", "seed": 3})

    run = load_run(rd)
    assert run["config"] == {"a": {"b": 1, "c": [1, 2]}, "s": 1}  # resolved
    m = run["metrics"]
    assert [r["step"] for r in m] == [1, 2]
    assert all(isinstance(r["time"], float) and r["time"] > 1e9 for r in m)
    assert m[0]["train/nan"] is None and m[0]["train/inf"] is None
    assert m[0]["train/np"] == 0.25 and m[0]["train/t"] == 2.0
    assert run["samples"] == [{"step": 2, "prompt": "1+1=", "response": nasty, "reward": 1.0}]
    s = run["summary"]
    assert s == summary
    assert s["status"] == "finished" and s["error"] is None
    assert s["final"] == {"train/loss": 0.5, "train/nan": None, "train/inf": None, "train/np": 0.25,
                          "train/t": 2.0, "eval/pass@1": 0.25}
    assert s["method"] == "grpo" and s["seed"] == 3 and s["wall_s"] >= 0 and s["last_step"] == 2
    # strict JSON everywhere (no bare NaN tokens)
    for line in (rd / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    with pytest.raises(ValueError, match="reserved"):
        RunStore(tmp_path / "r2").log({"step": 1}, step=1)
    with pytest.raises(ValueError, match="status"):
        RunStore(tmp_path / "r3").finish("done")


def test_run_store_keeps_lines_logged_before_an_exception(tmp_path):
    rd = tmp_path / "run"
    store = RunStore(rd)
    try:
        for step in range(3):
            store.log({"train/x": float(step)}, step=step)
        raise RuntimeError("boom at step 3")
    except RuntimeError as e:
        store.finish("failed", error=e)
    run = load_run(rd)
    assert [r["train/x"] for r in run["metrics"]] == [0.0, 1.0, 2.0]
    s = run["summary"]
    assert s["status"] == "failed" and s["error"] == "RuntimeError: boom at step 3"
    assert "boom at step 3" in s["traceback"] and "Traceback" in s["traceback"]
    assert s["final"] == {"train/x": 2.0}


def test_killed_process_keeps_every_flushed_line(tmp_path):
    """A hard kill (os._exit: no close, no atexit) loses nothing already logged; a torn last line
    is skipped and counted; the summary still says running."""
    rd = tmp_path / "run"
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from ablate.tracking.run_store import RunStore
        s = RunStore({str(rd)!r})
        s.write_summary(status="running")
        for i in range(5):
            s.log({{"train/x": i}}, step=i)
        s.log_samples([{{"prompt": "p", "response": "r", "reward": 0.0}}], step=4)
        os._exit(1)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    with open(rd / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "time": 1.0, "train/x"')  # torn write
    run = load_run(rd)
    assert [r["train/x"] for r in run["metrics"]] == [0, 1, 2, 3, 4]
    assert run["bad_lines"]["metrics"] == 1
    assert len(run["samples"]) == 1
    assert run["summary"]["status"] == "running"


# ----------------------------------------------------------------------------------------- W&B offline


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """One real offline W&B run through build_tracker (wandb init costs ~0.7 s: share it)."""
    rd = tmp_path_factory.mktemp("wb") / "run"
    tracker = build_tracker(WANDB_ON, run_dir=rd, config=CONFIG, name="grpo-addition-s3",
                            group="sweep-123", job_type="trial", tags=["mask:ppo_clip", "seed:3"])
    running = json.loads((rd / "summary.json").read_text())
    for step in range(1, STEPS + 1):  # enough rows for a multi-block (> 32 KiB) .wandb file
        tracker.log({"train/loss": 1.0 / step, "train/nan": float("nan"), "perf/step_s": 0.1,
                     **{f"train/k{j}": step * j for j in range(20)}}, step)
    tracker.log({"eval/pass@1": 0.5, "eval/mean@8": 0.5}, step=STEPS)
    tracker.log_samples([{"prompt": "2+2=", "response": "4", "reward": 1.0},
                         {"prompt": "3+3=", "response": "<b>7</b>", "reward": 0}], step=STEPS)
    summary = tracker.finish("finished", {"steps_done": STEPS})
    return {"run_dir": rd, "tracker": tracker, "summary": summary, "running": running}


def test_offline_tracker_writes_store_and_syncable_wandb_dir(offline_run):
    rd = offline_run["run_dir"]
    assert offline_run["running"]["status"] == "running"
    assert offline_run["running"]["wandb"]["mode"] == "offline"
    tr = offline_run["tracker"]
    wdir = Path(tr.wandb_dir)
    assert wdir.parent == (rd / "wandb").resolve() and wdir.name.startswith("offline-run-")
    assert wdir.name.endswith(tr.wandb_run_id)
    assert (wdir / f"run-{tr.wandb_run_id}.wandb").is_file()
    s = offline_run["summary"]
    assert s["status"] == "finished" and s["steps_done"] == STEPS
    assert s["wandb"] == {"run_id": tr.wandb_run_id, "dir": str(wdir), "mode": "offline", "error": None}
    assert s["slots"] == CHOICES and s["method"] == "grpo" and s["seed"] == 3
    assert s["group"] == "sweep-123" and s["job_type"] == "trial"
    assert s["final"]["eval/pass@1"] == 0.5 and s["final"]["train/nan"] is None
    run = load_run(rd)
    assert len(run["metrics"]) == STEPS + 1 and len(run["samples"]) == 2
    assert yaml.safe_load((rd / "config.yaml").read_text()) == CONFIG


def test_read_offline_history_gets_logged_rows_back(offline_run):
    rd = offline_run["run_dir"]
    rows = read_offline_history(rd, backend="python")  # accepts the ablate run dir
    train = [r for r in rows if "train/loss" in r]
    assert find_wandb_file(rd).stat().st_size > 2 * 32 * 1024  # records span 32 KiB blocks
    assert [r["train/step"] for r in train] == list(range(1, STEPS + 1))
    assert [r["train/loss"] for r in train] == pytest.approx([1.0 / s for s in range(1, STEPS + 1)])
    assert [r["train/k19"] for r in train] == [19 * s for s in range(1, STEPS + 1)]
    assert all(math.isnan(r["train/nan"]) for r in train)
    assert all(r["perf/step_s"] == pytest.approx(0.1) for r in train)
    ev = [r for r in rows if "eval/pass@1" in r]
    assert len(ev) == 1 and ev[0]["train/step"] == STEPS and ev[0]["eval/mean@8"] == 0.5
    tables = [r for r in rows if r.get("eval/samples._type") == "table-file"]
    assert len(tables) == 1 and tables[0]["train/step"] == STEPS
    table_json = Path(offline_run["tracker"].wandb_dir) / "files" / tables[0]["eval/samples.path"]
    table = json.loads(table_json.read_text())
    assert table["columns"] == ["step", "prompt", "response", "reward"]
    assert table["data"][1][2] == "<b>7</b>"


def test_read_offline_run_metadata_config_and_summary(offline_run):
    tr = offline_run["tracker"]
    info = read_offline_run(tr.wandb_dir, backend="python")
    assert info["id"] == tr.wandb_run_id and info["project"] == "ablate-test"
    assert info["group"] == "sweep-123" and info["job_type"] == "trial"
    assert info["name"] == "grpo-addition-s3"
    assert info["tags"] == ["extra", "mask:ppo_clip", "seed:3"]
    assert info["config"]["choices"]["mask"] == "ppo_clip"
    assert info["config"]["slots"] == {k: CHOICES[k] for k in SLOT_FAMILIES}
    assert info["config"]["train"]["lr"] == 1e-4
    assert info["summary"]["train/loss"] == pytest.approx(1 / STEPS)
    assert info["summary"]["status"] == "finished"
    assert info["exit_code"] == 0
    assert info["wandb_version"].startswith("0.31.0")


def test_python_reader_agrees_with_wandb_leet_inspect(offline_run):
    wdir = offline_run["tracker"].wandb_dir
    py = read_offline_run(wdir, backend="python")
    leet = read_offline_run(wdir, backend="leet")
    for k in ("id", "project", "group", "job_type", "tags", "name", "exit_code"):
        assert py[k] == leet[k], k
    assert py["config"] == leet["config"]
    assert len(py["history"]) == len(leet["history"])
    for a, b in zip(py["history"], leet["history"]):
        assert set(a) == set(b)
        for k in a:
            if isinstance(a[k], float) and math.isnan(a[k]):
                assert math.isnan(b[k])
            else:
                assert a[k] == pytest.approx(b[k]), k


def test_reader_stops_cleanly_at_a_torn_wandb_file(offline_run, tmp_path):
    src = find_wandb_file(offline_run["tracker"].wandb_dir)
    full = list(iter_record_payloads(src))
    data = src.read_bytes()
    torn = tmp_path / "run-torn.wandb"
    torn.write_bytes(data[: len(data) * 2 // 3])
    part = list(iter_record_payloads(torn))
    assert 0 < len(part) < len(full) and part == full[: len(part)]
    rows = read_offline_history(torn, backend="python")
    all_rows = read_offline_history(src, backend="python")
    assert 10 < len(rows) < len(all_rows)
    assert [r["train/step"] for r in rows] == [r["train/step"] for r in all_rows[: len(rows)]]
    bad = tmp_path / "x.wandb"
    bad.write_bytes(b"not a wandb file")
    with pytest.raises(ValueError, match="not a .wandb"):
        read_offline_history(bad, backend="python")


# ----------------------------------------------------------------------------------------- W&B failures


def test_wandb_init_failure_warns_once_and_run_store_keeps_writing(tmp_path, monkeypatch, caplog):
    import wandb

    def boom(*a, **k):
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(wandb, "init", boom)
    caplog.set_level(logging.WARNING, logger="ablate.tracking")
    rd = tmp_path / "run"
    tracker = build_tracker(WANDB_ON, run_dir=rd, config=CONFIG, name="n", group=None,
                            job_type=None, tags=[])
    for step in range(3):
        tracker.log({"train/loss": float(step)}, step)
    tracker.log_samples([{"prompt": "p", "response": "r", "reward": 1.0}], step=2)
    s = tracker.finish("finished", {})
    warnings = [r for r in caplog.records if "wandb init failed" in r.getMessage()]
    assert len(warnings) == 1 and "no wandb today" in warnings[0].getMessage()
    assert tracker.wandb_run_id is None and tracker.wandb_dir is None
    assert s["wandb"]["mode"] == "failed" and "no wandb today" in s["wandb"]["error"]
    run = load_run(rd)
    assert [m["train/loss"] for m in run["metrics"]] == [0.0, 1.0, 2.0]
    assert len(run["samples"]) == 1 and run["summary"]["status"] == "finished"
    assert s["tags"][0] == "extra" and "mask:ppo_clip" in s["tags"]  # config tags + derived slot tags


def test_wandb_log_failure_mid_run_disables_wandb_only(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="ablate.tracking")
    wl = WandbLogger(project="ablate-test", mode="offline", dir=tmp_path, name="midrun")
    assert wl.active and wl.run_id
    wl.log({"train/a": 1.0}, step=1)

    def bad_log(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(wl.run, "log", bad_log)
    wl.log({"train/a": 2.0}, step=2)
    wl.log({"train/a": 3.0}, step=3)  # silently skipped
    wl.log_samples([{"prompt": "p"}], step=3)
    wl.finish()
    msgs = [r.getMessage() for r in caplog.records if "wandb" in r.getMessage()]
    assert len(msgs) == 1 and "disk on fire" in msgs[0]
    assert wl.failed and wl.effective_mode == "offline"
    rows = read_offline_history(wl.run_dir, backend="python")
    assert [r["train/a"] for r in rows if "train/a" in r] == [1.0]


def test_wandb_disabled_mode_never_imports_or_inits(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setattr(wandb, "init", lambda *a, **k: pytest.fail("wandb.init called"))
    wl = WandbLogger(mode="disabled", dir=tmp_path)
    wl.log({"train/a": 1.0}, 1)
    wl.finish()
    assert wl.run_id is None and wl.effective_mode == "disabled"
    monkeypatch.setenv("ABLATE_WANDB_MODE", "disabled")
    tracker = build_tracker(WANDB_ON, run_dir=tmp_path / "r", config=CONFIG, name="n", group=None,
                            job_type=None, tags=[])
    assert tracker.wandb is None and tracker.wandb_mode == "disabled"
    tracker.finish("finished", {})
    assert not (tmp_path / "r" / "wandb").exists()


# ----------------------------------------------------------------------------------------- modes & config


def test_resolve_mode_env_override_auto_and_errors(tmp_path, monkeypatch):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_mode("auto") == "offline"  # no key anywhere
    assert resolve_mode("online") == "online"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("auto") == "offline"  # W&B's own switch is respected by auto
    monkeypatch.setenv("ABLATE_WANDB_MODE", "disabled")
    assert resolve_mode("online") == "disabled"
    monkeypatch.setenv("ABLATE_WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match="ABLATE_WANDB_MODE"):
        resolve_mode("auto")
    monkeypatch.delenv("ABLATE_WANDB_MODE")
    with pytest.raises(ConfigError, match="tracker.wandb.mode.*allowed"):
        resolve_mode("upload")


def test_tracker_config_files_and_validation(tmp_path):
    on = yaml.safe_load((REPO / "conf/tracker/wandb.yaml").read_text())
    off = yaml.safe_load((REPO / "conf/tracker/none.yaml").read_text())
    s_on, s_off = tracker_config(on).wandb, tracker_config(OmegaConf.create(off)).wandb
    assert s_on.enabled and s_on.project == "ablate" and s_on.mode == "auto"
    assert not s_off.enabled
    with pytest.raises(ConfigError, match="tracker.wandb: unknown key.*projekt"):
        tracker_config({"wandb": {"enabled": True, "projekt": "x"}})
    with pytest.raises(ConfigError, match="tracker.wandb.mode"):
        build_tracker({"wandb": {"enabled": True, "mode": "sometimes"}}, run_dir=tmp_path / "r",
                      config=CONFIG, name="n", group=None, job_type=None, tags=[])
    # run store only: no wandb directory, summary says disabled, slot tags derived from choices
    tracker = build_tracker(off, run_dir=tmp_path / "s", config=OmegaConf.create(CONFIG), name="n",
                            group=None, job_type=None, tags=[])
    assert tracker.wandb_mode == "disabled" and tracker.wandb_run_id is None
    tracker.log({"train/x": 1.0}, 1)
    with tracker:
        pass  # the context manager finishes a run that is still open
    s = load_run(tmp_path / "s")["summary"]
    assert s["status"] == "finished" and s["wandb"]["mode"] == "disabled"
    assert s["tags"] == ["mask:ppo_clip", "denominator:behaviour", "advantage:group_zscore",
                         "likelihood:identity", "aggregation:seq_mean_token_mean", "method:grpo",
                         "task:addition"]
    assert s["job_type"] == "train" and s["group"] is None
    assert not (tmp_path / "s" / "wandb").exists()
    assert tracker.finish("failed") == s  # idempotent


def test_sweep_trials_group_by_every_swept_factor_in_the_offline_files(tmp_path):
    """The quickstart's two conditions (mask=none with train.epochs 1 vs 4), two seeds each: the
    offline W&B files carry group = sweep, job_type = the full combination (same across seeds,
    different across epochs), a tag per factor and the seed, and a name that reads as both."""
    from ablate.tracking.wandb_logger import sweep_identity

    runs = {}
    for epochs in (1, 4):
        for seed in (0, 1):
            ident = sweep_identity("quick", {"mask": "none", "train.epochs": epochs}, seed, "t1")
            rd = tmp_path / f"e{epochs}s{seed}"
            tr = build_tracker(WANDB_ON, run_dir=rd, config={**CONFIG, "seed": seed},
                               name=f"quick-t1-s{seed}", group=ident["group"],
                               job_type=ident["job_type"], tags=ident["tags"],
                               wandb_name=ident["name"], wandb_config=ident["config"])
            tr.log({"train/loss": 1.0}, 1)
            tr.finish("finished")
            runs[epochs, seed] = read_offline_run(rd, backend="python")
    assert {r["group"] for r in runs.values()} == {"quick"}
    assert runs[1, 0]["job_type"] == runs[1, 1]["job_type"] == "mask=none,epochs=1"
    assert runs[4, 0]["job_type"] == runs[4, 1]["job_type"] == "mask=none,epochs=4"
    assert {"mask:none", "train.epochs:4", "seed:1"} <= set(runs[4, 1]["tags"])
    assert runs[4, 1]["name"] == "mask=none,epochs=4 s1"
    cfg = runs[4, 1]["config"]
    assert cfg["seed"] == 1 and cfg["sweep"]["name"] == "quick" and cfg["sweep"]["trial_id"] == "t1"
    assert cfg["factors"] == {"mask": "none", "train.epochs": 4}


def test_sweep_identity_stays_within_wandb_limits_and_unique():
    from ablate.tracking.wandb_logger import sweep_identity

    long = {f"pipeline.stage{i}.threshold": 0.123456 + i for i in range(8)}
    a = sweep_identity("s", long, 0)
    b = sweep_identity("s", {**long, "pipeline.stage7.threshold": 99.0}, 0)
    assert len(a["job_type"]) <= 64 and all(len(t) <= 64 for t in a["tags"])
    assert a["job_type"] != b["job_type"]  # cut labels keep a hash of the whole combination


def test_eval_prompts_round_trip_resume_and_torn_line(tmp_path):
    """Per-prompt eval counts: one line per eval step; a resume cuts back to the checkpoint (no
    duplicates, nothing lost) and a torn last line drops that eval step whole."""
    from ablate.tracking.run_store import read_eval_prompts

    s = RunStore(tmp_path)
    s.log_eval_prompts(["p0", "p1"], [4, 4], [1, 4], step=0)
    s.log({"eval/pass@1": 0.625}, step=0)
    pos = s.position()
    assert pos["eval_prompts_lines"] == 1 and pos["eval_prompts_bytes"] > 0
    s.log_eval_prompts(["p0", "p1"], [4, 4], [2, 3], step=2)  # after the checkpoint: dropped
    s.close()
    with open(tmp_path / "eval_prompts.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 3, "prompt_id": ["p0"')  # torn by a kill
    assert [r["step"] for r in read_eval_prompts(tmp_path)] == [0, 0, 2, 2]
    r = RunStore(tmp_path, resume=pos)
    assert r.lines["eval_prompts"] == 1
    r.log_eval_prompts(["p0", "p1"], [4, 4], [3, 3], step=2)
    r.close()
    assert read_eval_prompts(tmp_path) == [
        {"step": 0, "prompt_id": "p0", "n": 4, "c": 1}, {"step": 0, "prompt_id": "p1", "n": 4, "c": 4},
        {"step": 2, "prompt_id": "p0", "n": 4, "c": 3}, {"step": 2, "prompt_id": "p1", "n": 4, "c": 3}]
    old = {k: v for k, v in pos.items() if not k.startswith("eval_prompts")}  # pre-feature checkpoint
    RunStore(tmp_path, resume=old).close()
    assert len(read_eval_prompts(tmp_path)) == 4  # left as it is
    with pytest.raises(ValueError, match="0 <= c <= n"):
        RunStore(tmp_path).log_eval_prompts(["p"], [2], [3], step=1)
