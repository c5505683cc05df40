"""The only place that touches a private API of a dependency (Hydra's override application): one
function, and tests/test_adapters.py fails loudly when an upgrade moves what it relies on. Nothing
else in ablate may import ``hydra._internal``, ``ray._private`` or an underscore name of Ray (the
test greps)."""

from __future__ import annotations

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
