"""`ablate sweep --dry-run`'s wall-time estimate: the trial count and steps of the plan, times
measured by a short calibration run of the first trial (2 RL steps with an eval, a few warm-start
steps, in a temporary directory, warm-start cache and W&B off: nothing is left behind).

    wall ≈ (trials × (steps × step_s + evals × eval_s + setup_s) + warm starts × W × ws_step_s)
           / trials at a time

Warm starts are counted once per seed (the cache key does not depend on the slots) and cost
nothing when already cached; an ASHA scheduler stops trials early, so the figure is an upper bound
there. The estimate is a rough guide (±50% on a busy machine), never a promise.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import time
from typing import Any, Callable

CAL_STEPS = 2
CAL_WARM_STEPS = 4


def _calibrate(overrides: list[str], warm: bool) -> dict[str, float]:
    """Seconds per RL step, per eval, per warm-start step, and the rest (setup) of one short run."""
    from ablate.tracking import progress
    from ablate.train.api import quiet_third_party, run_training

    rows: list[dict] = []
    ws_times: list[float] = []
    cal = overrides + [f"train.steps={CAL_STEPS}", f"eval.every={CAL_STEPS}", "tracker=none",
                       "train.save_model=none"]
    if warm:
        cal += [f"model.warm_start.steps={CAL_WARM_STEPS}", "model.warm_start.cache=false",
                "model.warm_start.target_pass1=null"]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ablate-calibrate-") as d, \
            contextlib.redirect_stdout(io.StringIO()), quiet_third_party(), \
            progress.sink(lambda r: ws_times.append(time.perf_counter())
                          if r.get("phase") == "warm_start" else None, interval_s=0.0):
        run_training(cal, run_dir=os.path.join(d, "run"), reporter=rows.append)
    wall = time.perf_counter() - t0
    steps = [float(r["perf/step_s"]) for r in rows if "perf/step_s" in r]
    evals = [float(r["perf/eval_s"]) for r in rows if "perf/eval_s" in r]
    step_s = sum(steps) / len(steps) if steps else float("nan")
    eval_s = max(evals) if evals else 0.0
    ws_s = (ws_times[-1] - ws_times[0]) / CAL_WARM_STEPS if len(ws_times) > 1 else 0.0
    setup = max(0.0, wall - sum(steps) - 2 * eval_s - ws_s * CAL_WARM_STEPS)
    return {"step_s": step_s, "eval_s": eval_s, "ws_step_s": ws_s, "setup_s": setup,
            "calibration_s": wall}


def _dur(s: float) -> str:
    if not math.isfinite(s):
        return "n/a"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def estimate(space, specs: list[dict] | None, num_cpus: float | None = None,
             calibrate: Callable[[list[str], bool], dict] = _calibrate) -> dict[str, Any]:
    """The numbers behind the dry run's estimate line (see the module docstring)."""
    from ablate.config import compose_config
    from ablate.sweep.space import assignment_overrides

    first = specs[0] if specs else None
    seed = int(first["seed"]) if first else int(space.seeds[0])
    overrides = (space.run_overrides() + (assignment_overrides(first["assign"]) if first else [])
                 + [f"seed={seed}"])
    cfg = compose_config(overrides)
    steps = int(space.max_t or cfg.train.steps)
    every = int(cfg.eval.every or 0)
    evals = 1 + (math.ceil(steps / every) if every else 1)
    ws = cfg.model.get("warm_start") or {}
    warm_steps = int(ws.get("steps") or 0) if not cfg.model.get("path") or ws.get("on_checkpoint") \
        else 0
    n_trials = space.planned_runs(specs)
    fit = int(float(num_cpus or os.cpu_count() or 1) // (space.resources.cpu * space.resources.workers))
    parallel = max(1, min(fit, space.max_concurrent or n_trials, n_trials))
    cal = calibrate(overrides, warm_steps > 0)
    trial_s = steps * cal["step_s"] + evals * cal["eval_s"] + cal["setup_s"]
    warm_s = len(set(space.seeds)) * warm_steps * cal["ws_step_s"]
    wall = (n_trials * trial_s + warm_s) / parallel
    return {"trials": n_trials, "steps": steps, "evals": evals, "parallel": parallel,
            "trial_s": trial_s, "warm_starts": len(set(space.seeds)) if warm_steps else 0,
            "warm_steps": warm_steps, "warm_s": warm_s, "wall_s": wall, **cal}


def estimate_line(space, specs: list[dict] | None, num_cpus: float | None = None,
                  calibrate: Callable[[list[str], bool], dict] = _calibrate) -> str:
    e = estimate(space, specs, num_cpus, calibrate)
    warm = (f"; warm starts: {e['warm_starts']} x up to {e['warm_steps']} steps x "
            f"{e['ws_step_s']:.2f} s = {_dur(e['warm_s'])} unless cached" if e["warm_starts"] else "")
    bound = " (an upper bound: ASHA stops trials early)" if space.scheduler else ""
    return (f"estimated wall time: about {_dur(e['wall_s'])}{bound} for {e['trials']} trials x "
            f"{e['steps']} steps, {e['parallel']} at a time (per trial: {e['steps']} steps x "
            f"{e['step_s']:.2f} s + {e['evals']} evals x {e['eval_s']:.2f} s + "
            f"{e['setup_s']:.0f} s setup{warm}; calibrated on the first trial in "
            f"{e['calibration_s']:.0f} s)")
