"""Compose a run's config from conf/ with the Hydra compose API (scoped: safe inside Ray workers)."""

from __future__ import annotations

from typing import Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from ablate.errors import ConfigError, choice_error
from ablate.registry import conf_dir, plain

GROUPS = ("mask", "denominator", "advantage", "likelihood", "aggregation", "regularizers",
          "objective", "pipeline", "task", "model", "rollout", "tracker", "method")


def _group_options(group: str) -> list[str]:
    d = conf_dir() / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def check_overrides(overrides: Sequence[str]) -> None:
    """Fail with one line for ``group=unknown`` before Hydra prints its multi-line error."""
    for ov in overrides:
        key, sep, val = ov.lstrip("+~").partition("=")
        if sep and key in GROUPS and val and val not in _group_options(key) and "," not in val:
            raise choice_error(key, val, _group_options(key))


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved run config; ``cfg.choices`` records which file each group came from."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    check_overrides(overrides)
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as e:
        msg = " ".join(str(e).split())
        raise ConfigError(f"config: {msg}") from None
    choices = {g: cfg.hydra.runtime.choices.get(g) for g in GROUPS}
    with open_dict(cfg):
        del cfg["hydra"]
        cfg["choices"] = choices
    return cfg


def to_plain(cfg: DictConfig) -> dict:
    return plain(cfg)
