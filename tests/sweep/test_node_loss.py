"""Losing a node: a 2-node Ray cluster on one machine (two `ray start` processes with 1 CPU each),
a sweep attached to it, the worker node killed mid-trial. Its trial is retried on the head from
its last checkpoint: nothing lost, and every metric row equals an uninterrupted run's."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.sweep.conftest import REPO, kill_group, read_trials, sweep_cmd, wait_for, write_space
from tests.sweep.test_checkpoint import TINY, metric_rows
from tests.sweep.test_cluster import _free_port, _listening


def _env() -> dict:
    """What a process joining the cluster needs: token auth when this machine has a Ray token
    (the head enables it by itself; see runner._token_auth_for_attach for the driver)."""
    env = dict(os.environ)
    if "RAY_AUTH_MODE" not in env and (env.get("RAY_AUTH_TOKEN") or env.get("RAY_AUTH_TOKEN_PATH")
                                       or (Path.home() / ".ray" / "auth_token").is_file()):
        env["RAY_AUTH_MODE"] = "token"
    env.pop("RAY_ADDRESS", None)
    return env


def _ray(*args: str, log: Path) -> subprocess.Popen:
    ray_bin = str(Path(sys.executable).with_name("ray"))
    with open(log, "w") as out:
        return subprocess.Popen([ray_bin, "start", *args, "--num-cpus=1", "--block",
                                 "--disable-usage-stats"], env=_env(),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _alive_nodes(address: str) -> int:
    code = ("import ray; ray.init(address=%r, log_to_driver=False); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))" % address)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=_env())
    try:
        return int(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes on SIGTERM
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        pass
    kill_group(proc, first=signal.SIGKILL, wait_s=5)


@pytest.mark.slow  # ~2-4 min: two Ray nodes, node-death detection, two reference runs
def test_losing_a_node_resumes_its_trial_on_the_other_node(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="abl_nl_", dir="/tmp")  # short: Ray's socket paths
    # the machine's own address: `ray start --address=127.0.0.1:...` would rewrite a loopback
    # address to it anyway, so both nodes use it
    import ray._private.services as services

    ip = services.get_node_ip_address()
    address = f"{ip}:{port}"
    head = _ray("--head", f"--port={port}", f"--node-ip-address={ip}",
                "--include-dashboard=false", f"--temp-dir={temp_dir}", log=tmp_path / "head.log")
    worker = None
    try:
        assert wait_for(lambda: _listening(port) or head.poll() is not None, 90)
        assert head.poll() is None, "ray start --head exited"
        worker = _ray(f"--address={address}", f"--node-ip-address={ip}", log=tmp_path / "node.log")
        assert wait_for(lambda: _alive_nodes(address) == 2 or worker.poll() is not None, 120)
        assert worker.poll() is None, (tmp_path / "node.log").read_text()[-2000:]

        base = TINY + ["train.steps=6", "train.checkpoint_every=2", "method=grpo"]
        f = write_space(tmp_path / "nl.yaml", name="nl", slots={}, seeds=[1, 2], max_failures=2,
                        max_concurrent=2, trainable="tests.sweep.fakes.dying_run_training",
                        base_overrides=base + ["fake.step_sleep=2"])
        env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
        for k in ("RAY_ADDRESS", "ABLATE_CONF_DIR"):
            env.pop(k, None)
        log = open(tmp_path / "driver.log", "w")
        proc = subprocess.Popen(sweep_cmd(str(f), "--address", address, "--no-report"),
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        sweep_dir = tmp_path / "runs" / "nl"
        try:
            def both_past_a_checkpoint() -> bool:  # step 3 logged by both: step-2 checkpoints done
                runs = list(sweep_dir.glob("trials/*/metrics.jsonl"))
                return len(runs) == 2 and all(len(p.read_text().splitlines()) >= 4 for p in runs)

            assert wait_for(lambda: both_past_a_checkpoint() or proc.poll() is not None, 300)
            assert proc.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            kill_group(worker, first=signal.SIGKILL, wait_s=1)  # the node is lost
            proc.wait(timeout=480)
        finally:
            if proc.poll() is None:
                kill_group(proc, first=signal.SIGINT)
            log.close()
        out = (tmp_path / "driver.log").read_text()
        assert proc.returncode == 0, out[-3000:]
        rows = read_trials(sweep_dir)
        assert len(rows) == 2 and {r["status"] for r in rows} == {"finished"}, rows
        assert any((r.get("resumed_from_step") or 0) >= 2 for r in rows), (rows, out[-2000:])
        from ablate.train.api import run_training

        for r in rows:
            ref = tmp_path / f"reference_{r['seed']}"
            run_training(base + [f"seed={r['seed']}"], ref)
            assert metric_rows(sweep_dir / r["run_dir"]) == metric_rows(ref), r
    finally:
        if worker is not None:
            _stop(worker)
        _stop(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
