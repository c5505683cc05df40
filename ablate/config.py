"""Compose a run's config from conf/ with the Hydra compose API (scoped: safe inside Ray workers),
then validate it against the typed schema (ablate/schema.py) before anything is created."""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from ablate.adapters import apply_value_overrides
from ablate.errors import ConfigError, choice_error
from ablate.registry import conf_dir, plain, variant_names
from ablate.schema import RunConfig, check_key, model_defaults, root_defaults
from ablate.spec.translate import check
from ablate.spec.groups import GROUPS


_INTERP = re.compile(r"\$\{")
_REF = re.compile(r"\.*[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


def check_interpolation(value: str, field: str) -> None:
    """A user value may reference another config key (``${rollout.max_new_tokens}``) and nothing
    else: no resolver (``${oc.env:WANDB_API_KEY}`` would copy a secret into config.yaml, the run
    summary and the W&B run), no nesting."""
    for m in _INTERP.finditer(value):
        end = value.find("}", m.end())
        inner = value[m.end():end] if end >= 0 else value[m.end():]
        if end < 0 or not _REF.fullmatch(inner):
            shown = value[m.start():end + 1] if end >= 0 else value[m.start():]
            raise ConfigError(f"{field}: interpolation {shown[:60]!r} is not allowed; allowed: "
                              "${a.b} references to other config keys (no resolvers such as "
                              "oc.env: a config is data and never reads the environment)")


def _entries(data: Any, path: str) -> Iterator[tuple[str, str, Any, Any]]:
    """(parent path, path, key, value) of every mapping entry and list item under ``data``,
    depth first: ``a.b[0]``."""
    if isinstance(data, dict):
        items = [(k, f"{path}.{k}" if path else str(k), v) for k, v in data.items()]
    elif isinstance(data, (list, tuple)):
        items = [(i, f"{path}[{i}]", v) for i, v in enumerate(data)]
    else:
        return
    for k, here, v in items:
        yield path, here, k, v
        yield from _entries(v, here)


def check_interpolations(data: Any, field: str) -> None:
    """``check_interpolation`` on every string (keys included) of a parsed YAML document."""
    if isinstance(data, str):
        check_interpolation(data, field)
    for parent, here, k, v in _entries(data, field):
        if isinstance(k, str):  # a key is named by its parent's path
            check_interpolation(k, parent)
        if isinstance(v, str):
            check_interpolation(v, here)


def check_overrides(overrides: Sequence[str]) -> None:
    """Fail with one line for ``group=unknown``, an unknown schema key (``train.stpes=3``), a
    resolver in a value, or a list of group choices (``method=[grpo,dapo]``: a sweep's job)
    before Hydra prints its multi-line error."""
    for ov in overrides:
        if not isinstance(ov, str):
            raise ConfigError(f"override: got {ov!r}; allowed: key=value text")
        check_interpolation(ov, f"override {ov[:60]!r}")
        key, sep, val = ov.lstrip("+~").partition("=")
        if key.split("/")[0].split(".")[0].split("@")[0] == "hydra":
            raise ConfigError(f"{key}: Hydra's own settings (search path, output dirs) are not "
                              "run config; allowed: the keys of conf/config.yaml and its groups")
        if "." in key:
            check_key(key)
        if sep and key in GROUPS and val.strip().startswith("["):
            raise ConfigError(f"{key}: got {val!r}; allowed: one of {', '.join(variant_names(key))} "
                              "(one run takes one choice; sweep several with `ablate sweep`)")
        if sep and key in GROUPS and val and val not in variant_names(key) and "," not in val:
            raise choice_error(key, val, variant_names(key))
        if not sep and ov.startswith("~") and key in ROOT_REQUIRED:
            raise ConfigError(f"{ov}: {key} cannot be removed; allowed: set its fields "
                              f"({key}.<field>=value)")


ROOT_REQUIRED = ("train", "eval", "model", "rollout", "tracker", "task", "resources", "seed",
                 "device")


def check_output_dir(path: Any, field: str, allow_outside: bool) -> Path:
    """An output directory lies inside the working directory unless the user allowed otherwise
    on the command line (``--allow-outside``); returns it resolved."""
    p = Path(str(path)).expanduser()
    resolved = (Path.cwd() / p).resolve()
    if not allow_outside:
        cwd = Path.cwd().resolve()
        if resolved != cwd and cwd not in resolved.parents:
            raise ConfigError(f"{field}: got {str(path)!r}, outside the working directory {cwd}; "
                              "allowed: a path inside it, or pass --allow-outside")
    return resolved


def register_defaults() -> None:
    """Put the schema's defaults into Hydra's ConfigStore: ``ablate_root`` (top-level scalars,
    train, eval; first in conf/config.yaml's defaults) and ``model/schema`` (conf/model/*.yaml
    extend it). The schema is then the one source of defaults."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="ablate_root", node=root_defaults())
    cs.store(group="model", name="schema", node=model_defaults())


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
        cfg = copy.deepcopy(_compose_groups(str(conf_dir()), tuple(groups)))
        if values:
            apply_value_overrides(cfg, values)
    except (HydraException, OmegaConfBaseException) as e:
        msg = " ".join(str(e).split())
        m = re.match(r"Could not override '([^']+)'", msg)
        if m:
            raise ConfigError(f"{m.group(1)}: not a key of the composed config; allowed: a key "
                              f"it has (see conf/), or +{m.group(1)}=... to add one") from None
        raise ConfigError(f"config: {msg}") from None
    return cfg


@functools.lru_cache(maxsize=32)
def _compose_groups(config_dir: str, overrides: tuple[str, ...]) -> DictConfig:
    """The composed config of one set of group choices (cached: callers deep-copy it)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    choices = {g: cfg.hydra.runtime.choices.get(g) for g in GROUPS}
    with open_dict(cfg):
        del cfg["hydra"]
        cfg["choices"] = choices
    return cfg


to_plain = plain  # the composed config as a plain dict (its callers' name)


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
        raise ConfigError(f"{key}: required value is missing; allowed: set {key}=...") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{e.full_key or 'config'}: {' '.join(str(e).split())[:300]}") from None


def check_run(cfg: Any, *, cuda_available: Optional[bool] = None) -> RunConfig:
    """The typed ``RunConfig`` of a composed run config (schema: types and ranges of every plain
    field; every ``_target_`` on the allow-list) whose device, dtype, GPU request and checkpoint
    path exist here; a one-line ConfigError for the first problem. Components are built and
    checked one layer up, by ablate.train.validate.validate_config."""
    data = _plain_checked(cfg)
    check_targets(data)
    run = check(RunConfig, data)
    _check_device(run.device, cuda_available)
    mp = run.model.path
    if mp is not None and mp.startswith(("/", ".", "~")) and \
            not (Path(mp).expanduser() / "config.json").is_file():
        raise ConfigError(f"model.path: got {run.model.path!r}, which holds no config.json; "
                          "allowed: a local Hugging Face checkpoint directory, or null (tiny model)")
    gpus = run.resources.gpu_per_worker
    if gpus > 0 and not _cuda(cuda_available):
        raise ConfigError(f"resources.gpu_per_worker: got {gpus:g}, but CUDA is not available "
                          "here; allowed: 0")
    if run.model.dtype == "float16" and (run.device == "cpu" or not _cuda(cuda_available)):
        raise ConfigError(f"model.dtype: got 'float16' with device={run.device!r}; allowed on CPU: "
                          "float32, bfloat16 (float16 needs a GPU)")
    return run


def _cuda(cuda_available: Optional[bool]) -> bool:
    """Whether CUDA is usable here (``cuda_available`` given, or asked of torch)."""
    if cuda_available is None:
        import torch
        return torch.cuda.is_available()
    return bool(cuda_available)


def check_targets(data: Any, path: str = "") -> None:
    """Every ``_target_`` anywhere in the config is on the allow-list (ablate.* or a --plugins
    module), including ones that this run would never build (a critic the method does not use,
    a stray ``+pipeline.x``): a config naming ``os.system`` is an error, not something dormant."""
    from ablate.spec.targets import check_path

    for _, here, k, v in _entries(data, path):
        if k == "_target_":
            check_path(v, here)


def _check_device(dev: str, cuda_available: Optional[bool]) -> None:
    if not dev.startswith("cuda"):
        return
    if not _cuda(cuda_available):
        raise ConfigError(f"device: got {dev!r}, but CUDA is not available here; "
                          "allowed: cpu, auto")
    if ":" in dev:
        import torch

        n = torch.cuda.device_count()
        if int(dev.split(":")[1]) >= n:
            raise ConfigError(f"device: got {dev!r}; allowed: cpu, auto, cuda, "
                              f"cuda:0..cuda:{n - 1} ({n} GPU(s) here)")
