"""What a person sees while a sweep runs: one line per trial start and end (with the best result
so far) and a progress bar over trials; Ray's own output goes to ``<sweep_dir>/ray.log``.

``redirect_output`` points the process's stdout/stderr file descriptors (Ray's C++ logs, Tune's
status tables, Python logging, warnings) at the log file while Ray runs and hands back a stream on
the real terminal for our own lines; ``--verbose`` skips it.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TextIO

from ablate.sweep.records import trial_error
from ablate.sweep.trial import COMPLETE_KEY
from ablate.tracking import progress
from ablate.tracking.trials import trial_runs

RAY_LOG = "ray.log"


class Console:
    """Where our own lines go: ``write`` (a line) and, on a terminal stream, a tqdm bar."""

    def __init__(self, log: Callable[[str], None] | None = None, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self._custom = log
        self.bar = None

    def __call__(self, msg: str) -> None:
        if self._custom is not None:
            self._custom(msg)
            return
        if self.bar is not None:
            self.bar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def start_bar(self, total: int | None, desc: str) -> None:
        if self._custom is not None or not total:
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="trial", file=self.stream, leave=False,
                        dynamic_ncols=True)

    def advance(self, postfix: str) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.status(postfix)

    def status(self, text: str) -> bool:
        """Show what the running trials are doing: on the bar (redrawn, which also advances its
        clock); returns False when there is no bar (the caller then writes a line)."""
        if self.bar is None:
            return False
        self.bar.set_postfix_str(text, refresh=True)
        return True

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _flush_std() -> None:
    for s in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            s.flush()


@contextmanager
def redirect_output(log_path: Path, console: Console) -> Iterator[None]:
    """fd 1/2 → ``log_path`` (appended) for the block; ``console`` keeps writing to the terminal."""
    _flush_std()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    term = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
    old_stream, console.stream = console.stream, term
    with open(log_path, "a", encoding="utf-8") as f:
        for fd in saved:
            os.dup2(f.fileno(), fd)
        try:
            yield
        finally:
            _flush_std()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            console.stream = old_stream
            term.close()


_CURRENT: list[Console] = [Console()]


def current() -> Console:
    """The console of the sweep running in this process (callbacks look it up when called, so a
    callback restored from Tune's saved state prints to the resumed sweep's console)."""
    return _CURRENT[-1]


@contextmanager
def use_console(console: Console) -> Iterator[Console]:
    _CURRENT.append(console)
    try:
        yield console
    finally:
        _CURRENT.remove(console)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


BAR_REFRESH_S = 2.0  # how often the bar's running-trials status is redrawn
LINE_REFRESH_S = 10.0  # without a bar (a log file): a status line at most this often...
LINE_SILENT_S = 30.0  # ...when something changed, and at least this often while trials run


def trial_status(tid: str, result: Mapping[str, Any] | None, metric: str,
                 steps: int | None, phase: Mapping[str, Any] | None) -> str:
    """One running trial: ``<id> step 3/10 pass@1=0.25`` from its latest Tune result, or its
    loading / warm-start phase (``<id> warm start (cache miss) 40/200``) when that is newer."""
    r_time = float((result or {}).get("timestamp") or 0)
    if phase and (result is None or float(phase.get("time") or 0) > r_time):
        return f"{tid} {progress.describe(phase)}"
    if result is None:
        return f"{tid} starting"
    out = f"{tid} step {_fmt(result.get('step'))}" + (f"/{steps}" if steps else "")
    if isinstance(result.get(metric), (int, float)):
        out += f" {metric.rsplit('/', 1)[-1]}={_fmt(result[metric])}"
    return out


class _ConsoleLines:
    """The console callback's behaviour as Tune's Callback hooks, kept free of Ray: the base is
    mixed in by ``make_console_callback`` (Ray is imported only when a sweep runs)."""

    def __init__(self, *, metric: str, mode: str, label: Callable[[Any], str], total: int | None,
                 sweep_dir: str, steps: int | None = None):
        self.metric, self.label, self.total = metric, label, total
        self.sweep_dir, self.steps = sweep_dir, steps
        self.sign = 1.0 if mode == "max" else -1.0
        self.best: tuple[float, str] | None = None
        self.ended = 0
        self.started: set[str] = set()
        self.results: dict[str, dict] = {}
        self.shown = (0.0, "")  # when the last status went out, and what it said

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results[str(trial.trial_id)] = {k: result.get(k) for k in ("step", self.metric, "timestamp")}

    def running_status(self, trials) -> str:
        running = [str(t.trial_id) for t in trials if t.status == "RUNNING"]
        trials_dir = Path(self.sweep_dir) / "trials"
        return "; ".join(trial_status(tid, self.results.get(tid), self.metric, self.steps,
                                      progress.read(trials_dir / tid / progress.PROGRESS_FILE))
                         for tid in running)

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        last_t, last_text = self.shown
        if now - last_t < BAR_REFRESH_S:
            return
        text = self.running_status(trials)
        if not text:
            return
        if current().status(text):
            self.shown = (now, text)
        elif (now - last_t >= LINE_REFRESH_S and text != last_text) or now - last_t >= LINE_SILENT_S:
            self.shown = (now, text)
            current()(f"{self._prefix()} running: {text}")

    def setup(self, **info):
        current().start_bar(self.total, "trials")

    def _prefix(self) -> str:
        return f"[{self.ended}/{self.total}]" if self.total else f"[{self.ended}]"

    def _best(self) -> str:
        if self.best is None:
            return "best: none yet"
        return f"best {self.metric}={_fmt(self.best[0])} ({self.best[1]})"

    def on_trial_start(self, iteration, trials, trial, **info):
        tid = str(trial.trial_id)
        again = tid in self.started
        self.started.add(tid)
        current()(f"{self._prefix()} {'restarted' if again else 'started'} {tid} {self.label(trial)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        current()(f"{self._prefix()} retrying {trial.trial_id} after an infrastructure failure "
                  f"(from its last checkpoint)")

    def _end(self, trial, what: str, value: Any = None, error: str | None = None):
        self.ended += 1
        desc = self.label(trial)
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            if self.best is None or self.sign * float(value) > self.sign * self.best[0]:
                self.best = (float(value), desc)
            res = f"{self.metric}={_fmt(value)}"
        else:
            res = error or f"no {self.metric}"
        current().advance(self._best())
        current()(f"{self._prefix()} {what} {trial.trial_id} {desc}: {res}; {self._best()}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        last: Mapping[str, Any] = trial.last_result or {}
        self._end(trial, "finished" if last.get(COMPLETE_KEY) else "stopped early",
                  last.get(self.metric))

    def on_trial_error(self, iteration, trials, trial, **info):
        runs = trial_runs(Path(self.sweep_dir), str(trial.trial_id))
        self._end(trial, "FAILED", error=trial_error(trial, runs, len(runs) > 1, 300))

    def on_experiment_end(self, trials, **info):
        current().close_bar()


def make_console_callback(**kw):
    """A Tune Callback printing a line per trial start / end and the best value so far (keywords:
    those of ``_ConsoleLines``). The bar counts trials that ended (finished, stopped early or
    failed); ``total`` is the planned number. Between those lines it shows every running trial's
    step and latest ``metric`` (Tune's intermediate results) or its warm-start progress (the
    trial's progress.json), redrawn every couple of seconds on a terminal, as a status line now
    and then in a log."""
    from ray.tune import Callback

    class ConsoleCallback(_ConsoleLines, Callback):
        pass

    return ConsoleCallback(**kw)
