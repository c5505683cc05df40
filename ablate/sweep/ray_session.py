"""The local Ray a sweep started, recorded in ``<sweep_dir>/ray_session.json`` (session dir, the
pids of its processes), so that after a killed driver ``--resume`` stops what that session left
running, and nothing else: a process is stopped only if it is one of ours (same user) and it
names that session, in its command line (raylet, GCS, log monitor) or by holding files open in
the session dir (Ray's agents and workers, whose process titles read "ray::..."); a recorded pid
alone could have been reused."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Callable

from ablate.tracking.run_store import atomic_write, read_json

RECORD = "ray_session.json"


def record_session(sweep_dir: Path, session_dir: str) -> dict:
    """Write the record for the local Ray this process just started (``session_dir`` from the
    public ``ray.init(...).address_info``); its processes are those that name the session."""
    name = Path(session_dir).name
    rec = {"session_dir": session_dir, "session_name": name, "driver_pid": os.getpid(),
           "pids": session_processes(name), "started": time.time(), "shut_down": False}
    atomic_write(sweep_dir / RECORD, json.dumps(rec, indent=1) + "\n")
    return rec


def mark_shut_down(sweep_dir: Path) -> None:
    rec = read_record(sweep_dir)
    if rec:
        rec["shut_down"] = True
        atomic_write(sweep_dir / RECORD, json.dumps(rec, indent=1) + "\n")


def read_record(sweep_dir: Path) -> dict | None:
    rec = read_json(sweep_dir / RECORD)
    return rec if rec.get("session_name") else None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
    except OSError:
        return ""


def _mine(pid: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}").st_uid == os.getuid()
    except OSError:
        return False


def _holds_session_files(pid: int, session_name: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if session_name in os.readlink(f"/proc/{pid}/fd/{fd}"):
                return True
        except OSError:
            continue
    return False


def belongs(pid: int, session_name: str) -> bool:
    """Whether live process ``pid`` is part of the Ray session ``session_name``."""
    return session_name in _cmdline(pid) or _holds_session_files(pid, session_name)


def session_processes(session_name: str) -> list[int]:
    """Live processes of this user that belong to the session (see ``belongs``)."""
    out = []
    me = os.getpid()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        pid = int(p.name)
        if pid == me or not _mine(pid):
            continue
        if belongs(pid, session_name):
            out.append(pid)
    return sorted(out)


def cleanup_leftovers(sweep_dir: Path, log: Callable[[str], None]) -> list[int]:
    """Stop the processes the sweep's recorded Ray session left behind (a killed driver)."""
    rec = read_record(sweep_dir)
    if not rec:
        return []
    name = str(rec["session_name"])
    driver = int(rec.get("driver_pid") or 0)
    if driver and driver != os.getpid() and _mine(driver) and "ablate" in _cmdline(driver) \
            and not rec.get("shut_down"):
        log(f"the sweep's driver (pid {driver}) still runs; not touching its Ray session")
        return []
    pids = [p for p in dict.fromkeys([*map(int, rec.get("pids") or []),
                                      *session_processes(name)])
            if _mine(p) and belongs(p, name)]
    if not pids:
        return []
    stopped = list(pids)
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        for p in pids:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        end = time.time() + wait
        while time.time() < end and any(belongs(p, name) for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if belongs(p, name)]
        if not pids:
            break
    log(f"stopped {len(stopped)} leftover process(es) of the sweep's earlier Ray session {name}")
    mark_shut_down(sweep_dir)
    return stopped
