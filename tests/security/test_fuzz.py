"""Property-based fuzzing (hypothesis) of the run schema's fields and the search-space format.

Every input either starts (validation passes) or fails with one ConfigError line, and leaves the
working directory empty and Ray unstarted. The default profile is small (seconds); the ``slow``
tests run the same properties with many more examples.
"""

from __future__ import annotations

import os
import tempfile
from unittest import mock
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ablate.errors import ConfigError
from ablate.schema import EvalConfig, ModelConfig, ResourcesConfig, TrainConfig, WarmStartConfig

FAST = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
LONG = settings(max_examples=600, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# every plain field of the schema, as a Hydra key
KEYS = ([f"train.{k}" for k in TrainConfig.model_fields if k != "metrics"]
        + [f"eval.{k}" for k in EvalConfig.model_fields]
        + [f"model.{k}" for k in ModelConfig.model_fields if k not in ("lora", "warm_start")]
        + [f"model.warm_start.{k}" for k in WarmStartConfig.model_fields]
        + [f"resources.{k}" for k in ResourcesConfig.model_fields]
        + ["name", "seed", "device", "run_dir", "threads", "rollout.temperature", "rollout.top_p",
           "rollout.max_new_tokens", "tracker.wandb.project", "tracker.wandb.tags", "task.digits",
           "mask.eps_low", "method", "mask", "advantage", "task._target_", "critic._target_"])

EXTREMES = st.sampled_from([0, -1, 1, 2, 3, 2**31, 2**63, 10**20, -10**20, 1e308, -1e308, 1e-320,
                            0.5, 1.5, "nan", "inf", "-inf", "null", "true", "false", "''", "[]",
                            "{}", "[1,2]", "abc", "${oc.env:HOME}", "${train.steps}", "../..",
                            "/etc/passwd", "os.system", "subprocess.Popen", "float16", "cuda",
                            "cuda:7", "x" * 300, "${", "}", "'\\x00'"])
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
VALUE = st.one_of(EXTREMES, st.integers(), st.floats(allow_nan=True, allow_infinity=True), TEXT,
                  st.booleans())


def _render(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


OVERRIDE = st.builds(lambda k, v, op: f"{op}{k}={_render(v)}" if op != "~" else f"~{k}",
                     st.sampled_from(KEYS), VALUE, st.sampled_from(["", "", "", "+", "++", "~"]))


def _check_run_overrides(overrides: list[str]) -> None:
    from ablate.config import compose_config
    from ablate.train.validate import validate_config

    with tempfile.TemporaryDirectory() as tmp:
        old = os.getcwd()
        os.chdir(tmp)
        try:
            validate_config(compose_config(overrides), cuda_available=False)
        except ConfigError as e:
            msg = str(e)
            assert msg and "\n" not in msg and ":" in msg, msg
        finally:
            os.chdir(old)
        assert os.listdir(tmp) == [], overrides


@FAST
@given(st.lists(OVERRIDE, min_size=1, max_size=3))
def test_fuzz_run_overrides(overrides):
    _check_run_overrides(overrides)


@pytest.mark.slow
@LONG
@given(st.lists(OVERRIDE, min_size=1, max_size=4))
def test_fuzz_run_overrides_long(overrides):
    _check_run_overrides(overrides)


# ------------------------------------------------------------------------------ search spaces
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), TEXT, EXTREMES),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(TEXT, EXTREMES.map(str)), inner, max_size=4)),
    max_leaves=12)
SPACE_VALUES = {
    "name": st.one_of(st.just("fz"), TEXT, EXTREMES),
    "metric": st.one_of(st.just("eval/pass@1"), TEXT),
    "mode": st.one_of(st.sampled_from(["max", "min"]), JSONISH),
    "seeds": st.one_of(st.integers(-5, 5000), st.lists(st.integers(-3, 10**12), max_size=5), JSONISH),
    "search": st.one_of(st.fixed_dictionaries({}, optional={
        "algorithm": st.sampled_from(["grid", "random", "optuna_tpe", "nope"]),
        "num_samples": st.one_of(st.integers(-2, 10**10), st.floats()),
        "seed": st.one_of(st.integers(-5, 2**40), EXTREMES)}), JSONISH),
    "slots": st.one_of(st.fixed_dictionaries({}, optional={
        "mask": st.lists(st.sampled_from(["ppo_clip", "none", "clip_higher", "bogus"]), max_size=3),
        "advantage": st.lists(st.sampled_from(["group_zscore", "rloo", "x"]), max_size=2)}), JSONISH),
    "params": st.one_of(st.dictionaries(st.sampled_from(KEYS), JSONISH, max_size=2), JSONISH),
    "scheduler": st.one_of(st.none(), st.fixed_dictionaries({"type": st.sampled_from(["asha", "x"])},
                                                            optional={"max_t": VALUE,
                                                                      "grace_period": VALUE,
                                                                      "time_attr": VALUE}), JSONISH),
    "resources": st.one_of(st.fixed_dictionaries({}, optional={"cpu": VALUE, "gpu": VALUE,
                                                               "workers": VALUE}), JSONISH),
    "base_overrides": st.one_of(st.lists(OVERRIDE, max_size=3), JSONISH),
    "output_dir": st.one_of(st.just("runs"), TEXT, EXTREMES),
    "max_concurrent": VALUE, "max_failures": VALUE, "trainable": st.one_of(TEXT, EXTREMES),
    "wandb": JSONISH, "description": JSONISH, "report": JSONISH,
}
SPACE = st.fixed_dictionaries({}, optional=SPACE_VALUES).map(
    lambda d: {"name": "fz", "metric": "eval/pass@1", "base_overrides": ["train.steps=1"], **d})


def _check_space(data: dict) -> None:
    from ablate.sweep import runner

    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "space.yaml"
        try:
            f.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        except (yaml.YAMLError, UnicodeEncodeError):
            return
        wd = Path(tmp) / "wd"
        wd.mkdir()
        old = os.getcwd()
        os.chdir(wd)
        try:
            # a dry run never starts Ray (whatever Ray state other tests left in this process)
            with mock.patch.object(runner, "_init_ray", side_effect=AssertionError("Ray started")):
                assert runner.run_sweep(f, dry_run=True, allow_outside=False,
                                        log=lambda m: None) == 0
        except ConfigError as e:
            msg = str(e)
            assert msg and "\n" not in msg, msg
        finally:
            os.chdir(old)
        assert os.listdir(wd) == [], data


@FAST
@given(SPACE)
def test_fuzz_search_space(data):
    _check_space(data)


@pytest.mark.slow
@LONG
@given(SPACE)
def test_fuzz_search_space_long(data):
    _check_space(data)
