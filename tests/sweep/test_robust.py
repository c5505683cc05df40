"""Honest sweep exits and Tune-driven retries: every trial failing exits non-zero, a trial's own
error is never rerun, a metric no trial logs stops trials after their first result, and a worker
that dies mid-run is retried by Tune from its last checkpoint, logging what an uninterrupted run
logs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ablate.sweep.runner import EXIT_ALL_FAILED, run_sweep
from tests.sweep.conftest import read_trials, write_space
from tests.sweep.test_checkpoint import TINY, metric_rows


def _markers(d: Path, what: str) -> Counter:
    return Counter(p.name.split(".")[0] for p in d.glob(f"*.{what}.*")) if d.is_dir() else Counter()


def test_every_trial_failing_exits_1_and_own_errors_are_not_retried(tmp_path, conf_env, ray_local,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    markers = tmp_path / "markers"
    f = write_space(tmp_path / "af.yaml", name="af", max_failures=2,
                    base_overrides=["fake.steps=3", "fake.fail_when=seed:0",
                                    f"fake.marker_dir={markers}"])
    logs: list[str] = []
    assert run_sweep(f, log=logs.append) == EXIT_ALL_FAILED
    rows = read_trials(tmp_path / "runs" / "af")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"failed"}
    assert {r["failure_kind"] for r in rows} == {"trial"}
    starts = _markers(markers, "start")
    assert sorted(starts.values()) == [1, 1], starts  # max_failures=2, yet each ran once
    assert any("2 of 2 failed" in m for m in logs), logs
    assert any("every trial failed" in m for m in logs), logs
    # one line per trial start and end
    assert sum(" started " in m for m in logs) == 2 and sum(" FAILED " in m for m in logs) == 2
    meta = json.loads((tmp_path / "runs" / "af" / "sweep.json").read_text())
    assert meta["status"] == "failed" and meta["num_failed"] == 2 and meta["num_trials"] == 2
    assert not (Path("reports") / "af").exists()  # no report of nothing


def test_a_metric_no_trial_logs_fails_trials_after_their_first_result(tmp_path, conf_env,
                                                                      ray_local, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = write_space(tmp_path / "nm.yaml", name="nm", metric="eval/pass@3",
                    base_overrides=["fake.steps=20"])
    logs: list[str] = []
    assert run_sweep(f, report=False, log=logs.append) == EXIT_ALL_FAILED
    sweep_dir = tmp_path / "runs" / "nm"
    for r in read_trials(sweep_dir):
        assert r["status"] == "failed" and r["failure_kind"] == "trial"
        assert "metric 'eval/pass@3' is not logged" in r["error"]
        assert "eval/pass@1" in r["error"]  # names what it does log
        lines = (sweep_dir / r["run_dir"] / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 1  # stopped after the first result, not after 20 steps
    assert any("FAILED" in m and "eval/pass@3" in m for m in logs), logs


def test_resume_retries_a_trial_that_failed_for_infrastructure_reasons(tmp_path, conf_env,
                                                                      ray_local, monkeypatch):
    monkeypatch.chdir(tmp_path)
    markers, died = tmp_path / "markers", tmp_path / "died"
    f = write_space(tmp_path / "inf.yaml", name="inf", slots={"mask": ["ppo_clip"]},
                    max_failures=0,  # no retry within the run: the failure stands until --resume
                    base_overrides=["fake.steps=3", f"fake.die_marker={died}",
                                    f"fake.marker_dir={markers}"])
    assert run_sweep(f, report=False, log=lambda m: None) == EXIT_ALL_FAILED
    (row,) = read_trials(tmp_path / "runs" / "inf")
    assert row["status"] == "failed" and row["failure_kind"] == "infrastructure", row
    assert run_sweep(f, resume=True, report=False, log=lambda m: None) == 0
    (row,) = read_trials(tmp_path / "runs" / "inf")
    assert row["status"] == "finished"
    assert sum(_markers(markers, "finish").values()) == 1


@pytest.mark.slow  # ~60-90 s on 2 busy cores: two real trainer starts in Ray workers + a reference
def test_a_killed_worker_is_retried_from_its_checkpoint_with_identical_metrics(tmp_path,
                                                                               ray_local,
                                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = str(tmp_path / "cache")
    monkeypatch.setenv("ABLATE_CACHE", cache)
    base = TINY + ["train.checkpoint_every=2", "method=grpo"]
    marker = tmp_path / "died.json"
    f = write_space(tmp_path / "kw.yaml", name="kw", trainable="tests.sweep.fakes.dying_run_training",
                    slots={}, seeds=[5], max_failures=1,
                    base_overrides=base + ["fake.die_at=3", f"fake.die_marker={marker}"])
    logs: list[str] = []
    assert run_sweep(f, report=False, log=logs.append) == 0
    assert json.loads(marker.read_text())["step"] == 3  # the worker did die mid-run
    (row,) = read_trials(tmp_path / "runs" / "kw")
    assert row["status"] == "finished" and row["resumed_from_step"] == 2, row
    assert any("retrying" in m for m in logs), logs
    run_dir = tmp_path / "runs" / "kw" / row["run_dir"]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
    from ablate.train.api import run_training

    run_training(base + ["seed=5"], tmp_path / "reference")
    assert metric_rows(run_dir) == metric_rows(tmp_path / "reference")


@pytest.mark.slow  # ~90 s: a sweep in a subprocess killed with -9 mid-trial, then --resume
def test_a_killed_driver_resumes_its_trial_from_the_last_checkpoint(tmp_path, ray_local,
                                                                     monkeypatch, spawn):
    import os
    import signal
    import subprocess

    from tests.conftest import child_env
    from tests.sweep.conftest import REPO, sweep_cmd, wait_for

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))
    base = TINY + ["train.steps=8", "train.checkpoint_every=2", "method=grpo"]
    f = write_space(tmp_path / "kd.yaml", name="kd", trainable="tests.sweep.fakes.dying_run_training",
                    slots={}, seeds=[1], base_overrides=base + ["fake.step_sleep=3"])
    env = {**child_env(), "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    env.pop("ABLATE_CONF_DIR", None)
    log = open(tmp_path / "driver.log", "w")
    proc = spawn(sweep_cmd(str(f), "--num-cpus", "1", "--no-report"), cwd=tmp_path, env=env,
                 stdout=log, stderr=subprocess.STDOUT)
    sweep_dir = tmp_path / "runs" / "kd"
    try:
        def past_second_checkpoint() -> bool:  # step 5 logged: the step-4 checkpoint is complete
            return any(sweep_dir.glob("tune/*/checkpoint_000001/state.pt")) and any(
                len(p.read_text().splitlines()) >= 6 for p in sweep_dir.glob("trials/*/metrics.jsonl"))

        assert wait_for(lambda: past_second_checkpoint() or proc.poll() is not None, 240)
        assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        log.close()
    logs: list[str] = []
    assert run_sweep(f, resume=True, report=False, log=logs.append) == 0
    (row,) = read_trials(sweep_dir)
    assert row["status"] == "finished" and row["resumed_from_step"] >= 4, (row, logs)
    from ablate.train.api import run_training

    run_training(base + ["seed=1"], tmp_path / "reference")
    assert metric_rows(sweep_dir / row["run_dir"]) == metric_rows(tmp_path / "reference")
