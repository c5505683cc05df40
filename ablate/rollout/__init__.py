"""Rollout engines: ``hf`` (transformers generate; default, CPU or GPU) and ``vllm`` (GPU extra).

``build_engine(cfg)`` instantiates ``cfg._target_`` with the remaining keys as parameters.
"""

from __future__ import annotations

from typing import Any

from ablate.rollout.base import RolloutEngine, RolloutOutput

__all__ = ["RolloutEngine", "RolloutOutput", "build_engine", "resolve_max_new_tokens"]


def build_engine(rollout_cfg: Any) -> RolloutEngine:
    """Instantiate the engine of ``rollout_cfg`` (``{_target_, **params}`` or a conf/rollout name)."""
    from ablate.registry import build

    return build("rollout", rollout_cfg, "rollout")  # vetted as a RolloutEngine before the call


def resolve_max_new_tokens(rollout_max_new_tokens: int, task: Any) -> int:
    """Generation budget: the rollout config's, raised to what the task declares it needs."""
    need = getattr(task, "max_new_tokens", None)
    return max(int(rollout_max_new_tokens), int(need)) if need else int(rollout_max_new_tokens)
