"""Build a run's parts from its config: the objective (terms with their slots, regularizers) and
the pipeline stages. The trainer plans each step from ``Algorithm.needs()``, never from which
variant was chosen; adding a variant or a method only adds a YAML file and/or a class.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping

from omegaconf import DictConfig

from ablate.component import Component, Needs, union_needs
from ablate.errors import ConfigError
from ablate.objectives.base import Objective
from ablate.pipeline.base import Stage
from ablate.pipeline.stages import build_stages
from ablate.registry import build, component_params, import_target, plain

DEFAULT_OBJECTIVE = {"terms": {"pg": {"_target_": "ablate.objectives.upge.UPGETerm"}}}


class Algorithm(Component):
    """Everything method-specific of a run: the objective and the pipeline stages."""

    family = "algorithm"

    def __init__(self, objective: Objective, stages: list[Stage]):
        self.objective = objective
        self.stages = list(stages)

    def needs(self) -> Needs:
        return union_needs([self.objective, *self.stages])


def _inherit(term_cfg: Mapping[str, Any], root: DictConfig, field: str) -> dict:
    """Fill a term's slot parameters it leaves unset (``mask``, ``advantage``, ...) from the run's
    top-level choices, so ``mask=...`` on the command line reaches the objective."""
    if not isinstance(term_cfg, Mapping) or "_target_" not in term_cfg:
        raise ConfigError(f"{field}: expected a mapping with _target_, got {term_cfg!r}")
    cls = import_target(str(term_cfg["_target_"]), f"{field}._target_")
    out = dict(term_cfg)
    if inspect.isclass(cls):
        for name in component_params(cls):
            if out.get(name) is None and root.get(name) is not None:
                out[name] = plain(root[name])
    return out


def build_objective(cfg: DictConfig) -> Objective:
    regs_cfg = plain(cfg.get("regularizers")) or {}
    regs = {name: build("regularizer", rc, f"regularizers.{name}") for name, rc in regs_cfg.items()}
    obj_cfg = plain(cfg.get("objective")) or DEFAULT_OBJECTIVE
    terms_cfg = obj_cfg.get("terms") if isinstance(obj_cfg, Mapping) else None
    if not isinstance(terms_cfg, Mapping) or not terms_cfg:
        raise ConfigError(f"objective.terms: expected a mapping of term name → {{_target_: ...}}, got {terms_cfg!r}")
    extra = sorted(set(obj_cfg) - {"terms"})
    if extra:
        raise ConfigError(f"objective: unknown key(s) {', '.join(extra)}; allowed: terms")
    terms = {}
    for name, tc in terms_cfg.items():
        field = f"objective.terms.{name}"
        terms[str(name)] = build("term", _inherit(tc, cfg, field), field)
    return Objective(terms, regs)


def build_algorithm(cfg: DictConfig) -> Algorithm:
    stages = build_stages((cfg.get("pipeline") or {}).get("stages", []))
    return Algorithm(objective=build_objective(cfg), stages=stages)
