"""Test-wide settings and the two rules that keep an interrupted suite clean.

Settings: one torch thread per test process (CI has 2 cores), offline W&B.

Signals: Ctrl-C (SIGINT) and SIGTERM stop pytest. Ray Tune's own SIGINT handler (which turns the
first Ctrl-C into a graceful end of the sweep, so the test would go on) is switched off in this
process with ``TUNE_DISABLE_SIGINT_HANDLER``; children started through ``child_env`` get the
variable removed, so the sweeps that tests interrupt on purpose keep the user's behaviour. SIGTERM
raises KeyboardInterrupt here; ``ray.init`` replaces that handler with ``sys.exit(15)``, which a
test would report as an ordinary failure, so such an exit is turned back into an interrupt.

Processes: ``spawn`` starts a command in its own process group and kills that group (SIGTERM, then
SIGKILL) when the test ends, however it ends. Each group is also written to a record file, so a
later session kills what a SIGKILLed session left behind (e.g. a ``ray start --head`` cluster).
"""

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# test fixtures name their own classes (tests.slot_fixtures.NaNAdvantage, ...): the tests package
# is a plugin, as a user's module named with --plugins would be (ablate/spec/targets.py)
os.environ.setdefault("ABLATE_PLUGINS", "tests")
os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)

IN_PROCESS_ONLY = ("TUNE_DISABLE_SIGINT_HANDLER",)
GROUPS_DIR = Path(tempfile.gettempdir()) / f"ablate-tests-{os.getuid()}" / "groups"


def child_env(**extra: str) -> dict:
    """The environment for a child process: this one, less the in-process-only settings."""
    env = {k: v for k, v in os.environ.items() if k not in IN_PROCESS_ONLY}
    env.update(extra)
    return env


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A SIGTERM that reached ``ray.init``'s handler (``sys.exit(15)``) stops the session."""
    install_signal_handlers()
    try:
        return (yield)
    except SystemExit as e:
        if e.code == signal.SIGTERM:
            raise KeyboardInterrupt("SIGTERM") from None
        raise
    finally:
        install_signal_handlers()


# ------------------------------------------------------------------------------ process groups
def _groups_file(owner: int) -> Path:
    """One record file per test process, so parallel workers (pytest -n) never race on it."""
    return GROUPS_DIR / f"{owner}.json"


def _read_groups(owner: int) -> list[dict]:
    try:
        return json.loads(_groups_file(owner).read_text())
    except (OSError, ValueError):
        return []


def _write_groups(owner: int, rows: list[dict]) -> None:
    GROUPS_DIR.mkdir(parents=True, exist_ok=True)
    path = _groups_file(owner)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_process_group(pgid: int, grace_s: float = 10.0) -> None:
    """SIGTERM the group, wait up to ``grace_s`` for its leader, then SIGKILL what is left."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    end = time.time() + grace_s
    while time.time() < end and _alive(pgid):
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def pytest_sessionstart(session):
    """Kill the groups a session that is gone (SIGKILLed) left behind."""
    install_signal_handlers()
    for path in GROUPS_DIR.glob("*.json") if GROUPS_DIR.is_dir() else ():
        owner = int(path.stem)
        if not _alive(owner):
            for row in _read_groups(owner):
                kill_process_group(int(row["pgid"]), grace_s=2.0)
            path.unlink(missing_ok=True)


class Spawner:
    """``spawn(cmd, **popen_kwargs)``: a Popen in a new process group, stopped at teardown."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def __call__(self, cmd, **kw) -> subprocess.Popen:
        kw.setdefault("env", child_env())
        proc = subprocess.Popen(cmd, start_new_session=True, **kw)
        self.procs.append(proc)
        me = os.getpid()
        _write_groups(me, _read_groups(me) + [{"pgid": proc.pid, "cmd": [str(c) for c in cmd][:3]}])
        return proc

    def run(self, cmd, timeout: float, **kw) -> subprocess.CompletedProcess:
        """Like ``subprocess.run(capture_output=True, text=True)``, in a stopped-at-teardown group
        (``subprocess.run`` SIGKILLs only its child on Ctrl-C, orphaning a Ray it started)."""
        proc = self(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def stop_all(self) -> None:
        mine = {p.pid for p in self.procs}
        for p in self.procs:
            kill_process_group(p.pid)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        me = os.getpid()
        _write_groups(me, [r for r in _read_groups(me) if int(r["pgid"]) not in mine])


@pytest.fixture
def no_ray(monkeypatch):
    """Fail if a sweep tries to start (or attach to) Ray. Patching the one place the driver starts
    Ray makes the check hold whatever Ray state other tests in this process left."""
    import ablate.sweep.runner as runner

    calls = []

    def refuse(*a, **k):
        calls.append(a)
        raise AssertionError("Ray was started for an invalid input")

    monkeypatch.setattr(runner, "_init_ray", refuse)
    yield calls
    assert not calls


@pytest.fixture
def spawn():
    """Start child process groups that are stopped when the test ends (even on Ctrl-C)."""
    s = Spawner()
    try:
        yield s
    finally:
        s.stop_all()
