"""End-to-end sweeps with real Ray Tune (+ Optuna) and the fake trainable, on one shared local Ray."""

from __future__ import annotations

import json

import pytest

from ablate.sweep.runner import run_sweep
from tests.sweep.conftest import read_trials, write_space


def _quiet(_msg: str) -> None:
    pass


def test_grid_sweep_two_concurrent_trials(tmp_path, conf_env, ray_local, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = write_space(tmp_path / "grid.yaml", name="grid", seeds=[0, 1],
                    base_overrides=["fake.steps=4", "fake.sleep=0.4"])
    assert run_sweep(f, report=False, log=_quiet) == 0
    sweep_dir = tmp_path / "runs" / "grid"
    rows = read_trials(sweep_dir)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    assert sorted((r["slots"]["mask"], r["seed"]) for r in rows) == [
        ("none", 0), ("none", 1), ("ppo_clip", 0), ("ppo_clip", 1)]
    for r in rows:
        assert r["combo"] == f"mask={r['slots']['mask']}" and r["params"] == {}
        assert r["steps_done"] == 4 and r["wall_s"] > 1.0 and r["error"] is None
        assert r["value"] == pytest.approx(r["final"]["eval/pass@1"])
        assert r["wandb_run_id"].startswith("fake-")
        assert r["run_dir"] == f"trials/{r['trial_id']}"
        run_dir = sweep_dir / r["run_dir"]
        assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "summary.json").is_file()
        assert r["overrides"][-2:] == [f"seed={r['seed']}", f"name=grid-{r['trial_id']}"]
    # W&B grouping passed to the trainable
    cfg = (sweep_dir / rows[0]["run_dir"] / "config.yaml").read_text()
    assert '"group": "grid"' in cfg and '"job_type": "mask=' in cfg
    # two trials ran at the same time (2 cores, max_concurrent 2)
    spans = []
    for r in rows:
        s = json.loads((sweep_dir / r["run_dir"] / "summary.json").read_text())
        spans.append((s["t_start"], s["t_end"]))
    overlaps = sum(1 for i, a in enumerate(spans) for b in spans[i + 1:]
                   if a[0] < b[1] and b[0] < a[1])
    assert overlaps >= 2
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    for k in ("name", "search_space_file", "metric", "mode", "algorithm", "scheduler", "max_t",
              "started", "finished", "ablate_version", "git_commit"):
        assert k in meta
    assert meta["status"] == "finished" and meta["finished"] and meta["algorithm"] == "grid"
    assert (sweep_dir / "search_space.yaml").is_file() and (sweep_dir / "tune").is_dir()


def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path, conf_env, ray_local, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import ablate.report as report_pkg

    def broken_report(*a, **k):
        raise RuntimeError("report generator broke")

    monkeypatch.setattr(report_pkg, "generate_report", broken_report, raising=False)
    logs: list[str] = []
    f = write_space(tmp_path / "fail.yaml", name="fail",
                    slots={"mask": ["ppo_clip", "none", "clip_higher"]},
                    base_overrides=["fake.steps=3", "fake.fail_when=mask:none",
                                    "fake.nan_when=mask:clip_higher"])
    assert run_sweep(f, log=logs.append) == 0  # failed trials and a broken report: still 0
    rows = {r["slots"]["mask"]: r for r in read_trials(tmp_path / "runs" / "fail")}
    assert rows["ppo_clip"]["status"] == "finished"
    assert rows["none"]["status"] == "failed"
    assert rows["none"]["error"] == "RuntimeError: injected failure"
    assert rows["clip_higher"]["status"] == "failed"
    assert "eval/pass@1" in rows["clip_higher"]["error"] and "nan" in rows["clip_higher"]["error"]
    assert any("report: failed (RuntimeError: report generator broke)" in m for m in logs)


