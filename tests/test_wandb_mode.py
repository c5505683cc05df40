"""W&B "auto" mode is decided by one rule for `ablate train` (the tracker) and for sweeps."""

from __future__ import annotations

import pytest

from ablate.errors import ConfigError
from ablate.sweep.runner import wandb_mode
from ablate.sweep.space import SearchSpace, validate
from ablate.tracking.wandb_logger import resolve_mode

CLEAR = ("WANDB_MODE", "ABLATE_WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED", "WANDB_BASE_URL")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for k in CLEAR:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return monkeypatch, tmp_path


def _space(mode: str = "auto") -> SearchSpace:
    return validate({"name": "s", "metric": "eval/pass@1", "wandb": {"project": "p", "mode": mode}})


@pytest.mark.parametrize("setup,expect", [
    ({}, "offline"),
    ({"WANDB_API_KEY": "k"}, "online"),
    ({"WANDB_MODE": "dryrun"}, "offline"),
    ({"WANDB_DISABLED": "true"}, "disabled"),
    ({"ABLATE_WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}, "disabled"),
])
def test_train_and_sweep_agree(clean_env, setup, expect):
    mp, _ = clean_env
    for k, v in setup.items():
        mp.setenv(k, v)
    assert resolve_mode("auto") == wandb_mode(_space()) == expect


def test_self_hosted_key_is_online_for_both(clean_env):
    mp, tmp = clean_env
    mp.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    (tmp / "netrc").write_text("machine wandb.example.org login user password secret\n")
    assert resolve_mode("auto") == wandb_mode(_space()) == "online"


def test_an_explicit_sweep_mode_is_checked_by_the_same_rule(clean_env):
    assert wandb_mode(_space("offline")) == "offline"
    with pytest.raises(ConfigError, match="^wandb.mode"):
        wandb_mode(_space("sometimes"))
