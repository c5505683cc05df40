"""Rollout engines: ``hf`` (transformers generate; default, CPU or GPU) and ``vllm`` (GPU extra).

``build_engine(cfg)`` instantiates ``cfg._target_`` with the remaining keys as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ablate.rollout.base import RolloutEngine, RolloutOutput

__all__ = ["RolloutEngine", "RolloutOutput", "Budget", "build_engine", "pin_budget", "resolve_budget"]


def build_engine(rollout_cfg: Any) -> RolloutEngine:
    """Instantiate the engine of ``rollout_cfg`` (``{_target_, **params}`` or a conf/rollout name)."""
    from ablate.registry import build

    return build("rollout", rollout_cfg, "rollout")  # vetted as a RolloutEngine before the call


DEFAULT_BUDGET = 64  # tokens, when neither rollout.max_new_tokens nor the task sets a budget


@dataclass(frozen=True)
class Budget:
    """The effective generation budget of a run and where it came from (printed once at start)."""

    tokens: int
    source: str  # "rollout.max_new_tokens", "task.max_new_tokens" or "default"
    task_tokens: Optional[int] = None  # what the task declares it needs (None = nothing)

    def describe(self) -> str:
        if self.source == "rollout.max_new_tokens":
            why = f"rollout.max_new_tokens={self.tokens}"
            if self.task_tokens:
                why += f"; the task asks for {self.task_tokens}"
                if self.tokens < self.task_tokens:
                    why += ": answers may be truncated"
        elif self.source == "task.max_new_tokens":
            why = "task.max_new_tokens; rollout.max_new_tokens is null"
        else:
            why = "default; neither rollout.max_new_tokens nor the task sets one"
        return f"generation budget: {self.tokens} tokens ({why}); length constants L_max use it"


def resolve_budget(rollout_max_new_tokens: Optional[int], task: Any) -> Budget:
    """The one budget rule: ``rollout.max_new_tokens`` when set wins (it may shorten generation
    below the task's own budget); otherwise the task's ``max_new_tokens``; otherwise
    DEFAULT_BUDGET. Resolved once the task is built, before any loss constant is read."""
    need = getattr(task, "max_new_tokens", None)
    need = int(need) if need else None
    if rollout_max_new_tokens is not None:
        return Budget(int(rollout_max_new_tokens), "rollout.max_new_tokens", need)
    if need:
        return Budget(need, "task.max_new_tokens", need)
    return Budget(DEFAULT_BUDGET, "default", None)


def pin_budget(cfg: Any, task: Any) -> Budget:
    """Resolve the budget of a composed run config for its built task and write it into
    ``cfg.rollout.max_new_tokens``, so every ``${rollout.max_new_tokens}`` read afterwards (the
    length constants L_max of Dr.GRPO, HPT, DPPO) is the budget generation really uses."""
    budget = resolve_budget(cfg.rollout.get("max_new_tokens"), task)
    cfg.rollout.max_new_tokens = budget.tokens
    return budget