def test_optuna_tpe_with_conditional_param_writes_journal(tmp_path, conf_env, ray_local,
                                                          monkeypatch):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    monkeypatch.chdir(tmp_path)
    f = write_space(tmp_path / "tpe.yaml", name="tpe", seeds=[0, 1],
                    search={"algorithm": "optuna_tpe", "num_samples": 4, "seed": 1},
                    slots={"mask": ["ppo_clip", "clip_higher"]},
                    params={"train.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3},
                            "mask.eps_high": {"type": "uniform", "low": 0.2, "high": 0.4,
                                              "when": {"mask": ["clip_higher"]}}},
                    base_overrides=["fake.steps=4"],
                    scheduler={"type": "asha", "max_t": 4, "grace_period": 1,
                               "reduction_factor": 2})
    assert run_sweep(f, report=False, log=_quiet) == 0
    sweep_dir = tmp_path / "runs" / "tpe"
    study = optuna.load_study(study_name="tpe", storage=JournalStorage(
        JournalFileBackend(str(sweep_dir / "optuna.journal"))))
    assert len(study.trials) == 4
    for t in study.trials:
        assert ("mask.eps_high" in t.params) == (t.params["mask"] == "clip_higher")
    rows = read_trials(sweep_dir)
    assert len(rows) == 8  # 4 proposals x 2 seeds, one row (and run dir) per seed
    by_trial: dict[str, list] = {}
    for r in rows:
        by_trial.setdefault(r["tune_trial_id"], []).append(r)
        assert r["status"] in ("finished", "early_stopped")
        assert r["trial_id"] == f"{r['tune_trial_id']}-s{r['seed']}"
    complete = {t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    for tid, rs in by_trial.items():
        assert sorted(r["seed"] for r in rs) == [0, 1]
        if all(r["status"] == "finished" for r in rs):
            # Optuna saw the mean over seeds
            mean = sum(r["value"] for r in rs) / 2
            assert any(abs(mean - v) < 1e-9 for v in complete)
            assert {r["run_dir"] for r in rs} == {f"trials/{tid}/seed_0", f"trials/{tid}/seed_1"}
    # each study trial links to its Tune trial, run dirs and W&B ids (ablate.sweep.study)
    links = {t.user_attrs.get("tune_trial_id"): t.user_attrs for t in study.trials}
    assert set(links) == set(by_trial)
    for tid, attrs in links.items():
        assert attrs["run_dir"] == f"trials/{tid}" and (sweep_dir / attrs["run_dir"]).is_dir()
        ran = sorted(attrs["seed_run_dirs"])
        assert ran and ran == sorted(r["run_dir"] for r in by_trial[tid] if r["run_dir"])
        assert all(w.startswith("fake-") for w in attrs["wandb_run_ids"])
        if all(r["status"] == "finished" for r in by_trial[tid]):
            assert len(attrs["wandb_run_ids"]) == len(ran) and attrs["status"] == "finished"
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    assert meta["scheduler"] == "asha" and meta["max_t"] == 4 and meta["optuna_journal"]


def test_console_shows_running_trials_step_metric_and_warm_start(tmp_path, conf_env, ray_local,
                                                                 monkeypatch):
    """While trials run, status lines name each running trial's warm start (step/target, cache)
    and then its step and latest metric (Tune's intermediate results): the console is never
    silent for long. Refresh intervals are shortened here; they are seconds in a real sweep."""
    from ablate.sweep import console

    monkeypatch.setattr(console, "BAR_REFRESH_S", 0.2)
    monkeypatch.setattr(console, "LINE_REFRESH_S", 0.2)
    monkeypatch.chdir(tmp_path)
    f = write_space(tmp_path / "live.yaml", name="live", seeds=[0],
                    base_overrides=["fake.steps=6", "fake.sleep=0.3", "fake.warm_steps=6"])
    logs: list[str] = []
    assert run_sweep(f, report=False, log=logs.append) == 0
    status = [m for m in logs if " running: " in m]
    assert any("warm start (cache miss) " in m for m in status), "\n".join(logs)
    steps = [m for m in status if " step " in m]
    assert any(" step 4 pass@1=" in m for m in steps), "\n".join(logs)
    # several distinct updates, not one line at the end
    assert len(set(status)) >= 4, status


def test_trial_status_prefers_the_newer_of_result_and_phase():
    from ablate.sweep.console import trial_status

    res = {"step": 3, "eval/pass@1": 0.25, "timestamp": 100}
    warm = {"phase": "warm_start", "cache": "hit", "time": 50.0}
    assert trial_status("t1", res, "eval/pass@1", 10, warm) == "t1 step 3/10 pass@1=0.25"
    warm2 = {"phase": "warm_start", "cache": "miss", "step": 4, "target": 9, "time": 150.0}
    assert trial_status("t1", res, "eval/pass@1", 10, warm2) == "t1 warm start (cache miss) 4/9"
    assert trial_status("t2", None, "eval/pass@1", None, None) == "t2 starting"
