"""Build a run's parts from its config: the objective (terms with their slots, regularizers) and
the pipeline stages. The trainer plans each step from ``Algorithm.needs()``, never from which
variant was chosen; adding a variant or a method only adds a YAML file and/or a class.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Optional

from omegaconf import DictConfig

from ablate.component import Component, Needs, union_needs
from ablate.errors import ConfigError
from ablate.objectives.base import Objective
from ablate.pipeline.base import Stage
from ablate.pipeline.stages import build_stages
from ablate.registry import build, component_params, import_target, plain

DEFAULT_OBJECTIVE = {"terms": {"pg": {"_target_": "ablate.objectives.upge.UPGETerm"}}}


class Algorithm(Component):
    """Everything method-specific of a run: the objective, the pipeline stages, and the value model
    (``critic``, built only when some component declares ``Needs(values=True)``)."""

    family = "algorithm"

    def __init__(self, objective: Objective, stages: list[Stage], critic: Optional[Component] = None):
        self.objective = objective
        self.stages = list(stages)
        self.critic = critic

    def needs(self) -> Needs:
        return union_needs([self.objective, *self.stages, *([self.critic] if self.critic else [])])


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


DEFAULT_CRITIC = {"_target_": "ablate.critic.ValueModel"}


def build_critic(cfg: DictConfig) -> Component:
    """The ``critic`` config group (conf/critic/): a value model component."""
    from ablate.critic import ValueModel

    cc = plain(cfg.get("critic")) or DEFAULT_CRITIC
    if not isinstance(cc, Mapping) or "_target_" not in cc:
        raise ConfigError(f"critic: expected a mapping with _target_, got {cc!r}")
    cls = import_target(str(cc["_target_"]), "critic._target_")
    if not (inspect.isclass(cls) and issubclass(cls, ValueModel)):
        raise ConfigError(f"critic._target_: {cc['_target_']} is not a value model "
                          "(subclass ablate.critic.ValueModel)")
    params = {k: v for k, v in cc.items() if k != "_target_"}
    from ablate.registry import params_of

    allowed = params_of(cls)
    for k in params:
        if k not in allowed:
            raise ConfigError(f"critic: unknown parameter {k!r}; allowed: {', '.join(allowed)}")
    return cls(**params)


def build_algorithm(cfg: DictConfig) -> Algorithm:
    stages = build_stages((cfg.get("pipeline") or {}).get("stages", []))
    objective = build_objective(cfg)
    critic = build_critic(cfg) if union_needs([objective, *stages]).values else None
    return Algorithm(objective=objective, stages=stages, critic=critic)
