"""The validated spec flows down: validation returns the typed RunConfig, and the trainer reads
that object (not the raw config) for its numbers."""

from __future__ import annotations

import pytest

from ablate.config import check_run, compose_config
from ablate.errors import ConfigError
from ablate.schema import RunConfig
from ablate.train.validate import Validated, validate_config

FAST = ["model.warm_start.steps=0", "train.prompts_per_step=2", "train.group_size=2", "threads=1",
        "tracker=none", "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
        "model.intermediate_size=64",
        "eval.num_prompts=2", "eval.n=2", "train.steps=2"]


def test_validate_returns_the_typed_spec_and_the_task():
    v = validate_config(compose_config(["method=dapo", "mask=none", *FAST, "train.minibatches=2"]),
                        cuda_available=False)  # DAPO's 16 minibatches need more rows than FAST has
    assert isinstance(v, Validated) and isinstance(v.run, RunConfig)
    assert v.run.train.steps == 2 and v.run.choices["mask"] == "none"
    assert v.task is not None
    assert validate_config(compose_config(FAST), build=False).task is None


def test_check_run_is_strict_once():
    with pytest.raises(ConfigError, match=r"^train.steps"):
        check_run(compose_config(["train.steps=2.5"]))


def test_trainer_reads_the_spec_it_is_given():
    from ablate.train.trainer import Trainer

    cfg = compose_config(FAST)
    spec = check_run(cfg).model_copy(deep=True)
    spec.train.steps = 1  # differs from cfg: the trainer must follow the typed spec
    spec.eval.num_samples_logged = 0
    tr = Trainer(cfg, spec=spec)
    assert tr.state.total_steps == 1 and tr.spec is spec
    ev, samples = tr.evaluate(0)
    assert samples == [] and "eval/pass@1" in ev


def test_run_config_builds_components_and_task_once(tmp_path, monkeypatch):
    """run_config hands validation's components and task to the trainer: each is built once."""
    import ablate.train.trainer as trainer_mod
    import ablate.train.validate as validate_mod
    from ablate.train.api import run_config

    calls = {"algo": 0, "task": 0}
    real_algo, real_task = validate_mod.build_algorithm, validate_mod.build_task

    def count(key, fn):
        def wrapped(*a, **k):
            calls[key] += 1
            return fn(*a, **k)
        return wrapped

    for mod in (validate_mod, trainer_mod):
        monkeypatch.setattr(mod, "build_algorithm", count("algo", real_algo))
        monkeypatch.setattr(mod, "build_task", count("task", real_task))
    out = run_config(compose_config([*FAST, "train.steps=1", "eval.every=0"]), run_dir=tmp_path / "r")
    assert out["status"] == "finished" and calls == {"algo": 1, "task": 1}
