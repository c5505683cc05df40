"""No environment interpolation from user values: a planted secret never reaches a file, through
an override or a search space (ablate.config.check_interpolation)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from tests.security.common import run_cli, write_space

SECRET_VAR = "ABLATE_TEST_FAKE_API_KEY"

INJECTIONS = [
    "tracker.wandb.tags=[${oc.env:%s}]",
    "name=${oc.env:%s}",
    "run_dir=${oc.env:%s}",
    "tracker.wandb.project=p${oc.env:%s}",
    "tracker.wandb.group='${oc.env:%s}'",
    "+method.note=${oc.env:%s,default}",
    "tracker.wandb.job_type=${oc.decode:${oc.env:%s}}",
    "tracker.wandb.tags=[a, '${oc.env:%s}']",
    "task.seed=${oc.env:%s}",
    "+task.x=${ oc.env:%s}",
    "tracker.wandb.group=${tracker.wandb.project}${oc.env:%s}",
]

FAST = ["train.steps=1", "train.prompts_per_step=2", "train.group_size=2", "train.microbatches=1",
        "eval.num_prompts=2", "eval.n=2", "eval.every=0", "model.hidden_size=32",
        "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        "model.warm_start=null"]


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


@pytest.fixture
def secret(monkeypatch) -> str:
    value = f"fake-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv(SECRET_VAR, value)
    return value


@pytest.mark.parametrize("template", INJECTIONS)
def test_override_cannot_read_the_environment(template, secret, tmp_path):
    out = run_cli(["train", template % SECRET_VAR], tmp_path)
    assert out.clean, out
    assert "interpolation" in out.stderr and secret not in out.stderr + out.stdout


@pytest.mark.parametrize("template", INJECTIONS)
def test_search_space_cannot_read_the_environment(template, secret, tmp_path):
    f = write_space(tmp_path / "s.yaml", base_overrides=["train.steps=1", template % SECRET_VAR])
    out = run_cli(["sweep", str(f), "--dry-run"], tmp_path / "wd")
    assert out.clean, out
    assert secret not in out.stderr + out.stdout


@pytest.mark.parametrize("field,value", [
    ("output_dir", "${oc.env:%s}"), ("description", "${oc.env:%s}"),
    ("wandb", {"project": "${oc.env:%s}"}), ("metric", "eval/${oc.env:%s}"),
])
def test_search_space_fields_cannot_read_the_environment(field, value, secret, tmp_path):
    value = {k: v % SECRET_VAR for k, v in value.items()} if isinstance(value, dict) \
        else value % SECRET_VAR
    f = write_space(tmp_path / "s.yaml", **{field: value})
    out = run_cli(["sweep", str(f), "--dry-run"], tmp_path / "wd")
    assert out.clean and "interpolation" in out.stderr, out


def test_plain_references_still_work(tmp_path):
    from ablate.config import compose_config
    from ablate.train.validate import validate_config

    cfg = compose_config(["tracker.wandb.group=${tracker.wandb.project}", "method=drgrpo"])
    validate_config(cfg, build=False)
    assert cfg.tracker.wandb.group == cfg.tracker.wandb.project


def test_a_real_run_writes_the_secret_nowhere(secret, tmp_path, monkeypatch):
    """A tiny run with W&B offline files and the secret in the environment: every file is clean."""
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "wd" / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = run_cli(["train", "-q", *FAST, "tracker=wandb", "name=clean",
                   "tracker.wandb.tags=[${tracker.wandb.project}]", "run_dir=runs/clean"],
                  tmp_path / "wd")
    assert out.rc == 0, out
    run_dir = tmp_path / "wd" / "runs" / "clean"
    assert (run_dir / "summary.json").is_file() and any(run_dir.rglob("*.wandb"))
    assert _files_containing(tmp_path, secret.encode()) == []


@pytest.mark.parametrize("doc, where", [
    ("${oc.env:X}", "space"),
    ({"a": {"${oc.env:X}": 1}}, "space.a"),  # a key is named by its parent's path
    ({"a": [1, {"b": "${oc.env:X}"}]}, "space.a[1].b"),
    (("${oc.env:X}",), "space[0]"),
])
def test_every_string_of_a_document_is_checked_where_it_sits(doc, where):
    from ablate.config import check_interpolations
    from ablate.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"^{re.escape(where)}: interpolation"):
        check_interpolations(doc, "space")
    check_interpolations({"a": "${b.c}", "k": [1, "x"]}, "space")  # references stay allowed
