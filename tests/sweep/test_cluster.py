"""Attach a sweep to an already running Ray cluster (`--address host:port`).

The head is started by this test with `ray start --head --block` in its own process group and
stopped by SIGTERM to that process, then SIGKILL to what is left of its group (a `ray stop
--force` would kill every Ray on the machine, including other users' local instances).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import child_env
from tests.sweep.conftest import REPO, kill_group, read_trials, sweep_cmd, wait_for, write_space


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sweep_attaches_to_existing_cluster(tmp_path, fake_conf_dir, spawn):
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="abl_ray_", dir="/tmp")  # short: Ray's socket paths
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head = spawn(  # its own process group, stopped by the fixture however the test ends
        [ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--block",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: _listening(port) or head.poll() is not None, 90)
        assert head.poll() is None, "ray start --head exited"
        f = write_space(tmp_path / "c.yaml", name="cl", base_overrides=["fake.steps=2"])
        env = child_env(ABLATE_CONF_DIR=str(fake_conf_dir), PYTHONPATH=str(REPO),
                        WANDB_MODE="disabled")
        env.pop("RAY_ADDRESS", None)
        res = spawn.run(sweep_cmd(str(f), "--address", f"127.0.0.1:{port}", "--no-report"),
                        cwd=tmp_path, env=env, timeout=240)
        assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
        assert f"attaching to Ray cluster at 127.0.0.1:{port}" in res.stdout
        rows = read_trials(tmp_path / "runs" / "cl")
        assert len(rows) == 2 and {r["status"] for r in rows} == {"finished"}
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes on SIGTERM
        try:
            head.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pass
        kill_group(head, first=signal.SIGKILL, wait_s=5)  # anything of its group still alive
        shutil.rmtree(temp_dir, ignore_errors=True)
