"""What the driver adds to the run records (ablate.tracking.trials) once Tune has ended a trial.

A run records its own end (ablate.sweep.trial). Two endings only the driver sees: a scheduler
stopped the trial before the trainer's end (ASHA: ``early_stopped``), or the trial's process died
and Tune gave up on it (``failed``, error_kind ``infrastructure``; --resume reruns it). Seeds a
stopped multi-seed trial never reached get a record too (run_dir None), so every planned run of
an ended trial has exactly one row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ablate.sweep.trial import COMPLETE_KEY, ENDED, Trial
from ablate.tracking.trials import INFRA, joined_error, trial_runs

_TUNE_ENDED = ("TERMINATED", "ERROR")


def settle(sweep_dir: Path, trials: list, ctx: Mapping[str, Any], experiment: str) -> int:
    """Record how each ended Tune trial's unrecorded runs ended; returns how many were written."""
    return sum(_settle_trial(Trial.of(dict(t.config or {}), ctx, str(t.trial_id), sweep_dir,
                                       experiment), t)
               for t in trials if str(t.status) in _TUNE_ENDED)


def _settle_trial(tr: Trial, t) -> int:
    runs = {int(r["seed"]): r for r in trial_runs(tr.sweep_dir, tr.trial_id)}
    todo = [s for s in tr.seeds if runs.get(s, {}).get("status") not in ENDED]
    if not todo or (str(t.status) == "TERMINATED" and (t.last_result or {}).get(COMPLETE_KEY)):
        return 0
    if str(t.status) == "TERMINATED":
        status, kind, error = "early_stopped", None, None
    else:
        status, kind = "failed", INFRA
        error = trial_error(t, list(runs.values()), len(tr.seeds) > 1, 2000)
    for seed in todo:
        old = runs.get(seed, {})
        run_dir = tr.run_dir(seed)
        ran = old or (run_dir / "summary.json").is_file()
        tr.record({"seed": seed, "final": {}, "steps_done": 0, "overrides": tr.overrides(seed),
                   **old,
                   "run_dir": str(run_dir.relative_to(tr.sweep_dir)) if ran else None,
                   "status": status, "error": old.get("error") or error, "error_kind": kind})
    return len(todo)


def trial_error(t, runs: list[dict], multi: bool, limit: int) -> str:
    """A failed trial's error in one line: its runs' own (the run store), else Tune's last line."""
    own = joined_error(runs, multi)
    if own:
        return own[:limit]
    try:
        lines = [ln.strip() for ln in str(t.get_error() or "").splitlines() if ln.strip()]
    except Exception:  # noqa: BLE001 - Tune's error file is best effort
        lines = []
    return lines[-1][:limit] if lines else "trial errored (see the Tune trial's error.txt)"
