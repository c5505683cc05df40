"""The only place that touches private APIs of our dependencies (Hydra, Ray): each use is one
function here, and tests/test_adapters.py fails loudly when an upgrade moves what it relies on.
Nothing else in ablate may import ``hydra._internal``, ``ray._private`` or an underscore name of
Ray (the test greps)."""

from __future__ import annotations

import sys
from typing import Sequence

from omegaconf import DictConfig


def apply_value_overrides(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Apply ``key=value`` / ``+key=value`` / ``~key`` overrides to a composed config in place,
    with Hydra's own parser and semantics (what ``compose`` does after the defaults list), so a
    cached composition can be reused instead of composing again. Hydra has no public entry point
    for this step (hydra 1.3: ``ConfigLoaderImpl._apply_overrides_to_config``)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)


def refresh_ray_token_auth() -> None:
    """Make an already imported Ray re-read ``RAY_AUTH_MODE`` (it caches its config at import;
    ray 2.60 has no public call for this). A no-op when Ray is not imported yet."""
    if "ray" not in sys.modules:
        return
    from ray._private.authentication.authentication_token_setup import _enable_token_auth

    _enable_token_auth()


def in_tune_session() -> bool:
    """Whether this process runs inside a Ray Tune trial (then a multi-worker run reports through
    Tune). Ray 2.60 has only the private ``ray.tune.trainable.trainable_fn_utils._in_tune_session``."""
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    return bool(_in_tune_session())
