"""Registered sweep trainables: a search space names one (``trainable: train``), never an import path.

A search-space file is data that gets shared; letting it name any callable (``trainable:
os.system``) would make it code. The functions a sweep may call are registered here instead:

- built in: ``train`` = :func:`ablate.train.api.run_training` (one ``ablate train`` run per trial);
- by whoever runs the sweep, like PYTHONPATH: ``ABLATE_TRAINABLES="name=pkg.module.function,..."``;
- by an installed package: an ``ablate.trainables`` entry point (``name = "pkg.module:function"``).

Every trainable has run_training's signature: ``(overrides, run_dir, reporter, extra_tracker)``;
one that also takes ``resume`` and ``on_step_end`` gets trial checkpoints (ablate/sweep/trial.py).
``validates`` marks trainables that take ablate run configs, so the sweep preflight composes and
validates every trial's config before Ray starts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable

from ablate.errors import ConfigError

ENV = "ABLATE_TRAINABLES"
ENTRY_POINT_GROUP = "ablate.trainables"
DEFAULT_NAME = "train"
_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Trainable:
    name: str
    path: str  # dotted import path module.function, resolved by the trial processes
    validates: bool = False  # takes ablate run configs: preflight composes + validates each trial


BUILTIN = (Trainable(DEFAULT_NAME, "ablate.train.api.run_training", validates=True),)


def _make(name: str, path: str) -> Trainable:
    if not _NAME_RE.match(name or ""):
        raise ConfigError(f"{ENV}: trainable name {name!r} may use only letters, digits, '_' and '-'")
    path = path.replace(":", ".")
    if not _PATH_RE.match(path):
        raise ConfigError(f"{ENV}: {name}={path!r} is not a dotted path module.function")
    return Trainable(name, path)


def _from_env() -> list[Trainable]:
    out = []
    for item in filter(None, (x.strip() for x in os.environ.get(ENV, "").split(","))):
        name, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"{ENV}: got {item!r}; allowed: name=module.function[,name=...]")
        out.append(_make(name.strip(), path.strip()))
    return out


def _from_entry_points() -> list[Trainable]:
    from importlib.metadata import entry_points

    return [_make(ep.name, ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP)]


def registered() -> dict[str, Trainable]:
    """Every registered trainable by name (built-ins, last, cannot be shadowed)."""
    return {t.name: t for t in [*_from_entry_points(), *_from_env(), *BUILTIN]}


def resolve(value: object) -> Trainable:
    """The registered trainable a search space names (by name, or by a registered one's path)."""
    reg = registered()
    found = next((t for t in reg.values() if value in (t.name, t.path)), None)
    if found is not None:
        return found
    allowed = ", ".join(f"{n} ({t.path})" for n, t in sorted(reg.items()))
    raise ConfigError(f"trainable: got {value!r}; allowed: a registered trainable: {allowed} "
                      f"(register one with {ENV}=name=module.function or an "
                      f"'{ENTRY_POINT_GROUP}' entry point)")


def load(value: object) -> Callable:
    """Import a registered trainable (one-line error when it cannot be imported)."""
    from ablate.spec.targets import import_path

    t = resolve(value)
    fn = import_path(t.path, "trainable")
    if not callable(fn):
        raise ConfigError(f"trainable: {t.name} ({t.path}) is not callable")
    return fn
