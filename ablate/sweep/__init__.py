"""Sweeps: search-space files → Ray Tune (+ Optuna) trials of the trainable → run records.

space.py (format, validation, expansion) · trial.py (the per-trial function in Ray workers) ·
records.py (endings only the driver sees) · runner.py (driver: Ray, Tuner, resume, report:
run_sweep) · cli.py (`ablate sweep`). Only space.py is imported here: `import ablate.sweep` stays
free of Ray.
"""

from ablate.sweep.space import SearchSpace, load_search_space, plan_trials, validate

__all__ = ["SearchSpace", "load_search_space", "plan_trials", "validate"]
