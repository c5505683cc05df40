"""Resume after a real kill: finished trials are kept and never rerun, unfinished ones run once more.

The first attempt runs in a subprocess (its own local Ray) that the test interrupts; the resume
runs in-process on the shared Ray. The fake trainable writes a marker file per start and finish,
keyed by the trial's overrides, so reruns are counted exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path


from ablate.sweep.cli import sweep_main
from ablate.sweep.runner import run_sweep
from tests.conftest import child_env
from tests.sweep.conftest import REPO, kill_group, read_trials, sweep_cmd, wait_for, write_space
from tests.sweep.fakes import trial_key

N = 4  # 2 masks x 2 seeds


def _markers(d: Path, what: str) -> Counter:
    return Counter(p.name.split(".")[0] for p in d.glob(f"*.{what}.*")) if d.is_dir() else Counter()


def _start_then_kill(spawn, tmp_path: Path, conf_dir: Path, name: str, sig: int, marker_dir: Path,
                     min_finished: int) -> tuple[Path, Counter]:
    f = write_space(tmp_path / f"{name}.yaml", name=name, seeds=[0, 1],
                    slots={"mask": ["ppo_clip", "none"]},
                    base_overrides=["fake.steps=3", "fake.sleep=0.4",
                                    f"fake.marker_dir={marker_dir}"])
    # a stale cluster address must not stop the sweep from starting its own local Ray
    env = child_env(ABLATE_CONF_DIR=str(conf_dir), PYTHONPATH=str(REPO), WANDB_MODE="disabled",
                    RAY_ADDRESS="127.0.0.1:9")
    log = open(tmp_path / f"{name}.log", "w")
    proc = spawn(sweep_cmd(str(f), "--num-cpus", "2", "--no-report"), cwd=tmp_path,
                 env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        ok = wait_for(lambda: sum(_markers(marker_dir, "finish").values()) >= min_finished
                      or proc.poll() is not None, timeout=120)
        assert ok and proc.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        kill_group(proc, first=sig, wait_s=30 if sig == signal.SIGINT else 0.1)
        log.close()
    return f, _markers(marker_dir, "finish")


def _check_resumed(sweep_dir: Path, marker_dir: Path, finished_before: Counter) -> None:
    starts, finishes = _markers(marker_dir, "start"), _markers(marker_dir, "finish")
    assert len(finishes) == N, (starts, finishes)
    assert all(n == 1 for n in finishes.values()), finishes  # every trial finished exactly once
    for key in finished_before:
        assert starts[key] == 1, f"trial {key} finished before the kill but ran again"
    rows = read_trials(sweep_dir)
    assert len(rows) == N and {r["status"] for r in rows} == {"finished"}
    assert len({r["key"] for r in rows}) == N


def test_resume_after_sigint_restores_tune_state(tmp_path, conf_env, ray_local, monkeypatch,
                                                 spawn):
    marker_dir = tmp_path / "markers"
    f, before = _start_then_kill(spawn, tmp_path, conf_env, "rs", signal.SIGINT, marker_dir, 1)
    sweep_dir = tmp_path / "runs" / "rs"
    assert 1 <= sum(before.values()) < N
    rows = read_trials(sweep_dir)  # the killed sweep left a usable table
    assert len(rows) == N and {r["status"] for r in rows} >= {"finished"}
    assert {r["status"] for r in rows} - {"finished"} <= {"running", "pending"}
    monkeypatch.chdir(tmp_path)
    assert sweep_main([str(f), "--resume", "--no-report"]) == 0
    _check_resumed(sweep_dir, marker_dir, before)


def test_resume_after_sigkill_without_tune_state(tmp_path, conf_env, ray_local, monkeypatch,
                                                 spawn):
    marker_dir = tmp_path / "markers"
    f, before = _start_then_kill(spawn, tmp_path, conf_env, "rk", signal.SIGKILL, marker_dir, 2)
    sweep_dir = tmp_path / "runs" / "rk"
    shutil.rmtree(sweep_dir / "tune")  # Tune's state unusable: resume from trials.jsonl alone
    # what is known to have ended: the run store (each run's record in its summary.json)
    ended = set()
    for p in (sweep_dir / "trials").glob("*/summary.json"):
        rec = json.loads(p.read_text()).get("sweep") or {}
        if rec.get("status") == "finished":
            ended.add(trial_key(rec["overrides"]))
    assert ended
    monkeypatch.chdir(tmp_path)
    logs: list[str] = []
    assert run_sweep(f, resume=True, report=False, log=logs.append) == 0
    assert any("resuming from trials.jsonl" in m for m in logs), logs
    rows = read_trials(sweep_dir)
    assert len(rows) == N and {r["status"] for r in rows} == {"finished"}
    assert len({r["key"] for r in rows}) == N
    assert "tune-2" in {r["experiment"] for r in rows}
    starts, finishes = _markers(marker_dir, "start"), _markers(marker_dir, "finish")
    assert len(finishes) == N
    for key in ended:
        assert starts[key] == 1, f"trial {key} had ended before the kill but ran again"
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    assert meta["status"] == "finished" and meta["tune_experiments"] == ["tune", "tune-2"]


def test_resume_from_ledger_when_tune_state_is_gone(tmp_path, conf_env, ray_local, monkeypatch):
    """In-process stand-in for a killed driver whose Tune state was lost: some trials finished,
    one was killed mid-run, two never started. Only those three may run on --resume."""
    monkeypatch.chdir(tmp_path)
    marker_dir = tmp_path / "markers"
    f = write_space(tmp_path / "lg.yaml", name="lg", seeds=[0, 1, 2],
                    slots={"mask": ["ppo_clip", "none"]},
                    base_overrides=["fake.steps=2", f"fake.marker_dir={marker_dir}"])
    assert run_sweep(f, report=False, log=lambda m: None) == 0
    sweep_dir = tmp_path / "runs" / "lg"
    rows = read_trials(sweep_dir)
    assert len(rows) == 6
    shutil.rmtree(sweep_dir / "tune")
    never, killed, kept = rows[:2], rows[2], rows[3:]
    for r in never:  # as if they had never started: no row, no trial dir
        shutil.rmtree(sweep_dir / r["run_dir"])
    out_path = sweep_dir / killed["run_dir"] / "summary.json"  # killed mid-run: no end recorded
    out = json.loads(out_path.read_text())
    out["status"] = "running"
    del out["sweep"]
    out_path.write_text(json.dumps(out))
    killed["status"] = "running"
    (sweep_dir / "trials.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [killed] + kept))
    logs: list[str] = []
    assert run_sweep(f, resume=True, report=False, log=logs.append) == 0
    assert any("3 of 6 trials already measured; 3 to run" in m for m in logs), logs
    starts = _markers(marker_dir, "start")
    for r in kept:
        assert starts[trial_key(r["overrides"])] == 1
    for r in never + [killed]:
        assert starts[trial_key(r["overrides"])] == 2
    rows = read_trials(sweep_dir)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"finished"}
    assert sorted(r["key"] for r in rows) == sorted(r["key"] for r in never + [killed] + kept)


def test_space_changes_names_the_fields_a_resume_would_change(tmp_path):
    """The one comparison behind `--resume` and `ablate claims`' reuse of a finished sweep: the
    search space as the sweep stored it against the one given now."""
    import yaml

    from ablate.sweep.runner import space_changes
    from ablate.sweep.space import load_search_space

    space = load_search_space(REPO / "search_spaces" / "quickstart.yaml")
    assert space_changes(tmp_path, space) is None  # nothing stored
    (tmp_path / "search_space.yaml").write_text("# header\n" + yaml.safe_dump(space.to_dict(), sort_keys=False))
    assert space_changes(tmp_path, space) == []
    space.description, space.metric = "other words", "eval/pass@8"
    assert space_changes(tmp_path, space) == ["metric"]  # the description is not a change
