"""Multi-worker trials on CPU (gloo, 2 workers): one optimizer step equals the single-worker step on
the same batch, metrics are reduced exactly, and `ablate train resources.workers=2` runs on Ray Train."""

from __future__ import annotations

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
