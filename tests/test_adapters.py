"""Private APIs of dependencies are used only in ablate/adapters.py, and what it relies on is still
there: an upgrade of Hydra or Ray that moves it fails here, by name, not deep inside a sweep."""

from __future__ import annotations

import inspect
from pathlib import Path

from omegaconf import OmegaConf

from ablate.adapters import apply_value_overrides

ROOT = Path(__file__).resolve().parent.parent / "ablate"
PRIVATE = ("hydra._internal", "ray._private", "import _in_tune_session")


def test_private_apis_only_in_the_adapter():
    users = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                   if any(m in p.read_text() for m in PRIVATE))
    assert users == ["adapters.py"]


def test_hydra_private_override_application_still_exists_and_works():
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    params = list(inspect.signature(ConfigLoaderImpl._apply_overrides_to_config).parameters)
    assert params == ["overrides", "cfg"]
    cfg = OmegaConf.create({"train": {"lr": 1.0, "steps": 3}, "gone": 1})
    apply_value_overrides(cfg, ["train.lr=0.5", "+train.extra=x", "~gone"])
    assert cfg.train.lr == 0.5 and cfg.train.extra == "x" and "gone" not in cfg


def test_ray_private_token_refresh_still_exists():
    from ray._private.authentication.authentication_token_setup import _enable_token_auth

    assert callable(_enable_token_auth) and not inspect.signature(_enable_token_auth).parameters


def test_ray_tune_session_probe_still_exists():
    from ablate.adapters import in_tune_session

    assert in_tune_session() is False  # not inside a Tune trial here
