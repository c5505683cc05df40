"""Sweeps: search-space files → Ray Tune (+ Optuna) trials of the trainable → run records.

space.py (format, validation, expansion) · trial.py (the per-trial function in Ray workers) ·
records.py (endings only the driver sees) · runner.py (driver: Ray, Tuner, resume, report) · cli.py (`ablate sweep`).
"""

from ablate.sweep.space import SearchSpace, load_search_space, plan_trials, validate

__all__ = ["SearchSpace", "load_search_space", "plan_trials", "validate", "run_sweep",
           "sweep_main", "add_sweep_parser"]


def __getattr__(name):  # keep `import ablate.sweep` free of Ray
    if name == "run_sweep":
        from ablate.sweep.runner import run_sweep
        return run_sweep
    if name in ("sweep_main", "add_sweep_parser"):
        from ablate.sweep import cli
        return getattr(cli, name)
    raise AttributeError(name)
