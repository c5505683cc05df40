"""Search-space validation (one-line errors, before Ray) and expansion; no Ray here."""

from __future__ import annotations

import pytest

from ablate.errors import ConfigError
from ablate.sweep.cli import sweep_main
from ablate.sweep.space import (OptunaSpace, assignment_overrides, combo_key, hydra_value,
                                load_search_space, plan_trials)
from tests.sweep.conftest import REPO, write_space

BAD = [
    ("unknown slot group", {"slots": {"masks": ["none"]}}, "slots: group: unknown value 'masks'"),
    ("unknown variant", {"slots": {"mask": ["ppo_clip", "ppo_clp"]}},
     "slots.mask: unknown value 'ppo_clp'; allowed: clip_higher, none, ppo_clip"),
    ("unknown method", {"methods": ["grpo", "grpo2"]}, "methods: unknown value 'grpo2'"),
    ("low >= high", {"search": {"algorithm": "random", "num_samples": 2},
                     "params": {"train.lr": {"type": "uniform", "low": 0.3, "high": 0.1}}},
     "params.train.lr: low (0.3) must be < high (0.1)"),
    ("log with low <= 0", {"search": {"algorithm": "random", "num_samples": 2},
                           "params": {"train.lr": {"type": "loguniform", "low": 0, "high": 1}}},
     "params.train.lr.low: a log range needs low > 0"),
    ("missing metric", {"metric": None}, "metric: missing"),
    ("bad mode", {"mode": "maximize"}, "mode: unknown value 'maximize'; allowed: max, min"),
    ("unknown algorithm", {"search": {"algorithm": "bayes"}},
     "search.algorithm: unknown value 'bayes'"),
    ("unknown scheduler", {"scheduler": {"type": "pbt"}}, "scheduler.type: unknown value 'pbt'"),
    ("num_samples missing", {"search": {"algorithm": "optuna_tpe"}},
     "search.num_samples: required for algorithm optuna_tpe"),
    ("range in grid", {"params": {"train.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3}}},
     "params.train.lr: grid search crosses only choice params"),
    ("unknown param type", {"params": {"train.lr": {"type": "normal"}}},
     "params.train.lr.type: unknown value 'normal'"),
    ("when on unswept axis", {"params": {"mask.eps_high": {"type": "choice", "values": [0.2],
                                                          "when": {"advantage": ["rloo"]}}}},
     "params.mask.eps_high.when: axis: unknown value 'advantage'"),
    ("when value unknown", {"params": {"mask.eps_high": {"type": "choice", "values": [0.2],
                                                        "when": {"mask": ["dual"]}}}},
     "params.mask.eps_high.when.mask: unknown value 'dual'"),
    ("unknown top-level key", {"slot": {"mask": ["none"]}}, "search space: key: unknown value 'slot'"),
    ("swept key in base overrides", {"base_overrides": ["mask=none"]},
     "base_overrides: 'mask=none' sets 'mask', which the sweep varies"),
    ("asha grace >= max_t", {"scheduler": {"type": "asha", "max_t": 4, "grace_period": 4}},
     "scheduler.grace_period: must be > 0 and < max_t"),
    # the pydantic models: a bool is no number, a section's keys are checked, an int range is integral
    ("bool is not a number", {"max_failures": True}, "max_failures: got True; allowed: a number"),
    ("unknown resources key", {"resources": {"cpus": 2}}, "resources: key: unknown value 'cpus'"),
    ("fractional int range", {"search": {"algorithm": "random", "num_samples": 2},
                              "params": {"train.minibatches": {"type": "int", "low": 1.5, "high": 4}}},
     "params.train.minibatches.low: got 1.5; allowed: an integer"),
    ("key of another param type", {"params": {"train.epochs": {"type": "choice", "values": [1],
                                                              "low": 0}}},
     "params.train.epochs: key: unknown value 'low'"),
]


@pytest.mark.parametrize("label,fields,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_space_fails_with_one_line_before_ray(label, fields, msg, tmp_path, conf_env,
                                                  monkeypatch, capsys, no_ray):
    f = write_space(tmp_path / "s.yaml", **fields)
    with pytest.raises(ConfigError) as ei:
        load_search_space(f)
    text = str(ei.value)
    assert msg in text and "\n" not in text
    # the CLI prints exactly that one line and exits 2, without starting Ray
    assert sweep_main([str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {text}"]
    assert not (tmp_path / "runs").exists()


def test_yaml_exponent_strings_are_numbers(tmp_path, conf_env):
    # PyYAML reads 1e-5 (no dot) as a string: ranges must still work
    f = write_space(tmp_path / "s.yaml", search={"algorithm": "random", "num_samples": 3},
                    params={"train.lr": {"type": "loguniform", "low": "1e-5", "high": "1e-3"}})
    space = load_search_space(f)
    assert space.params["train.lr"].low == 1e-5
    specs = plan_trials(space)
    assert len(specs) == 3 and all(1e-5 <= s["assign"]["train.lr"] <= 1e-3 for s in specs)
    assert plan_trials(load_search_space(f)) == specs  # seeded: reproducible


def test_grid_expansion_with_conditional_choice_and_seeds(tmp_path, conf_env):
    f = write_space(tmp_path / "s.yaml", methods=["grpo"], seeds=[0, 1, 2],
                    slots={"mask": ["ppo_clip", "clip_higher"], "advantage": ["group_zscore"]},
                    params={"train.epochs": {"type": "choice", "values": [1, 4]},
                            "mask.eps_high": {"type": "choice", "values": [0.28, 0.35],
                                              "when": {"mask": ["clip_higher"]}}})
    specs = plan_trials(load_search_space(f))
    combos = sorted({s["combo"] for s in specs})
    # ppo_clip x 2 epochs + clip_higher x 2 epochs x 2 eps_high = 6 combos, x 3 seeds
    assert len(combos) == 6 and len(specs) == 18
    assert [s["seed"] for s in specs[:6]] == [0] * 6  # seeds are the outer loop
    a = next(s["assign"] for s in specs if "mask.eps_high" in s["assign"])
    assert assignment_overrides(a) == ["method=grpo", "mask=clip_higher", "advantage=group_zscore",
                                       f"train.epochs={a['train.epochs']}",
                                       f"mask.eps_high={a['mask.eps_high']!r}"]
    assert "mask.eps_high" not in combo_key({"mask": "ppo_clip", "train.epochs": 1})
    assert len({s["key"] for s in specs}) == 18


def test_hydra_value_quoting():
    assert hydra_value(3e-4) == "0.0003" and hydra_value(1e-05) == "1e-05"
    assert hydra_value(True) == "true" and hydra_value(None) == "null" and hydra_value(4) == "4"
    assert hydra_value("token_mean") == "token_mean"
    assert hydra_value("a b,c") == "'a b,c'" and hydra_value("true") == "'true'"


def test_optuna_define_by_run_is_conditional(tmp_path, conf_env):
    import optuna

    f = write_space(tmp_path / "s.yaml", search={"algorithm": "optuna_random", "num_samples": 8},
                    slots={"mask": ["ppo_clip", "clip_higher"]},
                    params={"train.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3},
                            "train.minibatches": {"type": "int", "low": 1, "high": 4},
                            "mask.eps_high": {"type": "uniform", "low": 0.2, "high": 0.4,
                                              "when": {"mask": ["clip_higher"]}}})
    space = load_search_space(f)
    assert plan_trials(space) is None
    fn = OptunaSpace(space)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    for _ in range(12):
        t = study.ask()
        fn(t)
        assert ("mask.eps_high" in t.params) == (t.params["mask"] == "clip_higher")
        assert 1 <= t.params["train.minibatches"] <= 4
        study.tell(t, 0.0)
    import pickle

    pickle.loads(pickle.dumps(fn))  # Tune pickles the searcher (and this space) into its state


def test_cli_overrides_name_and_output_dir(tmp_path, conf_env, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the CLI keeps output inside the working directory
    f = write_space(tmp_path / "s.yaml")
    rc = sweep_main([str(f), "fake.sleep=0", "--name", "other", "--output-dir",
                     str(tmp_path / "o"), "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"sweep dir: {tmp_path / 'o' / 'other'}" in out
    assert "fake.steps=3 fake.sleep=0" in out and "2 trials:" in out
    assert not (tmp_path / "o").exists()  # a dry run writes nothing


def test_subcommand_parser_takes_options_after_overrides(tmp_path, conf_env, capsys, monkeypatch):
    import argparse

    monkeypatch.chdir(tmp_path)  # the CLI keeps output inside the working directory
    from ablate.sweep.cli import add_sweep_parser

    parser = argparse.ArgumentParser(prog="ablate")
    add_sweep_parser(parser.add_subparsers(dest="cmd"))
    f = write_space(tmp_path / "s.yaml")
    args = parser.parse_args(["sweep", str(f), "fake.sleep=0", "--dry-run", "fake.steps=2",
                              "--name", "n2"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "sweep n2:" in out and "fake.steps=3 fake.sleep=0 fake.steps=2" in out


def test_dry_run_estimate_combines_plan_and_calibration():
    """The arithmetic of the estimate, with the calibration's numbers given (our own logic)."""
    from ablate.sweep.estimate import estimate, estimate_line
    from ablate.sweep.space import load_search_space, plan_trials

    space = load_search_space(REPO / "search_spaces" / "quickstart.yaml")
    specs = plan_trials(space)
    cal = {"step_s": 1.0, "eval_s": 2.0, "ws_step_s": 0.5, "setup_s": 4.0, "calibration_s": 9.0}
    seen = []
    e = estimate(space, specs, num_cpus=2, calibrate=lambda ov, warm: seen.append(warm) or cal)
    assert seen == [True] and e["trials"] == 12 and e["steps"] == 30 and e["parallel"] == 2
    assert e["evals"] == 4  # initial + every 10 of 30 steps
    assert e["trial_s"] == 30 * 1.0 + 4 * 2.0 + 4.0
    assert e["warm_s"] == 3 * e["warm_steps"] * 0.5  # once per seed: the cache is per seed
    assert e["wall_s"] == (12 * e["trial_s"] + e["warm_s"]) / 2
    line = estimate_line(space, specs, num_cpus=1, calibrate=lambda ov, warm: cal)
    assert line.startswith("estimated wall time: about ") and "1 at a time" in line


def test_dry_run_of_the_quickstart_calibrates_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """`ablate sweep search_spaces/quickstart.yaml --dry-run` as a user types it (a real 2-step
    calibration run): the plan, then an estimate line; no sweep dir, cache or W&B files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ABLATE_CONF_DIR", raising=False)
    assert sweep_main([str(REPO / "search_spaces" / "quickstart.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 trials:" in out and "estimated wall time: about " in out
    assert "12 trials x 30 steps, " in out and " at a time " in out
    assert list(tmp_path.iterdir()) == []
