"""optuna-dashboard (the ``dashboard`` extra) opens a sweep's journal file, user attributes (the
links to the runs) included."""

from __future__ import annotations

import io
import json
from wsgiref.util import setup_testing_defaults

import pytest

optuna_dashboard = pytest.importorskip("optuna_dashboard")


def _get(app, path: str) -> tuple[str, dict]:
    env: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(env)
    status: list[str] = []
    body = b"".join(app(env, lambda s, h, *a: status.append(s)))
    return status[0], json.loads(body or b"{}")


def test_dashboard_reads_the_sweep_journal_with_run_links(tmp_path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from ablate.sweep.study import JOURNAL

    journal = tmp_path / JOURNAL
    study = optuna.create_study(study_name="quick", direction="maximize",
                                storage=JournalStorage(JournalFileBackend(str(journal))))
    trial = study.ask()
    trial.suggest_categorical("mask", ["none", "ppo_clip"])
    trial.set_user_attr("tune_trial_id", "abc123")
    trial.set_user_attr("run_dir", "trials/abc123")
    study.tell(trial, 0.5)

    app = optuna_dashboard.wsgi(JournalStorage(JournalFileBackend(str(journal))))
    status, studies = _get(app, "/api/studies")
    (summary,) = studies["study_summaries"]
    assert status.startswith("200") and summary["study_name"] == "quick"
    status, detail = _get(app, f"/api/studies/{summary['study_id']}")
    assert status.startswith("200")
    (t,) = detail["trials"]
    attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
    assert attrs["run_dir"] == "trials/abc123" and attrs["tune_trial_id"] == "abc123"
