"""Trials packed side by side: each uses its own CPUs' worth of threads, and a sweep's trials share
one W&B service (issue 21 item 5; the timings are in bench/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys

from ablate.sweep.runner import worker_env
from ablate.sweep.space import validate
from ablate.tracking.wandb_logger import SERVICE_ENV as SERVICE
from ablate.tracking.wandb_logger import shared_service


def _space(cpu: float):
    return validate({"name": "x", "metric": "m", "slots": {}, "seeds": [0], "resources": {"cpu": cpu},
                     "trainable": "tests.sweep.fakes.fake_run_training"})


def test_trial_threads_follow_the_trial_cpus_not_the_driver_env(monkeypatch, tmp_path):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert worker_env(_space(1), tmp_path)["OMP_NUM_THREADS"] == "1"
    assert worker_env(_space(2), tmp_path)["OMP_NUM_THREADS"] == "2"
    assert worker_env(_space(0.5), tmp_path)["OMP_NUM_THREADS"] == "1"


def test_disabled_wandb_starts_no_shared_service(monkeypatch):
    monkeypatch.delenv(SERVICE, raising=False)
    with shared_service("disabled") as shared:
        assert shared is False and SERVICE not in os.environ


def test_a_service_already_running_is_used_and_left_running(monkeypatch):
    monkeypatch.setenv(SERVICE, "unix=/nonexistent/ours-not")  # never connected to here
    with shared_service("offline") as shared:
        assert shared is True
    assert os.environ[SERVICE] == "unix=/nonexistent/ours-not"  # not torn down


CHILD_RUN = """
import sys, wandb
run = wandb.init(project="p", dir=sys.argv[1], mode="offline", reinit="create_new")
for i in range(50):
    run.log({"x": i})
run.finish()
wandb.teardown()  # a trial's teardown: with the shared service it only closes its connection
"""


def test_shared_service_serves_child_runs_and_waits_for_their_data(monkeypatch, tmp_path):
    from tests.wandb_reader import find_wandb_file, iter_records

    monkeypatch.delenv(SERVICE, raising=False)
    with shared_service("offline") as shared:
        assert shared is True and os.environ.get(SERVICE)
        subprocess.run([sys.executable, "-c", CHILD_RUN, str(tmp_path)], check=True, timeout=120,
                       env=dict(os.environ))
    assert SERVICE not in os.environ  # torn down: later W&B runs of this process start their own
    kinds = [r.WhichOneof("record_type") for r in iter_records(find_wandb_file(tmp_path))]
    assert kinds.count("history") == 50 and kinds[-1] == "exit"  # complete once the sweep ends
    logs = " ".join(p.read_text(errors="replace") for p in tmp_path.rglob("debug.log"))
    assert "existing wandb-core service" in logs  # the child used ours, it did not start its own
