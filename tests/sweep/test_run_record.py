"""The run store is the one record of how a sweep's run ended (the ``sweep`` entry of its
summary.json): the trials table is read from it, and a restored trial replays or keeps from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ablate.sweep import trial as trial_mod
from ablate.sweep.trial import Trial, TrialFailed, _replay_or_reuse
from ablate.tracking.trials import read_trials, trial_runs

METRIC = "eval/pass@1"
ASSIGN = {"mask": "none"}


def _record(sweep_dir: Path, tid: str, seed: int, status: str, value: float | None = None,
            seeds=(0, 1), error: str | None = None) -> None:
    rd = sweep_dir / "trials" / tid / f"seed_{seed}"
    rd.mkdir(parents=True)
    rec = {"seed": seed, "status": status, "trial_id": tid, "assign": ASSIGN, "seeds": list(seeds),
           "run_dir": f"trials/{tid}/seed_{seed}", "overrides": [f"seed={seed}"],
           "final": {METRIC: value} if value is not None else {}, "steps_done": 2, "error": error}
    (rd / "summary.json").write_text(json.dumps({"status": status, "sweep": rec}))


def _trial(sweep_dir: Path, tid: str) -> Trial:
    ctx = {"metric": METRIC, "optuna": True}
    return Trial(ctx, dict(ASSIGN), [0, 1], True, tid, sweep_dir)


def test_rows_come_from_run_records(tmp_path):
    (tmp_path / "sweep.json").write_text(json.dumps({"metric": METRIC}))
    _record(tmp_path, "a", 0, "finished", 0.5)
    _record(tmp_path, "a", 1, "failed", error="RuntimeError: boom")
    _record(tmp_path, "b", 0, "finished", 0.25)
    rd = tmp_path / "trials" / "b" / "seed_1"  # cut off mid-run: no record, its summary says so
    rd.mkdir()
    (rd / "summary.json").write_text(json.dumps({"status": "interrupted", "error": "killed"}))
    (tmp_path / "trials" / "c").mkdir()  # a trial dir without any run
    rows = {r["trial_id"]: r for r in read_trials(tmp_path)}
    assert set(rows) == {"a-s0", "a-s1", "b-s0", "b-s1"}
    assert rows["a-s0"]["status"] == "finished" and rows["a-s0"]["value"] == 0.5
    assert rows["a-s0"]["slots"] == {} and rows["a-s0"]["params"] == {}
    assert rows["a-s1"]["status"] == "failed" and rows["a-s1"]["error"] == "RuntimeError: boom"
    assert rows["a-s1"]["failure_kind"] == "trial"
    assert rows["b-s1"]["status"] == "interrupted" and rows["b-s1"]["error"] == "killed"
    assert rows["b-s1"]["seed"] == 1 and rows["b-s1"]["tune_trial_id"] == "b"
    assert [r["seed"] for r in trial_runs(tmp_path, "b")] == [0]


def test_an_ended_trial_is_replayed_from_its_records(tmp_path, monkeypatch):
    reported: list[dict] = []
    monkeypatch.setattr("ray.tune.report", lambda r, **kw: reported.append(r))
    _record(tmp_path, "a", 0, "finished", 0.5)
    _record(tmp_path, "a", 1, "finished", 0.25)
    assert _replay_or_reuse(_trial(tmp_path, "a")) is None
    assert reported[-1][METRIC] == pytest.approx(0.375)
    assert reported[-1][trial_mod.COMPLETE_KEY] == 1


def test_a_failed_trial_replays_its_failure_and_a_partial_one_keeps_finished_seeds(tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setattr("ray.tune.report", lambda r, **kw: None)
    _record(tmp_path, "f", 0, "finished", 0.5)
    _record(tmp_path, "f", 1, "failed", error="ValueError: bad")
    with pytest.raises(TrialFailed, match="seed 1: ValueError: bad"):
        _replay_or_reuse(_trial(tmp_path, "f"))
    _record(tmp_path, "p", 0, "finished", 0.5)
    _record(tmp_path, "p", 1, "stopped")
    keep = _replay_or_reuse(_trial(tmp_path, "p"))
    assert keep is not None and set(keep) == {0}


def _tune_trial(tid: str, status: str, last: dict | None = None):
    from types import SimpleNamespace

    return SimpleNamespace(trial_id=tid, status=status, config=dict(ASSIGN), last_result=last or {},
                           get_error=lambda: "Traceback ...\nRayActorError: the actor died")


def test_the_driver_records_early_stops_and_dead_workers(tmp_path, monkeypatch):
    """What only the driver sees goes into the run records: an ASHA stop (a stopped run and a
    seed never reached), a worker that died (rerun on --resume, never replayed as a failure)."""
    from ablate.sweep.records import settle

    (tmp_path / "sweep.json").write_text(json.dumps({"metric": METRIC}))
    _record(tmp_path, "e", 0, "stopped", 0.1)  # ASHA stopped seed 0; seed 1 never ran
    _record(tmp_path, "d", 0, "finished", 0.5)  # the worker died in seed 1
    (tmp_path / "trials" / "d" / "seed_1").mkdir()
    (tmp_path / "trials" / "d" / "seed_1" / "summary.json").write_text('{"status": "running"}')
    _record(tmp_path, "f", 0, "finished", 0.5)  # ran to its end: nothing to add
    _record(tmp_path, "f", 1, "finished", 0.7)
    ctx = {"seeds": [0, 1], "conditions": {}, "base_overrides": []}
    trials = [_tune_trial("e", "TERMINATED"), _tune_trial("d", "ERROR"),
              _tune_trial("f", "TERMINATED", {trial_mod.COMPLETE_KEY: 1}),
              _tune_trial("p", "PENDING")]
    assert settle(tmp_path, trials, ctx, "tune") == 3
    rows = {r["trial_id"]: r for r in read_trials(tmp_path)}
    assert rows["e-s0"]["status"] == "early_stopped" and rows["e-s0"]["value"] == 0.1
    assert rows["e-s1"]["status"] == "early_stopped" and rows["e-s1"]["run_dir"] is None
    assert rows["d-s1"]["status"] == "failed" and rows["d-s1"]["failure_kind"] == "infrastructure"
    assert rows["d-s1"]["error"] == "RayActorError: the actor died"
    assert rows["d-s1"]["run_dir"] == "trials/d/seed_1" and rows["d-s0"]["status"] == "finished"
    assert {rows["f-s0"]["status"], rows["f-s1"]["status"]} == {"finished"}
    assert not any(r["tune_trial_id"] == "p" for r in rows.values())
    monkeypatch.setattr("ray.tune.report", lambda r, **kw: None)
    keep = _replay_or_reuse(_trial(tmp_path, "d"))  # restored: seed 1 runs again
    assert keep is not None and set(keep) == {0}
