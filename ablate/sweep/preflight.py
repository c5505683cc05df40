"""Sweep preflight: compose and fully validate every trial's config before Ray starts.

Grid and random searches: every planned trial (the random draws are seeded, so they are the
trials that will run). Optuna searches: every combination of the categorical axes, each with the
range params at their low and at their high ends and every choice value, so any value Optuna can
propose lies between two checked ones. Each config goes through ``validate_config``, the same
check ``ablate train`` runs (schema types and ranges, components, task data), so a trial that
would fail on its config fails here, with one line naming the field and the trial's overrides.
"""

from __future__ import annotations

import itertools
from typing import Any

from ablate.errors import ConfigError
from ablate.sweep.space import SearchSpace, assignment_overrides, plan_trials
from ablate.sweep.trainables import resolve

OPTUNA_COMBOS_LIMIT = 256  # categorical combinations checked for an Optuna space


def optuna_assignments(space: SearchSpace) -> list[dict]:
    """Assignments that bound what Optuna may propose (see the module docstring)."""
    cats = space.categorical_axes()
    names = [n for n, _ in cats]
    out: list[dict] = []
    for combo in itertools.islice(itertools.product(*[o for _, o in cats]), OPTUNA_COMBOS_LIMIT):
        base = dict(zip(names, combo))
        ends: list[dict] = []
        width = max([1] + [len(p.values or []) if p.type == "choice" else 2
                           for p in space.params.values()])
        for i in range(width):
            a = dict(base)
            for key, p in space.params.items():
                if not p.active(a):
                    continue
                if p.type == "choice":
                    vals = p.values or []
                    a[key] = vals[i % len(vals)]
                else:
                    v = p.low if i % 2 == 0 else p.high
                    a[key] = int(v) if p.type == "int" else float(v)  # type: ignore[arg-type]
            ends.append(a)
        out.extend(ends)
    return out


def trial_assignments(space: SearchSpace) -> list[dict]:
    specs = plan_trials(space)
    if specs is None:
        return optuna_assignments(space)
    seen: set[str] = set()
    out = []
    for s in specs:
        if s["combo"] not in seen:  # seeds differ only in seed=, checked by the space itself
            seen.add(s["combo"])
            out.append(s["assign"])
    return out


def preflight(space: SearchSpace) -> int:
    """Validate every trial's composed config; returns how many were checked (0 when the
    trainable does not take ablate configs). Raises a one-line ConfigError for the first bad one."""
    if not resolve(space.trainable).validates:
        return 0
    from ablate.config import compose_config
    from ablate.train.validate import validate_config

    tasks: dict[str, Any] = {}
    n = 0
    for a in trial_assignments(space):
        ov = space.run_overrides() + assignment_overrides(a) + [
            f"seed={space.seeds[0]}", "name=preflight"]
        try:
            validate_config(compose_config(ov), task_cache=tasks)
        except ConfigError as e:
            raise ConfigError(f"{e} [trial overrides: {' '.join(ov)}]") from None
        n += 1
    return n
