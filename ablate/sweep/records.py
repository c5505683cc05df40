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

from ablate.sweep.space import active_assignment, assignment_overrides
from ablate.sweep.trial import COMPLETE_KEY, ENDED, identity, write_record
from ablate.tracking.trials import INFRA, joined_error, trial_runs

_TUNE_ENDED = ("TERMINATED", "ERROR")


def trial_plan(config: Mapping[str, Any], ctx: Mapping[str, Any]) -> tuple[dict, list[int]] | None:
    """(assignment, seeds) of a Tune trial's config: a planned spec (grid/random) or an Optuna
    proposal that runs every seed."""
    if "trial" in config:
        spec = (ctx.get("specs") or {}).get(config["trial"])
        return None if spec is None else (dict(spec["assign"]), [int(spec["seed"])])
    return (active_assignment(config, ctx.get("conditions") or {}),
            [int(s) for s in ctx["seeds"]])


def settle(sweep_dir: Path, trials: list, ctx: Mapping[str, Any], experiment: str) -> int:
    """Record how each ended Tune trial's unrecorded runs ended; returns how many were written."""
    n = 0
    for t in trials:
        plan = trial_plan(dict(t.config or {}), ctx)
        if str(t.status) not in _TUNE_ENDED or plan is None:
            continue
        n += _settle_trial(sweep_dir, t, *plan, ctx, experiment)
    return n


def _settle_trial(sweep_dir: Path, t, assign: dict, seeds: list[int], ctx: Mapping[str, Any],
                  experiment: str) -> int:
    tid = str(t.trial_id)
    runs = {int(r["seed"]): r for r in trial_runs(sweep_dir, tid)}
    if all(runs.get(s, {}).get("status") in ENDED for s in seeds):
        return 0
    multi = len(seeds) > 1
    if str(t.status) == "TERMINATED":
        if (t.last_result or {}).get(COMPLETE_KEY):
            return 0
        status, kind, error = "early_stopped", None, None
    else:
        status, kind = "failed", INFRA
        error = joined_error(list(runs.values()), multi) or _tune_error(t)
    n = 0
    for seed in seeds:
        old = runs.get(seed, {})
        if old.get("status") in ENDED:
            continue
        run_dir = sweep_dir / "trials" / tid / (f"seed_{seed}" if multi else "")
        ran = old or (run_dir / "summary.json").is_file()
        rec = {"status": status, "error": error, "error_kind": kind, "final": {}, "steps_done": 0,
               "overrides": list(ctx["base_overrides"]) + assignment_overrides(assign)
               + [f"seed={seed}"], **old,
               "run_dir": str(run_dir.relative_to(sweep_dir)) if ran else None}
        rec.update(status=status, error=old.get("error") or error, error_kind=kind)
        write_record(run_dir, {**rec, **identity(tid, assign, seeds, seed,
                                                old.get("experiment") or experiment)})
        n += 1
    return n


def _tune_error(t) -> str:
    """The last line of Tune's error for a trial whose runs recorded none."""
    try:
        lines = [ln.strip() for ln in str(t.get_error() or "").splitlines() if ln.strip()]
    except Exception:  # noqa: BLE001 - Tune's error file is best effort
        lines = []
    return lines[-1][:2000] if lines else "trial errored (see the Tune trial's error.txt)"
