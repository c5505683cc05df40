"""Compose a run's config from conf/ with the Hydra compose API (scoped: safe inside Ray workers),
then validate it against the typed schema (ablate/schema.py) before anything is created."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Optional, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from ablate.adapters import apply_value_overrides
from ablate.errors import ConfigError, choice_error
from ablate.registry import conf_dir, plain
from ablate.schema import RunConfig, check, check_key, model_defaults, root_defaults
from ablate.spec.groups import GROUPS


def _group_options(group: str) -> list[str]:
    d = conf_dir() / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def check_overrides(overrides: Sequence[str]) -> None:
    """Fail with one line for ``group=unknown`` or an unknown schema key (``train.stpes=3``)
    before Hydra prints its multi-line error."""
    for ov in overrides:
        key, sep, val = ov.lstrip("+~").partition("=")
        if "." in key:
            check_key(key)
        if sep and key in GROUPS and val and val not in _group_options(key) and "," not in val:
            raise choice_error(key, val, _group_options(key))


def register_defaults() -> None:
    """Put the schema's defaults into Hydra's ConfigStore: ``ablate_root`` (top-level scalars,
    train, eval; first in conf/config.yaml's defaults) and ``model/schema`` (conf/model/*.yaml
    extend it). The schema is then the one source of defaults."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="ablate_root", node=root_defaults())
    cs.store(group="model", name="schema", node=model_defaults())


_BASE_CACHE: "OrderedDict[tuple, DictConfig]" = OrderedDict()
_BASE_CACHE_SIZE = 32


def _is_group_override(ov: str) -> bool:
    """``mask=none``, ``+pipeline=dapo``, ``~regularizers``, ``hydra.*``: they shape the defaults
    list. Everything else (``train.lr=3e-4``, ``mask.eps_low=0.3``) is a value override."""
    key = ov.lstrip("+~").partition("=")[0].split("@")[0]
    return key in GROUPS or key.startswith("hydra") or (conf_dir() / key).is_dir()


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved run config; ``cfg.choices`` records which file each group came from.

    Hydra composes the defaults list (group choices) and then applies the value overrides to the
    merged config; the composed config of each set of group choices is cached, and the value
    overrides are applied to a copy with Hydra's own parser and override code, so repeated
    composes (a sweep preflight over every trial) cost a copy instead of a full compose."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    check_overrides(overrides)
    register_defaults()
    groups = [o for o in overrides if _is_group_override(o)]
    values = [o for o in overrides if not _is_group_override(o)]
    try:
        key = (str(conf_dir()), tuple(groups))
        base = _BASE_CACHE.get(key)
        if base is None:
            base = _compose_groups(groups)
            _BASE_CACHE[key] = base
            while len(_BASE_CACHE) > _BASE_CACHE_SIZE:
                _BASE_CACHE.popitem(last=False)
        else:
            _BASE_CACHE.move_to_end(key)
        cfg = copy.deepcopy(base)
        if values:
            apply_value_overrides(cfg, values)
    except (HydraException, OmegaConfBaseException) as e:
        msg = " ".join(str(e).split())
        raise ConfigError(f"config: {msg}") from None
    return cfg


def _compose_groups(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    choices = {g: cfg.hydra.runtime.choices.get(g) for g in GROUPS}
    with open_dict(cfg):
        del cfg["hydra"]
        cfg["choices"] = choices
    return cfg


def to_plain(cfg: DictConfig) -> dict:
    return plain(cfg)


def _plain_checked(cfg: Any) -> dict:
    """Resolved plain dict; a missing mandatory value (``???``) is a one-line error naming it."""
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if not isinstance(cfg, (DictConfig, dict)):
        raise ConfigError(f"config: got {cfg!r}; allowed: a mapping")
    if isinstance(cfg, dict):
        cfg = OmegaConf.create(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        key = e.full_key or "config"
        raise ConfigError(f"{key}: required value is missing (set {key}=...)") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{e.full_key or 'config'}: {' '.join(str(e).split())[:300]}") from None


def check_run(cfg: Any, *, cuda_available: Optional[bool] = None) -> RunConfig:
    """The typed ``RunConfig`` of a composed run config (schema: types and ranges of every plain
    field) whose device exists; a one-line ConfigError for the first problem. Components are built
    and checked one layer up, by ablate.train.validate.validate_config."""
    run = check(RunConfig, _plain_checked(cfg))
    _check_device(run.device, cuda_available)
    return run


def _check_device(dev: str, cuda_available: Optional[bool]) -> None:
    if not dev.startswith("cuda"):
        return
    import torch

    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        raise ConfigError(f"device: got {dev!r}, but CUDA is not available here; "
                          "allowed: cpu, auto")
    if ":" in dev:
        n = torch.cuda.device_count()
        if int(dev.split(":")[1]) >= n:
            raise ConfigError(f"device: got {dev!r}; allowed: cpu, auto, cuda, "
                              f"cuda:0..cuda:{n - 1} ({n} GPU(s) here)")
