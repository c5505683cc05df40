"""A config is data: no `_target_` of any family runs code it was not vetted for, from the
command line or from a search space, in --dry-run or a real sweep (ablate/spec/targets.py)."""

from __future__ import annotations

import pytest

from ablate.errors import ConfigError
from ablate.spec.targets import FAMILY_BASES, resolve
from tests.security.common import run_cli, write_space

WRONG_FAMILY = {"task": "ablate.upge.aggregation.Aggregation"}  # else: a task class
CALLABLES = ("os.system", "subprocess.Popen", "builtins.eval")


def family_overrides(family: str, target: str, marker: str) -> list[str]:
    """Overrides that put ``target`` into ``family`` (with the issue's shell-command arguments)."""
    if family == "task":
        return [f"task._target_={target}", "~task.digits", "~task.ops", "~task.num_operands",
                "~task.seed", "~task.eval_size", f"+task.args='touch {marker}'", "+task.shell=true"]
    if family == "rollout":
        return [f"rollout._target_={target}"]
    if family == "critic":
        return ["method=ppo", f"critic._target_={target}"]
    if family == "stage":
        return [f"+pipeline.stages=[{{_target_: {target}}}]"]
    if family == "term":
        return [f"objective.terms.pg._target_={target}"]
    if family == "regularizer":
        return ["regularizers=entropy", f"regularizers.entropy._target_={target}"]
    return [f"{family}._target_={target}"]


def bad_targets(family: str) -> list[str]:
    return [*CALLABLES, WRONG_FAMILY.get(family, "ablate.tasks.arithmetic.Arithmetic")]


CASES = [(f, t) for f in FAMILY_BASES for t in bad_targets(f)]


@pytest.mark.parametrize("family,target", CASES)
def test_train_refuses_target(family, target, tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "pwned"
    out = run_cli(["train", *family_overrides(family, target, str(marker))], tmp_path / "wd")
    assert out.clean, out
    assert target in out.stderr
    assert not marker.exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
@pytest.mark.parametrize("family,target", CASES)
def test_sweep_refuses_target(family, target, dry, tmp_path, monkeypatch, no_ray):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "pwned"
    f = write_space(tmp_path / "space.yaml",
                    base_overrides=["train.steps=1", *family_overrides(family, target, str(marker))])
    out = run_cli(["sweep", str(f), *(["--dry-run"] if dry else []), "--num-cpus", "1"],
                  tmp_path / "wd")
    assert out.clean, out
    assert not marker.exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("family", sorted(FAMILY_BASES))
@pytest.mark.parametrize("target", CALLABLES)
def test_a_named_plugin_still_must_subclass_the_family_base(family, target, monkeypatch):
    """Even a module the user allowed gives only classes of the right family: nothing is called."""
    monkeypatch.setenv("ABLATE_PLUGINS", "tests,os,subprocess,builtins")
    with pytest.raises(ConfigError, match="allowed: a subclass of"):
        resolve(family, target)


def test_search_space_cannot_widen_the_allow_list(tmp_path, monkeypatch):
    monkeypatch.delenv("ABLATE_PLUGINS", raising=False)
    f = write_space(tmp_path / "space.yaml",
                    base_overrides=["train.steps=1", "+ABLATE_PLUGINS=os", "task._target_=os.system"])
    out = run_cli(["sweep", str(f), "--dry-run"], tmp_path / "wd")
    assert out.rc == 2 and len(out.error_lines) == 1 and not out.created, out


def test_unused_critic_and_stray_pipeline_key_are_refused(tmp_path):
    out = run_cli(["train", "critic._target_=os.system"], tmp_path / "a")  # grpo builds no critic
    assert out.clean and "critic._target_" in out.stderr, out
    out = run_cli(["train", "+pipeline.x={_target_: os.system, command: 'touch x'}"], tmp_path / "b")
    assert out.clean and "pipeline.x._target_" in out.stderr, out


README_PLUGIN = '''
import torch
from ablate.upge.slots.base import Mask, MaskResult, TokenContext

class RatioBand(Mask):
    def __init__(self, lo: float = 0.5, hi: float = 2.0):
        self.lo, self.hi = lo, hi

    def __call__(self, ctx: TokenContext) -> MaskResult:
        out = (ctx.ratio < self.lo) | (ctx.ratio > self.hi)
        return MaskResult(keep=~out, events={"band": out})
'''


def test_readme_plugin_loads_only_when_named(tmp_path, monkeypatch):
    """The README's my_slots.RatioBand as conf/mask/ratio_band.yaml: refused by default, accepted
    with --plugins my_slots from the working directory (--dry-run composes and builds each trial)."""
    import shutil
    import sys

    import ablate.spec.targets as targets
    from ablate.registry import conf_dir

    monkeypatch.delenv("ABLATE_PLUGINS", raising=False)
    monkeypatch.setattr(targets, "_cli_plugins", [])
    monkeypatch.setattr(sys, "path", list(sys.path))
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf)
    (conf / "mask" / "ratio_band.yaml").write_text("_target_: my_slots.RatioBand\nhi: 3.0\n")
    monkeypatch.setenv("ABLATE_CONF_DIR", str(conf))
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "my_slots.py").write_text(README_PLUGIN)
    write_space(wd / "space.yaml", slots={"mask": ["ppo_clip", "ratio_band"]})
    out = run_cli(["sweep", "space.yaml", "--dry-run"], wd)
    assert out.rc == 2 and "--plugins my_slots" in out.stderr, out
    assert "my_slots" not in sys.modules
    out = run_cli(["sweep", "space.yaml", "--dry-run", "--plugins", "my_slots"], wd)
    assert out.rc == 0, out
    assert "2 trials" in out.stdout + out.stderr and "ratio_band" in out.stdout + out.stderr
    monkeypatch.delitem(sys.modules, "my_slots", raising=False)
