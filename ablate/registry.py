"""Registry over `_target_` strings: build slots from config with one-line errors, list variants.

A variant is a YAML file under ``conf/<family>/<name>.yaml`` holding ``_target_`` and parameters.
A new parameterisation of an existing class is a new YAML file; a new class is any importable
subclass of the family base, referenced by ``_target_``.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ablate.errors import ConfigError, choice_error
from ablate.spec.params import ParamError
from ablate.spec.groups import SLOT_FAMILIES, base_name
from ablate.spec.targets import FAMILY_BASES, base_of, resolve
from ablate.spec.yaml import load_file


def component_params(cls: type) -> list[str]:
    """``cls``'s parameters that take a slot component: a parameter named after a slot family and
    annotated with its base class is built as a component of that family (from a variant name or
    a mapping)."""
    return [n for n, p in params_of(cls).items()
            if n in SLOT_FAMILIES and base_name(n) in str(p.annotation)]


def families() -> dict[str, type]:
    """Family name → base class that every ``_target_`` of the family must subclass."""
    return {f: base_of(f) for f in FAMILY_BASES}


def conf_dir() -> Path:
    """Absolute path of the Hydra config tree (``ABLATE_CONF_DIR`` overrides the repo's ``conf/``)."""
    return Path(os.environ.get("ABLATE_CONF_DIR") or Path(__file__).parent.parent / "conf").resolve()


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
    cls = resolve(family, cfg["_target_"], f"{field}._target_")
    check_params(cls, params, field)
    named = component_params(cls)
    built = {k: build(k, v, f"{field}.{k}") if k in named and k != family and isinstance(v, (str, Mapping))
             else _build_nested(family, v, f"{field}.{k}") for k, v in params.items()}
    try:
        return cls(**built)
    except ParamError as e:  # from the constructor's typed parameters: name the config field
        raise e.at(field) from None
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{field}: {cls.__name__}: {e}") from None


def check_params(cls: type, params: Mapping[str, Any], field: str) -> None:
    """Every given parameter is one of ``cls``'s, and every required one is given."""
    allowed = params_of(cls)
    for k in params:
        if k not in allowed:
            raise choice_error(f"{field}: parameter of {cls.__name__}", k, allowed) if allowed else \
                ConfigError(f"{field}: {cls.__name__} takes no parameters, got {k!r}")
    missing = [n for n, p in allowed.items() if p.default is inspect.Parameter.empty and n not in params]
    if missing:
        raise ConfigError(f"{field}: {cls.__name__} needs parameter(s) {', '.join(missing)}")


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
    data = load_file(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with _target_, got {type(data).__name__}")
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
            try:
                cls = resolve(fam, target, f"{fam}/{name}._target_")
                params = {n: None if p.default is p.empty else p.default for n, p in params_of(cls).items()}
                doc = ((inspect.getdoc(cls) or "").splitlines() or [""])[0]
            except ConfigError as e:
                params, doc = {}, f"ERROR: {e}"
            params.update({k: v for k, v in cfg.items() if k != "_target_"})
            out.append(VariantInfo(fam, name, target, params, doc))
    return out
