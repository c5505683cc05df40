"""Progress of the work a run does before its first training step (loading the model, the SFT
warm start), for whoever is watching: the sweep console or the `ablate train` terminal.

Training steps reach the sweep console as Ray Tune results (``tune.report``); the warm start
cannot (Optuna's searcher reads the objective from every result, and there is none yet), so a
trial writes its phase to ``<trial_dir>/progress.json`` and the console reads it. ``note`` is
cheap to call every step: each sink is throttled to one write per ``interval_s`` except on a
change of phase or cache state.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ablate.tracking.run_store import atomic_write, read_json

PROGRESS_FILE = "progress.json"

_SINKS: list[Callable[[dict, bool], None]] = []


def note(phase: str, force: bool = False, **fields: Any) -> None:
    """Record the current phase (``"warm_start"``, ``"loading"``, ...) and its fields."""
    if not _SINKS:
        return
    rec = {"phase": phase, **fields, "time": time.time()}
    for sink in list(_SINKS):
        sink(rec, force)


@contextmanager
def sink(fn: Callable[[dict], None], interval_s: float = 1.0) -> Iterator[None]:
    """``fn`` gets the records noted inside the block, throttled (see the module docstring)."""
    last: dict[str, Any] = {"t": 0.0, "key": ()}

    def throttled(rec: dict, force: bool) -> None:
        key, now = (rec.get("phase"), rec.get("cache")), time.monotonic()
        if force or key != last["key"] or now - last["t"] >= interval_s:
            last.update(t=now, key=key)
            fn(rec)

    _SINKS.append(throttled)
    try:
        yield
    finally:
        _SINKS.remove(throttled)


def to_file(path: Path | str) -> Any:
    """Progress records written (atomically) to ``path``: a sweep trial's progress.json."""
    path = Path(path)

    def write(rec: dict) -> None:
        with suppress(OSError):  # progress is cosmetic: never fail a run for it
            atomic_write(path, json.dumps(rec))

    return sink(write)


def to_console(stream=None, interval_s: float = 5.0) -> Any:
    """Progress lines on the terminal (``ablate train``), at most one per ``interval_s``."""
    def write(rec: dict) -> None:
        print(f"[ablate] {describe(rec)}", file=stream or sys.stderr, flush=True)

    return sink(write, interval_s)


def read(path: Path | str) -> Optional[dict]:
    return read_json(Path(path)) or None


def describe(rec: dict) -> str:
    """``warm start (cache miss) 40/200`` / ``warm start (cache hit)`` / ``loading model``."""
    phase = str(rec.get("phase") or "")
    if phase == "warm_start":
        cache = rec.get("cache")
        out = "warm start" + (f" (cache {cache})" if cache else "")
        if rec.get("step") is not None and rec.get("target"):
            out += f" {rec['step']}/{rec['target']}"
        if rec.get("done"):
            out += " done"
        return out
    return phase.replace("_", " ")
