"""No credential in anything we or Ray write, and a killed driver's Ray processes are stopped by
--resume (those of its own session only)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from ablate.sweep.ray_session import RECORD, session_processes
from ablate.sweep.runner import run_sweep, worker_env
from ablate.sweep.space import validate
from tests.conftest import child_env
from tests.sweep.conftest import REPO, read_trials, sweep_cmd, wait_for, write_space


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for p in root.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink() and needle in p.read_bytes():
                hits.append(str(p))
        except OSError:
            continue
    return hits


def test_worker_env_carries_no_credentials(monkeypatch, tmp_path):
    for k in ("WANDB_API_KEY", "HF_TOKEN", "RAY_AUTH_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "s3cr3t")
    space = validate({"name": "x", "metric": "m", "slots": {}, "seeds": [0],
                      "trainable": "tests.sweep.fakes.fake_run_training"})
    env = worker_env(space, tmp_path)
    assert "s3cr3t" not in json.dumps(env)
    assert not any(k in env for k in ("WANDB_API_KEY", "HF_TOKEN", "RAY_AUTH_TOKEN"))
    assert env["WANDB_PROJECT"] and env["ABLATE_CONF_DIR"]  # the rest still travels


def test_sweep_writes_no_secret_in_its_dir_or_the_ray_session_logs(tmp_path, fake_conf_dir,
                                                                   spawn):
    """A sweep that starts its own Ray (a subprocess, as `ablate sweep` runs) with a key set."""
    secret = f"fake-wandb-key-{uuid.uuid4().hex}"
    f = write_space(tmp_path / "s.yaml", name="s", slots={}, base_overrides=["fake.steps=1"])
    env = {**child_env(), "ABLATE_CONF_DIR": str(fake_conf_dir), "PYTHONPATH": str(REPO),
           "WANDB_API_KEY": secret, "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    res = spawn.run(sweep_cmd(str(f), "--num-cpus", "1", "--no-report"), cwd=tmp_path, env=env,
                    timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    sweep_dir = tmp_path / "runs" / "s"
    (row,) = read_trials(sweep_dir)
    summary = json.loads((sweep_dir / row["run_dir"] / "summary.json").read_text())
    assert summary["saw_wandb_key"]  # the worker has it: inherited, not sent
    rec = json.loads((sweep_dir / RECORD).read_text())
    assert rec["shut_down"] and session_processes(rec["session_name"]) == []
    logs = Path(rec["session_dir"]) / "logs"
    assert (logs / "runtime_env_agent.log").is_file()  # where env_vars used to be written
    needle = secret.encode()
    assert needle not in (res.stdout + res.stderr).encode()
    assert _files_containing(sweep_dir, needle) == []
    assert _files_containing(logs, needle) == []


@pytest.mark.slow  # ~60-80 s on 2 busy cores: a second Ray in a subprocess, killed, then resumed
def test_killed_sweep_leaks_no_secret_and_resume_stops_its_ray(tmp_path, conf_env, ray_local,
                                                               monkeypatch, spawn):
    secret = f"fake-wandb-key-{uuid.uuid4().hex}"
    markers = tmp_path / "markers"
    f = write_space(tmp_path / "sec.yaml", name="sec", seeds=[0, 1],
                    base_overrides=["fake.steps=4", "fake.sleep=0.5", f"fake.marker_dir={markers}"])
    env = {**child_env(), "ABLATE_CONF_DIR": str(conf_env), "PYTHONPATH": str(REPO),
           "WANDB_API_KEY": secret, "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / "driver.log", "w")
    proc = spawn(sweep_cmd(str(f), "--num-cpus", "2", "--no-report"), cwd=tmp_path, env=env,
                 stdout=log, stderr=subprocess.STDOUT)
    sweep_dir = tmp_path / "runs" / "sec"
    try:
        assert wait_for(lambda: any(markers.glob("*.finish.*")) or proc.poll() is not None, 120)
        assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as `kill -9 <driver pid>`
        proc.wait(timeout=30)
    finally:
        log.close()
    rec = json.loads((sweep_dir / RECORD).read_text())
    session = Path(rec["session_dir"])
    assert rec["driver_pid"] == proc.pid and session.is_dir()
    left = session_processes(rec["session_name"])
    assert left, ("expected the killed driver's Ray processes to outlive it", rec,
                  subprocess.run(["ps", "-eo", "pid,ppid,etime,cmd"], capture_output=True,
                                 text=True).stdout[-6000:])
    # the console printed our lines only; Ray's output went to ray.log
    console = (tmp_path / "driver.log").read_text()
    assert " started " in console and "ray.log" in console
    assert "Trial status:" not in console and "Trial status:" in (sweep_dir / "ray.log").read_text()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logs: list[str] = []
    assert run_sweep(f, resume=True, report=False, log=logs.append) == 0
    assert any("leftover process" in m for m in logs), logs
    assert session_processes(rec["session_name"]) == []
    assert all(not Path(f"/proc/{p}").exists() or p not in session_processes(rec["session_name"])
               for p in left)
    import ray

    assert ray.get(ray.remote(lambda: 1).remote()) == 1  # the other Ray session is untouched
    rows = read_trials(sweep_dir)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    summaries = [json.loads(p.read_text()) for p in sweep_dir.glob("trials/*/summary.json")]
    # the trial that finished before the kill ran in the subprocess's Ray: workers inherit the key
    assert summaries and any(s["saw_wandb_key"] for s in summaries)
    needle = secret.encode()
    assert _files_containing(sweep_dir, needle) == []
    assert _files_containing(session / "logs", needle) == []
