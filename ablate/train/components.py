"""Build a run's parts from its config: the objective (terms with their slots, regularizers) and
the pipeline stages. The trainer plans each step from ``Algorithm.needs()``, never from which
variant was chosen; adding a variant or a method only adds a YAML file and/or a class.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from omegaconf import DictConfig

from ablate.component import Component, Needs, union_needs
from ablate.errors import ConfigError
from ablate.objectives.base import Objective
from ablate.pipeline.base import Stage
from ablate.pipeline.stages import build_stages
from ablate.registry import build, component_params, plain
from ablate.spec.targets import resolve

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
    cls = resolve("term", term_cfg["_target_"], f"{field}._target_")
    out = dict(term_cfg)
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
    cc = plain(cfg.get("critic")) or DEFAULT_CRITIC
    return build("critic", cc, "critic")


def build_algorithm(cfg: DictConfig) -> Algorithm:
    pipe = plain(cfg.get("pipeline")) or {}
    extra = sorted(set(pipe) - {"stages"}) if isinstance(pipe, Mapping) else []
    if extra:
        raise ConfigError(f"pipeline: unknown key(s) {', '.join(map(str, extra))}; allowed: stages")
    stages = build_stages(pipe.get("stages", []))
    objective = build_objective(cfg)
    if union_needs([objective, *stages]).values:
        critic = build_critic(cfg)
    else:  # unused, but still vetted: a bad critic is an error, not a dormant one
        cc = plain(cfg.get("critic")) or DEFAULT_CRITIC
        resolve("critic", cc.get("_target_") if isinstance(cc, Mapping) else cc, "critic._target_")
        critic = None
    return Algorithm(objective=objective, stages=stages, critic=critic)
