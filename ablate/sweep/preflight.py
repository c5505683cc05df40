"""Sweep preflight: compose and fully validate every trial's config before Ray starts.

Grid and random searches: every planned trial (the random draws are seeded, so they are the
trials that will run). Optuna searches: every combination of the categorical axes, each with the
range params at their low and at their high ends and every choice value, so any value Optuna can
propose lies between two checked ones. Each config goes through ``validate_config``, the same
check ``ablate train`` runs (schema types and ranges, components, task data), so a trial that
would fail on its config fails here, with one line naming the field and the trial's overrides.

A factor whose levels differ only in components that cannot act under every trial's schedule
(e.g. a mask swept with one on-policy optimizer step per batch: π_θ = π_old, every clip a no-op)
would give identical runs; it is refused with one line (the components' ``Acts`` declarations,
ablate/component.py).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from ablate.errors import ConfigError
from ablate.sweep.space import SearchSpace, assignment_overrides, plan_trials
from ablate.sweep.trainables import resolve

OPTUNA_COMBOS_LIMIT = 256  # categorical combinations checked for an Optuna space


def optuna_assignments(space: SearchSpace) -> list[dict]:
    """Assignments that bound what Optuna may propose (see the module docstring)."""
    cats = space.categorical_axes()
    width = max([1] + [len(p.values) if p.type == "choice" else 2 for p in space.params.values()])
    out: list[dict] = []
    for combo in itertools.islice(itertools.product(*[o for _, o in cats]), OPTUNA_COMBOS_LIMIT):
        for i in range(width):
            a = {n: o for (n, _), o in zip(cats, combo)}
            for key, p in space.params.items():
                if not p.active(a):
                    continue
                if p.type == "choice":
                    a[key] = p.values[i % len(p.values)]
                else:
                    v = p.low if i % 2 == 0 else p.high
                    a[key] = int(v) if p.type == "int" else float(v)  # type: ignore[arg-type]
            out.append(a)
    return out


def trial_assignments(space: SearchSpace) -> list[dict]:
    specs = plan_trials(space)
    if specs is None:
        return optuna_assignments(space)
    # one per combination: seeds differ only in seed=, checked by the space itself
    return list({s["combo"]: s["assign"] for s in specs}.values())


def preflight(space: SearchSpace) -> int:
    """Validate every trial's composed config; returns how many were checked (0 when the
    trainable does not take ablate configs). Raises a one-line ConfigError for the first bad one."""
    if not resolve(space.trainable).validates:
        return 0
    from ablate.config import compose_config
    from ablate.train.validate import validate_config

    tasks: dict[str, Any] = {}
    checked: list[tuple[dict, tuple]] = []
    for a in trial_assignments(space):
        ov = space.run_overrides() + assignment_overrides(a) + [
            f"seed={space.seeds[0]}", "name=preflight"]
        try:
            cfg = compose_config(ov)
            validate_config(cfg, task_cache=tasks)
        except ConfigError as e:
            raise ConfigError(f"{e} [trial overrides: {' '.join(ov)}]") from None
        checked.append((a, trial_signature(cfg)))
    check_inert_factors(checked)
    return len(checked)


# keys of a run config that the built algorithm stands for (or that never change training)
ALGORITHM_KEYS = ("mask", "denominator", "advantage", "likelihood", "aggregation", "regularizers",
                  "objective", "pipeline", "critic", "method", "choices", "name", "seed", "run_dir")


def trial_signature(cfg) -> tuple:
    """What a trial's training depends on: the rest of its config, and its algorithm with every
    part that cannot act under its schedule reduced to the neutral choice."""
    from ablate.component import effective_signature, schedule_of
    from ablate.config import to_plain
    from ablate.train.components import build_algorithm

    algo = build_algorithm(cfg)
    rest = {k: v for k, v in to_plain(cfg).items() if k not in ALGORITHM_KEYS}
    schedule = schedule_of(algo, cfg.train.epochs, cfg.train.minibatches)
    return json.dumps(rest, sort_keys=True, default=str), effective_signature(algo, schedule)


def check_inert_factors(checked: list[tuple[dict, tuple]]) -> None:
    """Refuse (one line) a factor whose levels give equal signatures in every comparison: trials
    that differ only in that factor would train identically."""
    factors = sorted({k for a, _ in checked for k in a})
    for f in factors:
        groups: dict[str, dict[str, tuple]] = {}
        for a, sig in checked:
            if f not in a or a[f] is None:
                continue
            rest = repr(sorted((k, repr(v)) for k, v in a.items() if k != f))
            groups.setdefault(rest, {})[repr(a[f])] = sig
        compared = [g for g in groups.values() if len(g) > 1]
        if compared and all(len(set(g.values())) == 1 for g in compared):
            levels = sorted({lv for g in compared for lv in g})
            raise ConfigError(
                f"sweep factor {f}: its levels {', '.join(levels)} differ only in components that "
                "cannot act under any trial's schedule (one optimizer step per rollout batch, "
                "on-policy: π_θ = π_old at every update), so every level would train identically; "
                "set train.epochs or train.minibatches above 1 in base_overrides, or drop the factor")
