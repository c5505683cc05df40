"""Build a run's parts from its config: the estimator's slots, the advantage slot, the stages.

The trainer never looks at which variant was chosen; adding a variant only adds a YAML/class.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from ablate.pipeline.base import Stage
from ablate.pipeline.stages import build_stages
from ablate.registry import build, plain
from ablate.upge.estimator import UPGE
from ablate.upge.slots.base import Advantage


@dataclass
class Algorithm:
    estimator: UPGE
    advantage: Advantage
    stages: list[Stage]

    @property
    def needs_ref_model(self) -> bool:
        return any(getattr(r, "needs_ref_model", False) and r.coef != 0
                   for r in self.estimator.regularizers.values())

    @property
    def needs_entropy(self) -> bool:
        """Some mask reads token entropy (e.g. top-entropy); else it is only a metric."""
        return bool(getattr(self.estimator.mask, "needs_entropy", False))


def build_algorithm(cfg: DictConfig) -> Algorithm:
    regs_cfg = plain(cfg.get("regularizers")) or {}
    regs = {name: build("regularizer", rc, f"regularizers.{name}") for name, rc in regs_cfg.items()}
    est = UPGE(mask=build("mask", cfg.mask), denominator=build("denominator", cfg.denominator),
               likelihood=build("likelihood", cfg.likelihood),
               aggregation=build("aggregation", cfg.aggregation), regularizers=regs)
    stages = build_stages((cfg.get("pipeline") or {}).get("stages", []))
    return Algorithm(estimator=est, advantage=build("advantage", cfg.advantage), stages=stages)
