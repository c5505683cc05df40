"""Trial checkpoints: a run resumed from a checkpoint logs exactly what an uninterrupted run logs,
and train.save_model writes an HF checkpoint that model.path loads."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from ablate.config import compose_config
from ablate.train.api import run_training

# tiny: ~1-2 s per run once the (10-step) warm start is cached
TINY = ["train.steps=4", "train.prompts_per_step=4", "train.group_size=2", "train.microbatches=1",
        "eval.num_prompts=4", "eval.n=2", "eval.every=2", "tracker=none", "threads=1",
        "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
        "model.intermediate_size=64", "model.warm_start.steps=10",
        "model.warm_start.target_pass1=null"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def metric_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without what legitimately differs between attempts (timings, wall time)."""
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("perf/") and k != "time"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


class _Killed(Exception):
    pass


def test_resumed_run_logs_the_same_metrics_as_an_uninterrupted_one(tmp_path):
    ov = TINY + ["method=grpo", "seed=3"]
    run_training(ov, tmp_path / "ref")
    saved: dict[str, bytes] = {}

    def hook(trainer, step):
        if step == 2:  # what a trial checkpoint holds, serialised at that moment
            buf = io.BytesIO()
            torch.save({"trainer": trainer.state_dict(), "store": trainer.tracker.position()}, buf)
            saved["ckpt"] = buf.getvalue()
        if step == 3:  # killed after logging step 3: that line must not appear twice
            raise _Killed

    with pytest.raises(_Killed):
        run_training(ov, tmp_path / "cut", on_step_end=hook)
    cut = metric_rows(tmp_path / "cut")
    assert [r["step"] for r in cut] == [0, 1, 2, 3]
    ckpt = torch.load(io.BytesIO(saved["ckpt"]), weights_only=False)
    assert ckpt["store"]["metrics_lines"] == 3
    summary = run_training(ov, tmp_path / "cut", resume=ckpt)
    ref, got = metric_rows(tmp_path / "ref"), metric_rows(tmp_path / "cut")
    assert [r["step"] for r in got] == [0, 1, 2, 3, 4]
    assert got == ref  # bit-identical: same prompts, samples, optimizer and RNG state
    assert summary["final"]["eval/pass@1"] == json.loads(
        (tmp_path / "ref" / "summary.json").read_text())["final"]["eval/pass@1"]
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["status"] == "finished"


def test_a_store_shorter_than_its_checkpoint_is_refused(tmp_path):
    from ablate.tracking.run_store import RunStore

    s = RunStore(tmp_path)
    s.log({"a": 1.0}, step=1)
    pos = s.position()
    s.close()
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(RuntimeError, match="cannot resume"):
        RunStore(tmp_path, resume=pos)


@pytest.mark.parametrize("mode", ["final", "best"])
def test_save_model_writes_a_checkpoint_model_path_loads(tmp_path, mode):
    from ablate.train.trainer import Trainer

    summary = run_training(TINY + [f"train.save_model={mode}"], tmp_path / "run")
    model_dir = tmp_path / "run" / "model"
    assert summary["model_dir"] == str(model_dir.resolve())
    meta = json.loads((model_dir / "ablate_model.json").read_text())
    assert (model_dir / "config.json").is_file() and (model_dir / "tokenizer.json").is_file()
    cfg = compose_config(TINY + [f"model.path={model_dir}", "model.warm_start.steps=0"])
    trainer = Trainer(cfg)
    assert trainer.policy.info["source"] == str(model_dir)
    # the loaded weights and tokenizer reproduce the eval the run logged at that step
    ev, _ = trainer.evaluate(meta["step"])
    rows = {r["step"]: r for r in metric_rows(tmp_path / "run") if "eval/pass@1" in r}
    assert ev["eval/pass@1"] == rows[meta["step"]]["eval/pass@1"]
    if mode == "final":
        assert meta["step"] == 4
    else:
        assert meta["metrics"]["eval/pass@1"] == max(r["eval/pass@1"] for s, r in rows.items() if s)


def test_save_model_rejects_unknown_values(tmp_path):
    from ablate.errors import ConfigError

    with pytest.raises(ConfigError, match="train.save_model"):
        run_training(TINY + ["train.save_model=sometimes"], tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_summaries_left_running_become_interrupted(tmp_path):
    from ablate.sweep.runner import mark_interrupted_runs
    from ablate.tracking.run_store import RunStore

    for name, finish in (("a", False), ("b", True)):
        s = RunStore(tmp_path / "trials" / name)
        s.write_summary(status="running")
        s.log({"x": 1.0}, step=1)
        if finish:
            s.finish("finished")
        else:
            s.close()  # as a killed process leaves it
    assert mark_interrupted_runs(tmp_path) == 1
    a = json.loads((tmp_path / "trials" / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "trials" / "b" / "summary.json").read_text())
    assert a["status"] == "interrupted" and "--resume" in a["error"] and b["status"] == "finished"


def test_resumed_run_keeps_per_prompt_eval_rows_exactly_once(tmp_path):
    """eval_prompts.jsonl survives a kill after an eval step (and a torn line): the resumed run has
    the uninterrupted run's rows, none duplicated or lost."""
    from ablate.tracking.run_store import read_eval_prompts

    ov = TINY + ["method=grpo", "seed=5", "train.steps=3", "eval.every=1"]
    run_training(ov, tmp_path / "ref")
    saved: dict[str, bytes] = {}

    def hook(trainer, step):
        if step == 1:
            buf = io.BytesIO()
            torch.save({"trainer": trainer.state_dict(), "store": trainer.tracker.position()}, buf)
            saved["ckpt"] = buf.getvalue()
        if step == 2:  # step 2's eval rows are on disk when it dies
            raise _Killed

    with pytest.raises(_Killed):
        run_training(ov, tmp_path / "cut", on_step_end=hook)
    with open(tmp_path / "cut" / "eval_prompts.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 3, "prompt_id"')
    assert sorted({r["step"] for r in read_eval_prompts(tmp_path / "cut")}) == [0, 1, 2]
    run_training(ov, tmp_path / "cut", resume=torch.load(io.BytesIO(saved["ckpt"]), weights_only=False))
    ref, got = read_eval_prompts(tmp_path / "ref"), read_eval_prompts(tmp_path / "cut")
    assert [r["step"] for r in ref] == [s for s in range(4) for _ in range(4)]  # 4 prompts per eval
    assert all(r["n"] == 2 and 0 <= r["c"] <= 2 for r in ref)
    assert got == ref
    # pass@1 in metrics.jsonl is the mean of c/n over the prompts of each eval step
    evals = {r["step"]: r["eval/pass@1"] for r in metric_rows(tmp_path / "ref") if "eval/pass@1" in r}
    for s, v in evals.items():
        rows = [r for r in ref if r["step"] == s]
        assert v == pytest.approx(sum(r["c"] / r["n"] for r in rows) / len(rows))
