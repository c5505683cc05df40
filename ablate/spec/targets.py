"""The one ``_target_`` resolution: allow-list → import → subclass-of-the-family-base check.

A config file (an override, a conf variant, a shared search space) is data. The class it names is
imported only when its dotted path lies under ``ablate.`` or under a module the user named on the
command line (``--plugins my_slots``) or in ``ABLATE_PLUGINS``, and it is returned only when it
subclasses its family's base class; nothing is called here. ``registry.build`` instantiates what
this returns, so a search space can never reach ``os.system`` or ``subprocess.Popen``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from typing import Iterable

from ablate.errors import ConfigError, choice_error
from ablate.spec.groups import FAMILY_BASES

ENV = "ABLATE_PLUGINS"
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_cli_plugins: list[str] = []

FAMILY_NAMES = {"term": "objective term", "stage": "pipeline stage", "rollout": "rollout engine",
                "critic": "value model", "aggregation": "loss aggregation"}


def _check_module_names(names: Iterable[str], source: str) -> list[str]:
    out = []
    for n in names:
        n = n.strip()
        if not n:
            continue
        if not _DOTTED.match(n):
            raise ConfigError(f"{source}: got {n!r}; allowed: importable module names "
                              "(letters, digits, '_', dots), comma-separated")
        out.append(n)
    return out


def set_plugins(names: Iterable[str]) -> list[str]:
    """Modules named on the command line (``--plugins a,b``). Also exported to ``ABLATE_PLUGINS``
    so trial processes (Ray workers inherit the driver's environment) allow the same modules, and
    the working directory is put on ``sys.path`` so a plugin file next to the user imports."""
    mods = _check_module_names(names, "--plugins")
    _cli_plugins[:] = mods
    if mods:
        have = _check_module_names(os.environ.get(ENV, "").split(","), ENV)
        os.environ[ENV] = ",".join(dict.fromkeys(have + mods))
        cwd = os.getcwd()
        if cwd not in sys.path and "" not in sys.path:
            sys.path.insert(0, cwd)
    return mods


def plugins() -> list[str]:
    """Every module the user allowed: ``--plugins`` of this process plus ``ABLATE_PLUGINS``."""
    env = _check_module_names(os.environ.get(ENV, "").split(","), ENV)
    return list(dict.fromkeys(_cli_plugins + env))


def _allowed_module(mod: str) -> bool:
    roots = ["ablate", *plugins()]
    return any(mod == r or mod.startswith(r + ".") for r in roots)


def base_of(family: str) -> type:
    if family not in FAMILY_BASES:
        raise choice_error("component family", family, FAMILY_BASES)
    mod, _, name = FAMILY_BASES[family].rpartition(".")
    return getattr(importlib.import_module(mod), name)


def check_path(target: object, field: str) -> str:
    """The allow-list check alone (no import): a dotted path under ablate.* or a plugin module."""
    if not isinstance(target, str) or not _DOTTED.match(target) or "." not in target:
        raise ConfigError(f"{field}: got {target!r}; allowed: a dotted class path module.Class "
                          f"under ablate.* or a --plugins module")
    mod = target.rpartition(".")[0]
    if not _allowed_module(mod):
        allowed = ", ".join(["ablate.*", *(f"{p}.*" for p in plugins())])
        raise ConfigError(f"{field}: {target!r} is outside the allowed modules; allowed: "
                          f"{allowed} (name your own module with --plugins {mod.split('.')[0]} "
                          f"or {ENV}; a config or search-space file cannot)")
    return target


def import_path(target: str, field: str) -> object:
    """Import ``module.attr`` for a path that passed ``check_path`` (or a registered trainable)."""
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
        public = [n for n, o in vars(mod).items()  # classes defined there, not ones it imports
                  if not n.startswith("_") and inspect.isclass(o) and o.__module__ == mod_name]
        raise choice_error(f"{field} ({mod_name})", attr, public) from None


def resolve(family: str, target: object, field: str | None = None) -> type:
    """The class ``target`` names, vetted for ``family``; raises a one-line ConfigError before
    importing anything outside the allow-list and before anything is called."""
    field = field or f"{family}._target_"
    base = base_of(family)
    path = check_path(target, field)
    cls = import_path(path, field)
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        raise ConfigError(f"{field}: {path!r} is not a {base.__name__} (a "
                          f"{FAMILY_NAMES.get(family, family)}); allowed: a subclass of "
                          f"{base.__module__}.{base.__qualname__}")
    if not _allowed_module(cls.__module__):  # e.g. ablate.x re-exporting a foreign class
        raise ConfigError(f"{field}: {path!r} is defined in {cls.__module__}, outside the "
                          "allowed modules; allowed: ablate.* or a --plugins module")
    return cls
