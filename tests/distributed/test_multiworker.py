"""Multi-worker trials on CPU (gloo, 2 workers): one optimizer step equals the single-worker step on
the same batch, metrics are reduced exactly, and `ablate train resources.workers=2` runs on Ray Train."""

from __future__ import annotations

import gc
import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ablate.config import compose_config

FAST = [
    "train.steps=2", "train.prompts_per_step=4", "train.group_size=4", "train.microbatches=2",
    "eval.num_prompts=4", "eval.n=4", "eval.every=0", "tracker=none", "threads=1",
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
    "model.warm_start.steps=10", "model.warm_start.target_pass1=null",
]
OVERRIDES = FAST + ["method=dapo", "train.minibatches=2", "train.max_grad_norm=1e9", "seed=5"]
# grad_var/grad_snr depend on which rows share a microbatch (the workers' shards differ from the
# single worker's random chunks); everything else is a per-token mean, an extreme, a minibatch
# loss or a global norm, so it must match
LAYOUT_DEPENDENT = {"train/grad_var", "train/grad_snr", "train/lr"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, batch_path: str, out_dir: str, cache: str,
            strategy: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), ABLATE_CACHE=cache)
    import torch.distributed as td
    from torch.distributed.tensor import DTensor

    from ablate.train.distributed import Dist
    from ablate.train.trainer import Trainer
    td.init_process_group("gloo", rank=rank, world_size=world)
    try:
        tr = Trainer(compose_config(OVERRIDES + [f"resources.strategy={strategy}"]), dist=Dist(rank, world))
        batch = torch.load(batch_path, weights_only=False)
        m = tr.update(batch, 1)
        full = [p.full_tensor() if isinstance(p.data, DTensor) else p.detach().clone()
                for p in tr.model.parameters()]  # FSDP2 shards parameters as DTensors
        if rank == 0:
            torch.save({"params": full, "metrics": m}, Path(out_dir) / "dist.pt")
    finally:
        # free the wrapped (DDP/FSDP) model before its process group: a trainer left for the
        # interpreter's teardown destroys gloo state after the group is gone and aborts the process
        tr = None
        gc.collect()
        td.destroy_process_group()


@pytest.fixture()
def cache(tmp_path_factory, monkeypatch):
    c = str(tmp_path_factory.getbasetemp() / "cache")
    monkeypatch.setenv("ABLATE_CACHE", c)
    return c


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_workers_take_the_single_worker_step(tmp_path, cache, strategy):
    from ablate.train.trainer import Trainer

    single = Trainer(compose_config(OVERRIDES))
    rollouts, _ = single.collect(1)
    batch = single.assemble(rollouts)
    single.objective.compute_advantages(batch)
    torch.save(batch, tmp_path / "batch.pt")
    m1 = single.update(batch.select(torch.arange(batch.batch_size)), 1)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path / "batch.pt"), str(tmp_path), cache,
                                      strategy), nprocs=2, join=True, start_method="spawn")
    got = torch.load(tmp_path / "dist.pt", weights_only=False)
    for a, b in zip(single.model.parameters(), got["params"]):
        torch.testing.assert_close(b, a.detach(), rtol=1e-4, atol=1e-6)
    m2 = got["metrics"]
    assert set(m1) - LAYOUT_DEPENDENT == set(m2) - LAYOUT_DEPENDENT
    for k in sorted(set(m1) - LAYOUT_DEPENDENT):
        assert m2[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-6), k
    assert m2["train/optimizer_steps"] == 2.0
    if strategy == "ddp":  # FSDP2's gradients are sharded: no per-microbatch variance there
        assert math.isfinite(m2["train/grad_var"]) and m2["train/grad_var"] > 0


def test_ablate_train_runs_two_ray_train_workers(tmp_path, cache):
    from ablate.train.api import run_config

    cfg = compose_config(FAST + ["method=grpo", "resources.workers=2", "resources.cpu_per_worker=0.5"])
    try:
        summary = run_config(cfg, run_dir=tmp_path / "run")
    finally:
        import ray
        ray.shutdown()
    assert summary["status"] == "finished" and summary["steps_done"] == 2
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2 and "eval/pass@4" in rows[-1] and math.isfinite(rows[-1]["train/pg_loss"])


from ablate.pipeline.base import Stage  # noqa: E402


class CrashAtStep3(Stage):
    """Fails at step 3 the first time (a marker file remembers): the interruption a multi-worker
    run must resume from."""

    def __init__(self, marker: str):
        self.marker = marker

    def __call__(self, r, env):
        if env.step == 3 and not Path(self.marker).exists():
            Path(self.marker).write_text("crashed")
            raise RuntimeError("injected failure at step 3")
        return r


def _rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("perf/") and k != "time"} for r in rows]


@pytest.mark.slow
def test_multiworker_run_resumes_from_its_ray_train_checkpoint(tmp_path, cache, monkeypatch):
    import ray

    from ablate.train.api import run_config
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))
    base = FAST + ["method=grpo", "resources.workers=2", "resources.cpu_per_worker=0.5", "train.steps=4",
                   "train.checkpoint_every=2"]
    stage = f"+pipeline.stages=[{{_target_: tests.distributed.test_multiworker.CrashAtStep3, marker: {tmp_path / 'm'}}}]"
    (tmp_path / "done").write_text("x")  # the reference run never crashes
    try:
        run_config(compose_config(base + [stage.replace(str(tmp_path / "m"), str(tmp_path / "done"))]),
                   run_dir=tmp_path / "ref")
        with pytest.raises(Exception, match="injected failure"):
            run_config(compose_config(base + [stage]), run_dir=tmp_path / "run")
        summary = run_config(compose_config(base + [stage]), run_dir=tmp_path / "run")
    finally:
        ray.shutdown()
    assert summary["status"] == "finished" and summary["steps_done"] == 4
    assert _rows(tmp_path / "run") == _rows(tmp_path / "ref")


@pytest.mark.slow
def test_two_trial_sweep_of_two_worker_trials(tmp_path, cache, spawn):
    import sys

    from tests.conftest import child_env

    import yaml
    space = {"name": "mw", "base_overrides": FAST + ["method=grpo", "train.epochs=2"],  # a mask can act
             "slots": {"mask": ["ppo_clip", "none"]},
             "seeds": [0], "metric": "eval/pass@1", "mode": "max", "search": {"algorithm": "grid"},
             "scheduler": None, "resources": {"cpu": 0.5, "gpu": 0, "workers": 2}, "max_concurrent": 2,
             "output_dir": str(tmp_path / "runs"), "wandb": {"mode": "disabled"}}
    f = tmp_path / "mw.yaml"
    f.write_text(yaml.safe_dump(space))
    env = {**child_env(), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = spawn.run([sys.executable, "-m", "ablate.cli", "sweep", str(f), "--no-report", "--num-cpus", "2",
                   "--allow-outside"],
                  env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    from ablate.tracking.trials import read_trials

    rows = read_trials(tmp_path / "runs" / "mw")
    assert sorted(r["status"] for r in rows) == ["finished", "finished"]
