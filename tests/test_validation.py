"""Malformed input, tried as a new user would: every bad `ablate train` input and every bad search
space exits 2 with one line naming the field, creates nothing (no run dir, no W&B dir, no warm-start
cache) and starts no Ray. In-process through ``ablate.cli.main`` for speed, plus a few through the
real CLI subprocess."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ablate.cli import main
from ablate.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "gsm8k_tiny.jsonl"
GOOD_ROWS = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
CUDA = torch.cuda.is_available()


# ------------------------------------------------------------------------------ data files
def _rows(*bad: dict | str) -> list[str]:
    """Two good rows, then the bad ones (so the bad row is line 3)."""
    out = [json.dumps(r) for r in GOOD_ROWS[:2]]
    out += [b if isinstance(b, str) else json.dumps(b) for b in bad]
    return out + [json.dumps(r) for r in GOOD_ROWS[2:6]]


DATA = {
    "null_question": _rows({"question": None, "answer": "#### 3"}),
    "missing_answer": _rows({"question": "What is 1 plus 1?"}),
    "empty_question": _rows({"question": "  ", "answer": "#### 2"}),
    "list_answer": _rows({"question": "What is 1 plus 1?", "answer": [2]}),
    "huge_answer": _rows({"question": "What is 1 plus 1?", "answer": "x" * 200_000 + " #### 2"}),
    "huge_question": _rows({"question": "why " * 50_000, "answer": "#### 2"}),
    "bad_json": _rows("{question: 1}"),
    "not_object": _rows("[1, 2]"),
    "one_row": [json.dumps(GOOD_ROWS[0])],
    "latin1": None,  # written as bytes below
    "long_for_tiny": _rows({"question": "What is " + "1 plus " * 30 + "1?", "answer": "#### 31"}),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    for name, lines in DATA.items():
        if lines is None:
            (d / f"{name}.jsonl").write_bytes(b'{"question": "caf\xe9", "answer": "1"}\n' * 3)
        else:
            (d / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return d


def jsonl(name: str) -> list[str]:
    return ["task=gsm8k_jsonl", f"task.path={{data}}/{name}.jsonl"]


# (overrides, text the one line must contain: the field)
TRAIN_CASES: list[tuple[list[str], str]] = [
    (["train.steps=0"], "train.steps"),
    (["train.steps=-1"], "train.steps"),
    (["train.steps=2.5"], "train.steps"),
    (["train.steps=abc"], "train.steps"),
    (["train.steps=true"], "train.steps"),
    (["train.steps=null"], "train.steps"),
    (["train.lr=abc"], "train.lr"),
    (["train.lr=0"], "train.lr"),
    (["train.lr=-1e-4"], "train.lr"),
    (["train.lr=nan"], "train.lr"),
    (["train.lr=inf"], "train.lr"),
    (["train.epochs=0"], "train.epochs"),
    (["train.prompts_per_step=0"], "train.prompts_per_step"),
    (["train.group_size=0"], "train.group_size"),
    (["train.minibatches=0"], "train.minibatches"),
    (["train.microbatches=0"], "train.microbatches"),
    (["train.microbatches=1.5"], "train.microbatches"),
    (["train.max_grad_norm=0"], "train.max_grad_norm"),
    (["train.max_grad_norm=-1"], "train.max_grad_norm"),
    (["train.skip_grad_norm=0"], "train.skip_grad_norm"),
    (["train.weight_decay=-0.1"], "train.weight_decay"),
    (["train.betas=[0.9]"], "train.betas"),
    (["train.betas=[0.9,1.0]"], "train.betas[1]"),
    (["train.betas=abc"], "train.betas"),
    (["train.scheduler=exp"], "train.scheduler"),
    (["train.warmup_steps=-1"], "train.warmup_steps"),
    (["train.log_every=0"], "train.log_every"),
    (["train.metrics.entropy=maybe"], "train.metrics.entropy"),
    (["train.metrics=5"], "train.metrics"),
    (["train.stpes=3"], "train: unknown key 'stpes'"),
    (["+train.stpes=3"], "train: unknown key 'stpes'"),
    (["eval.n=0"], "eval.n"),
    (["eval.every=-1"], "eval.every"),
    (["eval.every=2.5"], "eval.every"),
    (["eval.num_prompts=0"], "eval.num_prompts"),
    (["eval.temperature=-1"], "eval.temperature"),
    (["eval.temperature=0"], "eval.temperature"),
    (["eval.num_samples_logged=-1"], "eval.num_samples_logged"),
    (["eval.nn=3"], "eval: unknown key 'nn'"),
    (["seed=abc"], "seed"),
    (["seed=-1"], "seed"),
    (["seed=1.5"], "seed"),
    (["device=gpu"], "device"),
    (["device=cuda"], "device"),
    (["device=cuda:0"], "device"),
    (["threads=-2"], "threads"),
    (["threads=0"], "threads"),
    (["threads=abc"], "threads"),
    (["name=[1,2]"], "name"),
    (["run_dir=5"], "run_dir"),
    (["+stpes=3"], "config: unknown key 'stpes'"),
    (["rollout.temperature=0"], "rollout.temperature"),
    (["rollout.temperature=-1"], "rollout.temperature"),
    (["rollout.top_p=0"], "rollout.top_p"),
    (["rollout.top_p=1.5"], "rollout.top_p"),
    (["rollout.top_k=-1"], "rollout.top_k"),
    (["rollout.max_new_tokens=0"], "rollout.max_new_tokens"),
    (["rollout.batch_size=0"], "rollout.batch_size"),
    (["+rollout.beam=3"], "rollout: parameter of HFEngine"),
    (["rollout=vllm"] if not CUDA else ["rollout=nope"], "rollout"),
    (["model.hidden_size=0"], "model.hidden_size"),
    (["model.num_heads=3"], "model.num_heads"),
    (["model.num_kv_heads=3"], "model.num_kv_heads"),
    (["model.dtype=int8"], "model.dtype"),
    (["model.arch=gpt9"], "model.arch"),
    (["model.attn_implementation=flash"], "model.attn_implementation"),
    (["model.rope_theta=0"], "model.rope_theta"),
    (["model.max_position_embeddings=0"], "model.max_position_embeddings"),
    (["model.seed=-3"], "model.seed"),
    (["model.hidden=64"], "model: unknown key 'hidden'"),
    (["model.warm_start.steps=-1"], "model.warm_start.steps"),
    (["model.warm_start.target_pass1=2"], "model.warm_start.target_pass1"),
    (["model.warm_start.lr=0"], "model.warm_start.lr"),
    (["model.warm_start.min_lr_ratio=1.5"], "model.warm_start.min_lr_ratio"),
    (["model.warm_start.check_every=0"], "model.warm_start.check_every"),
    (["model.warm_start.batch_size=2.0"], "model.warm_start.batch_size"),
    (["model.path=/nonexistent/ckpt", "model.warm_start.steps=abc"], "model.warm_start.steps"),
    (["model.lora={r:0}"], "model.lora.r"),
    (["model.lora={r:4,alpha:-1}"], "model.lora.alpha"),
    (["model.lora=true"], "model.lora"),
    (["model.gradient_checkpointing=maybe"], "model.gradient_checkpointing"),
    (["task.prompt_format=html"], "task.prompt_format"),
    (["rollout.is_correction=foo"], "rollout.is_correction"),
    (["rollout.is_cap=0"], "rollout.is_cap"),
    (["mask=clip_hgher"], "mask"),
    (["mask.eps_low=abc"], "eps_low"),
    (["mask.eps_low=-0.3"], "eps_low"),
    (["advantage.eps=-1"], "eps"),
    (["aggregation.mode=foo"], "aggregation.mode"),
    (["method=nope"], "method"),
    (["task=nope"], "task"),
    (["task.digits=abc"], "task.digits"),
    (["task.eval_size=-1"], "task.eval_size"),
    (["task=countdown", "task.num_numbers=0"], "task.num_numbers"),
    (["tracker.wandb.mode=loud"], "tracker.wandb.mode"),
    (["tracker.wandb.enabled=maybe"], "tracker.wandb.enabled"),
    (["task=gsm8k_jsonl"], "task.path"),
    (["task=gsm8k_jsonl", "task.path=/nonexistent/data.jsonl"], "task.path"),
    (jsonl("null_question"), "null_question.jsonl:3"),
    (jsonl("missing_answer"), "task.answer_key"),
    (jsonl("empty_question"), "empty_question.jsonl:3"),
    (jsonl("list_answer"), "list_answer.jsonl:3"),
    (jsonl("huge_answer"), "task.max_chars"),
    (jsonl("huge_question"), "task.max_chars"),
    (jsonl("bad_json"), "bad_json.jsonl:3"),
    (jsonl("not_object"), "not_object.jsonl:3"),
    (jsonl("one_row"), "task.path"),
    (jsonl("latin1"), "task.path"),
    (jsonl("long_for_tiny"), "model.max_position_embeddings"),
    (jsonl("huge_answer") + ["task.on_overlong=cut"], "task.on_overlong"),
    (jsonl("huge_answer") + ["task.max_chars=0"], "task.max_chars"),
    (jsonl("huge_answer") + ["task.on_overlong=truncate"], "model.max_position_embeddings"),
    (jsonl("null_question") + ["task.eval_fraction=1.5"], "task.eval_fraction"),
    (["task=gsm8k_jsonl", f"task.path={FIXTURE}", "task.prompt_template=nothing"],
     "task.prompt_template"),
]


def _ids(cases):
    return [" ".join(ov).replace("{data}/", "")[:60] for ov, _ in cases]


@pytest.fixture
def clean_cwd(tmp_path, monkeypatch) -> Path:
    """An empty cwd with every place a run could write pointed inside it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for k in ("ABLATE_RUNS", "WANDB_DIR", "RAY_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ABLATE_CACHE", str(cwd / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    return cwd


def _expect_one_line(capsys, rc: int, needle: str) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("overrides,field", TRAIN_CASES, ids=_ids(TRAIN_CASES))
def test_bad_train_input_exits_2_creates_nothing(overrides, field, clean_cwd, data_dir, capsys, no_ray):
    ov = [o.replace("{data}", str(data_dir)) for o in overrides]
    if CUDA and any(o.startswith("device=cuda") for o in ov):
        pytest.skip("CUDA is available here: device=cuda is valid")
    rc = main(["train", "-q", *ov])
    _expect_one_line(capsys, rc, field)
    assert list(clean_cwd.iterdir()) == []  # no runs/, no wandb/, no warm-start cache


def test_train_table_is_large_enough():
    assert len(TRAIN_CASES) >= 60


# ------------------------------------------------------------------------------ search spaces
BASE_SPACE = {"name": "bad", "metric": "eval/pass@1", "base_overrides": ["train.steps=1"]}

SPACE_CASES: list[tuple[dict, str]] = [
    ({"trainable": "os.system"}, "trainable: got 'os.system'"),
    ({"trainable": "ablate.train.api.nope"}, "trainable"),
    ({"trainable": "subprocess.run"}, "trainable"),
    ({"trainable": 42}, "trainable"),
    ({"params": {"train.lr": ["abc"]}}, "train.lr"),
    ({"params": {"mask.eps_low": [-0.3]}}, "eps_low"),
    ({"base_overrides": ["train.steps=0"]}, "train.steps"),
    ({"base_overrides": ["train.lr=abc"]}, "train.lr"),
    ({"base_overrides": ["device=gpu"]}, "device"),
    ({"base_overrides": ["+train.foo=1"]}, "train: unknown key 'foo'"),
    ({"base_overrides": ["task=gsm8k_jsonl"]}, "task.path"),
    ({"base_overrides": ["train.microbatches=0"]}, "train.microbatches"),
    ({"params": {"eval.n": [4, 0]}}, "eval.n"),
    ({"params": {"train.max_grad_norm": [0, 1.0]}}, "train.max_grad_norm"),
    ({"params": {"model.num_heads": [3]}}, "model.num_heads"),
    ({"params": {"train.scheduler": ["exp"]}}, "train.scheduler"),
    ({"params": {"train.steps": {"type": "int", "low": 0, "high": 3}},
      "search": {"algorithm": "optuna_tpe", "num_samples": 2}}, "train.steps"),
    ({"params": {"rollout.temperature": {"type": "uniform", "low": 0.0, "high": 1.0}},
      "search": {"algorithm": "optuna_random", "num_samples": 2}}, "rollout.temperature"),
    ({"params": {"train.lr": {"type": "uniform", "low": 1e-4, "high": 2.0e+0}},
      "slots": {"mask": ["ppo_clip", "clip_hgher"]},
      "search": {"algorithm": "random", "num_samples": 2}}, "slots.mask"),
    ({"params": {"train.lr": {"type": "loguniform", "low": -1, "high": 1}},
      "search": {"algorithm": "random", "num_samples": 2}}, "params.train.lr.low"),
    ({"slots": {"mask": ["clip_hgher"]}}, "slots.mask"),
    ({"methods": ["nope"]}, "methods"),
    ({"name": None}, "name"),
    ({"metric": None}, "metric"),
    ({"mode": "maximize"}, "mode"),
    ({"search": {"algorithm": "bayes"}}, "search.algorithm"),
    ({"search": {"algorithm": "random"}}, "search.num_samples"),
    ({"search": {"algorithm": "grid", "num_samples": 3}}, "search.num_samples"),
    ({"seeds": [-1]}, "seeds"),
    ({"seeds": 0}, "seeds"),
    ({"seeds": [0, 0]}, "seeds"),
    ({"seeds": [0.5]}, "seeds"),
    ({"scheduler": {"type": "asha"}}, "scheduler.max_t"),
    ({"scheduler": {"type": "hyperband"}}, "scheduler.type"),
    ({"resources": {"cpu": 0}}, "resources.cpu"),
    ({"max_concurrent": 0}, "max_concurrent"),
    ({"epochs": 3}, "search space: key"),
    ({"params": {"seed": [0, 1]}}, "params.seed"),
    ({"params": {"mask": ["none"]}}, "params.mask"),
    ({"base_overrides": ["seed=3"]}, "base_overrides"),
    ({"params": {"train.microbatches": {"type": "int", "low": 1, "high": 4, "step": 0}},
      "search": {"algorithm": "random", "num_samples": 2}}, "params.train.microbatches.step"),
    ({"params": {"mask.eps_high": {"type": "uniform", "low": 0.2, "high": 0.4,
                                   "when": {"advantage": ["rloo"]}}},
      "search": {"algorithm": "random", "num_samples": 2}}, "params.mask.eps_high.when"),
]


@pytest.mark.parametrize("fields,needle", SPACE_CASES, ids=[str(f)[:60] for f, _ in SPACE_CASES])
def test_bad_search_space_exits_2_before_ray(fields, needle, clean_cwd, tmp_path, capsys, no_ray):
    data = {**BASE_SPACE, **fields}
    data = {k: v for k, v in data.items() if v is not None}
    f = tmp_path / "space.yaml"
    f.write_text(yaml.safe_dump(data, sort_keys=False))
    rc = main(["sweep", str(f), "--no-report"])
    _expect_one_line(capsys, rc, needle)
    assert list(clean_cwd.iterdir()) == []  # no sweep dir


def test_space_table_is_large_enough():
    assert len(SPACE_CASES) >= 30


# ------------------------------------------------------------------------------ valid inputs
def test_schema_is_the_one_source_of_defaults():
    """What Hydra composes for the default run equals the schema's defaults (no YAML copy)."""
    from ablate.config import compose_config
    from ablate.registry import plain
    from ablate.schema import EvalConfig, ModelConfig, TrainConfig

    cfg = plain(compose_config(["method=grpo"]))
    assert cfg["train"] == TrainConfig().model_dump()
    assert cfg["eval"] == EvalConfig().model_dump()
    assert cfg["model"] == ModelConfig().model_dump()
    assert "MODEL_DEFAULTS" not in (REPO / "ablate" / "policy" / "model.py").read_text()


@pytest.mark.parametrize("overrides", [
    [], ["method=dapo", "train.steps=2", "eval.every=0", "threads=1"],
    ["train.lr=3", "eval.temperature=0.7", "model.warm_start=null", "train.skip_grad_norm=5"],
    # the tiny model's 128 positions hold the prompt and the generation (check_context)
    ["task=gsm8k_jsonl", f"task.path={FIXTURE}", "task.demo_key=demo", "task.max_new_tokens=12"],
])
def test_valid_configs_pass(overrides):
    from ablate.config import compose_config
    from ablate.train.validate import validate_config

    assert validate_config(compose_config(overrides), cuda_available=False) is not None


def test_overlong_rows_truncated_or_skipped_by_named_option(data_dir, caplog):
    from ablate.tasks import build_task

    spec = {"_target_": "ablate.tasks.jsonl_math.JsonlMath", "path": str(data_dir / "huge_answer.jsonl")}
    with pytest.raises(ConfigError, match=r"huge_answer.jsonl:3: 'answer' has 200007 characters"):
        build_task(spec)
    with caplog.at_level(logging.WARNING, logger="ablate.tasks.jsonl_math"):
        t = build_task({**spec, "max_chars": 40, "on_overlong": "truncate"})
    assert "1 over-long row(s)" in caplog.text and "truncated" in caplog.text and "lines 3" in caplog.text
    probs = t._train + t._eval
    assert len(probs) == 7 and max(len(p.demo) for p in probs) <= 40
    long = next(p for p in probs if p.meta["line"] == 3)
    assert long.answer == "2" and long.demo.endswith("#### 2")  # the tail (final answer) is kept
    assert build_task({**spec, "on_overlong": "skip"}).num_overlong == 1


def test_device_cuda_without_cuda_is_one_line():
    from ablate.config import compose_config
    from ablate.train.validate import validate_config

    with pytest.raises(ConfigError, match=r"^device: got 'cuda', but CUDA is not available"):
        validate_config(compose_config(["device=cuda"]), cuda_available=False)


def test_registered_trainables(monkeypatch):
    from ablate.sweep import trainables

    assert trainables.resolve("train").path == "ablate.train.api.run_training"
    assert trainables.resolve("ablate.train.api.run_training").validates
    monkeypatch.setenv(trainables.ENV, "mine=tests.sweep.fakes.fake_run_training")
    assert trainables.resolve("mine").path == "tests.sweep.fakes.fake_run_training"
    assert not trainables.resolve("mine").validates
    monkeypatch.setenv(trainables.ENV, "train=os.system")  # a built-in cannot be shadowed
    assert trainables.resolve("train").path == "ablate.train.api.run_training"
    with pytest.raises(ConfigError, match="trainable: got 'os.system'"):
        trainables.resolve("os.system")


def test_preflight_checks_every_grid_trial_and_optuna_range_ends():
    from ablate.sweep.preflight import preflight, trial_assignments
    from ablate.sweep.space import validate

    # two optimizer steps per batch: a mask factor on one on-policy step is refused (issue 18)
    grid = validate({**BASE_SPACE, "base_overrides": ["train.steps=1", "train.minibatches=2"],
                     "slots": {"mask": ["ppo_clip", "none"]},
                     "params": {"train.lr": [1e-4, 3e-4]}, "seeds": [0, 1]})
    assert preflight(grid) == 4  # every combination once (seeds only change seed=)
    opt = validate({**BASE_SPACE, "params": {"train.epochs": {"type": "int", "low": 1, "high": 3}},
                    "search": {"algorithm": "optuna_tpe", "num_samples": 4}})
    assert sorted(a["train.epochs"] for a in trial_assignments(opt)) == [1, 3]


# ------------------------------------------------------------------------------ real CLI
SUBPROCESS_CASES = [
    (["train", "train.steps=2.5"], "train.steps"),
    (["train", "task=gsm8k_jsonl", "task.path={data}/null_question.jsonl"], "null_question.jsonl:3"),
    (["sweep", "{space}"], "trainable: got 'os.system'"),
]


def test_real_cli_exit_2_one_line_nothing_created(tmp_path, data_dir):
    """Through the installed entry point's module, in parallel: exit code 2, one line on stderr,
    an empty cwd afterwards."""
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({**BASE_SPACE, "trainable": "os.system"}))
    env = {k: v for k, v in os.environ.items() if k not in ("ABLATE_RUNS", "WANDB_DIR", "RAY_ADDRESS")}
    env.update(PYTHONPATH=str(REPO), ABLATE_CACHE=str(tmp_path / "cache"), WANDB_MODE="offline")
    procs = []
    for i, (args, needle) in enumerate(SUBPROCESS_CASES):
        cwd = tmp_path / f"cwd{i}"
        cwd.mkdir()
        argv = [a.replace("{data}", str(data_dir)).replace("{space}", str(space)) for a in args]
        procs.append((cwd, needle, subprocess.Popen([sys.executable, "-m", "ablate.cli", *argv],
                                                    cwd=cwd, env=env, stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE, text=True)))
    for cwd, needle, p in procs:
        out, err = p.communicate(timeout=120)
        lines = err.strip().splitlines()
        assert p.returncode == 2, (p.args, out, err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
        assert list(cwd.iterdir()) == []
    assert not (tmp_path / "cache").exists()
