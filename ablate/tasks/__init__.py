"""Verifiable tasks (synthetic arithmetic / countdown, local JSONL math sets) built from config.

``build_task(cfg)`` takes ``{_target_: ..., **params}`` (a Hydra node, a dict, or a variant name
under ``conf/task/``) and returns a :class:`ablate.tasks.base.Task`.
"""

from __future__ import annotations

from typing import Any

from ablate.errors import ConfigError
from ablate.tasks.base import Problem, Reward, Task

__all__ = ["Problem", "Reward", "Task", "build_task"]


def build_task(task_cfg: Any) -> Task:
    """Instantiate the task of ``task_cfg`` with one-line ConfigErrors for unknown/missing fields."""
    from ablate.registry import build, load_variant
    from ablate.tasks.chat import PROMPT_FORMATS

    cfg = _plain(task_cfg)
    if isinstance(cfg, str):  # a variant name under conf/task/
        cfg = load_variant("task", cfg)
    fmt, system = "raw", None
    if isinstance(cfg, dict):
        cfg = dict(cfg)
        fmt = cfg.pop("prompt_format", "raw")
        system = cfg.pop("system_prompt", None)
    if fmt not in PROMPT_FORMATS:
        raise ConfigError(f"task.prompt_format: unknown value {fmt!r}; allowed: {', '.join(PROMPT_FORMATS)}")
    if system is not None and not isinstance(system, str):
        raise ConfigError(f"task.system_prompt: expected text or null, got {system!r}")
    task = build("task", cfg, "task")  # the registry checks the class is a Task before calling it
    task.prompt_format, task.system_prompt = fmt, system
    return task


def _plain(cfg: Any) -> Any:
    """OmegaConf → plain dict, turning a missing mandatory value (``???``) into a ConfigError."""
    try:
        from omegaconf import DictConfig, OmegaConf
        from omegaconf.errors import MissingMandatoryValue
    except ImportError:  # pragma: no cover
        return cfg
    if isinstance(cfg, DictConfig):
        for key in cfg:
            if OmegaConf.is_missing(cfg, key):
                raise ConfigError(f"task.{key}: required value is missing; allowed: set task.{key}=...")
        try:
            return OmegaConf.to_container(cfg, resolve=True)
        except MissingMandatoryValue as e:  # pragma: no cover - nested ???
            raise ConfigError(f"task: required value is missing ({e.full_key})") from None
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            if v == "???":
                raise ConfigError(f"task.{k}: required value is missing; allowed: set task.{k}=...")
    return cfg
