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


def test_token_auth_is_set_before_ray_is_imported_and_never_refreshed(monkeypatch):
    """Ray reads RAY_AUTH_MODE at import: ablate sets it when attaching with a token on the machine
    and Ray is not imported yet; once Ray is imported it only says what to do (no private refresh)."""
    import sys

    from ablate.sweep import runner

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    lines: list[str] = []
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    runner._token_auth_for_attach(lines.append)
    assert runner.os.environ.get("RAY_AUTH_MODE") == "token" and lines == []
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.setitem(sys.modules, "ray", object())
    runner._token_auth_for_attach(lines.append)
    assert "RAY_AUTH_MODE" not in runner.os.environ and "RAY_AUTH_MODE=token" in lines[0]
