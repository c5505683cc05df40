"""Sweep-test fixtures: a tiny conf tree to validate against, one shared local Ray, space files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FAKE = "tests.sweep.fakes.fake_run_training"
# a search space may only name a registered trainable: register the fake the way a user registers
# their own (inherited by the `ablate sweep` subprocesses these tests start)
os.environ["ABLATE_TRAINABLES"] = f"fake={FAKE},dying=tests.sweep.fakes.dying_run_training"
FAKE_VARIANTS = {
    "mask": ["none", "ppo_clip", "clip_higher"],
    "advantage": ["group_zscore", "group_centered"],
    "method": ["grpo", "dapo"],
    "aggregation": ["token_mean"],
}


@pytest.fixture(scope="session")
def fake_conf_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("conf")
    for group, names in FAKE_VARIANTS.items():
        (root / group).mkdir()
        for n in names:
            (root / group / f"{n}.yaml").write_text("_target_: fake.Variant\n")
    (root / "config.yaml").write_text("defaults:\n  - _self_\nseed: 0\nname: null\n")
    return root


@pytest.fixture
def conf_env(fake_conf_dir, monkeypatch) -> Path:
    """Validate search spaces against the fake conf tree (ABLATE_CONF_DIR)."""
    monkeypatch.setenv("ABLATE_CONF_DIR", str(fake_conf_dir))
    return fake_conf_dir


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for every in-process sweep test (Ray start is the slow part); shut down at
    the end of the session, an interrupted one included (pytest tears fixtures down on Ctrl-C)."""
    import ray

    from tests.conftest import install_signal_handlers

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        install_signal_handlers()  # ray.init's SIGTERM handler would only fail the current test
    try:
        yield ray
    finally:
        ray.shutdown()


def write_space(path: Path, **fields) -> Path:
    """A search-space file with fake-trainable defaults, updated by ``fields``."""
    data = {
        "name": "t",
        "trainable": FAKE,
        "base_overrides": ["fake.steps=3"],
        "slots": {"mask": ["ppo_clip", "none"]},
        "seeds": [0],
        "metric": "eval/pass@1",
        "mode": "max",
        "max_concurrent": 2,
        "output_dir": str(path.parent / "runs"),
    }
    for k, v in fields.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_trials(sweep_dir: Path) -> list[dict]:
    """The sweep's trials table, read from its run store (ablate.tracking.trials)."""
    from ablate.tracking.trials import read_trials as table

    return table(sweep_dir)


def kill_group(proc: subprocess.Popen, first=signal.SIGINT, wait_s: float = 30.0) -> None:
    """Signal the process group this test started (start_new_session=True), then SIGKILL it."""
    try:
        os.killpg(proc.pid, first)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_for(cond, timeout: float, interval: float = 0.25) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(interval)
    return False


def sweep_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ablate.sweep.cli", *args]
