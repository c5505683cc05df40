"""Registry over `_target_` strings: build slots from config with one-line errors, list variants.

A variant is a YAML file under ``conf/<family>/<name>.yaml`` holding ``_target_`` and parameters.
A new parameterisation of an existing class is a new YAML file; a new class is any importable
subclass of the family base, referenced by ``_target_``.
"""

from __future__ import annotations

import importlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from ablate.errors import ConfigError, choice_error
from ablate.spec.groups import FAMILY_BASES, SLOT_FAMILIES, base_name


def component_params(cls: type) -> dict[str, str]:
    """{parameter: family} for ``cls``'s parameters that take a slot component: a parameter named
    after a slot family and annotated with its base class is built as a component of that family
    (from a variant name or a mapping)."""
    out = {}
    for name, p in params_of(cls).items():
        if name in SLOT_FAMILIES and base_name(name) in str(p.annotation):
            out[name] = name
    return out


def families() -> dict[str, type]:
    """Family name → base class that every ``_target_`` of the family must subclass (resolved by
    name from ablate.spec.groups, so the registry imports no package above it)."""
    out = {}
    for fam, path in FAMILY_BASES.items():
        mod, _, cls = path.rpartition(".")
        out[fam] = getattr(importlib.import_module(mod), cls)
    return out


def conf_dir() -> Path:
    """Absolute path of the Hydra config tree (``ABLATE_CONF_DIR`` overrides the repo's ``conf/``)."""
    env = os.environ.get("ABLATE_CONF_DIR")
    if env:
        return Path(env).resolve()
    return (Path(__file__).resolve().parent.parent / "conf").resolve()


def import_target(target: str, field: str = "_target_") -> Any:
    mod_name, _, attr = target.rpartition(".")
    if not mod_name:
        raise ConfigError(f"{field}: {target!r} is not a dotted import path (module.Class)")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"{field}: cannot import module {mod_name!r} of {target!r} ({e})") from None
    try:
        return getattr(mod, attr)
    except AttributeError:
        public = [n for n in dir(mod) if not n.startswith("_") and inspect.isclass(getattr(mod, n))]
        raise choice_error(f"{field} ({mod_name})", attr, public) from None


def params_of(cls: type) -> dict[str, inspect.Parameter]:
    sig = inspect.signature(cls.__init__)
    return {n: p for n, p in sig.parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def plain(cfg: Any) -> Any:
    """OmegaConf node → plain dict/list (resolved); anything else unchanged."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def build(family: str, cfg: Any, field: str | None = None) -> Any:
    """Instantiate one component of ``family`` from ``{_target_: ..., **params}``.

    Nested dicts with a ``_target_`` (e.g. the parts of a composed mask) are built recursively: a
    parameter named after a family (``mask``, ``advantage``, ``aggregation``, ...) as that family (a
    bare string is then a variant name), any other as the same family.
    """
    field = field or family
    cfg = plain(cfg)
    if isinstance(cfg, str):  # a bare variant name: look it up in conf/<family>/
        cfg = load_variant(family, cfg)
    if not isinstance(cfg, Mapping) or "_target_" not in cfg:
        raise ConfigError(f"{field}: expected a mapping with _target_, got {cfg!r}")
    params = {k: v for k, v in cfg.items() if k != "_target_"}
    cls = import_target(str(cfg["_target_"]), f"{field}._target_")
    base = families().get(family)
    if base is not None and not (inspect.isclass(cls) and issubclass(cls, base)):
        raise ConfigError(f"{field}._target_: {cfg['_target_']} is not a {base.__name__} "
                          f"(subclass ablate.upge.slots.base.{base.__name__})")
    allowed = params_of(cls)
    for k in params:
        if k not in allowed:
            raise choice_error(f"{field}: parameter of {cls.__name__}", k, allowed) if allowed else \
                ConfigError(f"{field}: {cls.__name__} takes no parameters, got {k!r}")
    missing = [n for n, p in allowed.items() if p.default is inspect.Parameter.empty and n not in params]
    if missing:
        raise ConfigError(f"{field}: {cls.__name__} needs parameter(s) {', '.join(missing)}")
    built = {}
    named = component_params(cls)
    for k, v in params.items():
        if k in named and named[k] != family and isinstance(v, (str, Mapping)):
            built[k] = build(named[k], v, f"{field}.{k}")
        else:
            built[k] = _build_nested(family, v, f"{field}.{k}")
    try:
        return cls(**built)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{field}: {cls.__name__}: {e}") from None


def _build_nested(family: str, v: Any, field: str) -> Any:
    if isinstance(v, Mapping) and "_target_" in v:
        return build(family, v, field)
    if isinstance(v, list) and v and all(isinstance(x, Mapping) and "_target_" in x for x in v):
        return [build(family, x, f"{field}[{i}]") for i, x in enumerate(v)]
    return v


def variant_names(family: str) -> list[str]:
    d = conf_dir() / family
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def load_variant(family: str, name: str) -> dict:
    path = conf_dir() / family / f"{name}.yaml"
    if not path.is_file():
        raise choice_error(family, name, variant_names(family))
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    data.pop("defaults", None)
    return data


@dataclass
class VariantInfo:
    family: str
    name: str
    target: str
    params: dict[str, Any]  # effective defaults: class signature overlaid by the YAML
    doc: str


def describe_variants(families: tuple[str, ...] = SLOT_FAMILIES) -> list[VariantInfo]:
    """Every YAML variant of every family with its class, parameters and their defaults."""
    out: list[VariantInfo] = []
    for fam in families:
        for name in variant_names(fam):
            cfg = load_variant(fam, name)
            target = str(cfg.get("_target_", ""))
            params: dict[str, Any] = {}
            doc = ""
            try:
                cls = import_target(target)
                for n, p in params_of(cls).items():
                    params[n] = None if p.default is inspect.Parameter.empty else p.default
                doc = (inspect.getdoc(cls) or "").splitlines()[0] if inspect.getdoc(cls) else ""
            except ConfigError as e:
                doc = f"ERROR: {e}"
            params.update({k: v for k, v in cfg.items() if k != "_target_"})
            out.append(VariantInfo(fam, name, target, params, doc))
    return out
