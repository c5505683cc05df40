"""Several workers per trial: Ray Train's TorchTrainer runs one Trainer per worker, torch DDP (or
FSDP2) all-reduces the gradients. Nothing here schedules or communicates by itself: Ray Train places
and starts the workers (inside the trial's Tune session when there is one), torch.distributed
carries the collectives.

Data layout (exact, not approximate): every worker draws the same prompts, generates the rollouts
of its own share of them (sharded by prompt), and all workers gather the full rollout batch, so the
advantage slot sees every group and the whole batch (group z-scores, batch whitening, Beta fits
are the single-worker values). Each worker then trains on the rows of its prompts; loss
normalisers are the global minibatch counts and the loss is scaled by the world size, so DDP's
gradient average equals the single-worker minibatch gradient. Diagnostics are reduced exactly
(token-weighted means, max/min), gradient variance uses all workers' microbatches, Pass@k uses all
eval prompts, and only rank 0 logs to W&B and the run store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from ablate.schema import ResourcesConfig
from ablate.upge.aggregation import Normalizer

STRATEGIES = ("ddp", "fsdp")
# set by the sweep's trial function (ablate.sweep.trial) in its Tune worker: a multi-worker run
# started there reports through Tune (Ray has no public "am I in a Tune trial" call)
TUNE_TRIAL_ENV = "ABLATE_TUNE_TRIAL"


@dataclass
class Dist:
    """The worker's place in the group; ``world == 1`` is the plain single-process run."""

    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if not self.active:
            return t
        import torch.distributed as td
        ops = {"sum": td.ReduceOp.SUM, "max": td.ReduceOp.MAX, "min": td.ReduceOp.MIN}
        out = t.clone()
        td.all_reduce(out, op=ops[op])
        return out

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        import torch.distributed as td
        out: list[Any] = [None] * self.world
        td.all_gather_object(out, obj)
        return out

    def shard(self, n: int) -> slice:
        """This worker's contiguous share of ``n`` items (prompts, groups); the last worker also
        takes the remainder, so every item belongs to exactly one worker."""
        per = n // self.world
        return slice(self.rank * per, n if self.rank == self.world - 1 else (self.rank + 1) * per)

    def normalizer(self, norm: Normalizer) -> Normalizer:
        """Counts of the whole minibatch, summed over workers (the horizon is the global max)."""
        if not self.active:
            return norm
        t = torch.tensor([norm.num_tokens, norm.num_seqs], dtype=torch.float64)
        tot = self.all_reduce(t)
        h = self.all_reduce(torch.tensor([float(norm.horizon)], dtype=torch.float64), "max")
        return Normalizer(num_tokens=float(tot[0]), num_seqs=float(tot[1]), horizon=int(h[0]))

    def wrap(self, model: torch.nn.Module, strategy: str) -> torch.nn.Module:
        """The module the training forward runs through: DDP, or FSDP2 ``fully_shard`` in place."""
        if not self.active:
            return model
        if strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard
            for layer in _decoder_layers(model):
                fully_shard(layer)
            fully_shard(model)
            return model
        from torch.nn.parallel import DistributedDataParallel
        dev = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Transformer blocks to shard one by one (HF causal LMs keep them in ``model.layers``)."""
    inner = model.get_submodule("model") if any(n == "model" for n, _ in model.named_children()) else model
    layers = [m for n, m in inner.named_children() if n == "layers"]
    return list(layers[0]) if layers else []


def run_workers(res: ResourcesConfig, train_fn: Callable[[dict], None], loop_config: dict,
                storage_path: Optional[str] = None) -> None:
    """Run ``train_fn(loop_config)`` on ``resources.workers`` Ray Train workers (TorchTrainer).

    Inside a Tune trial the workers' reports reach Tune through TuneReportCallback; outside one a
    local Ray instance is started for the run."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    gpu = res.gpu_per_worker
    callbacks = []
    if os.environ.get(TUNE_TRIAL_ENV) == "1":
        from ray.tune.integration.ray_train import TuneReportCallback
        callbacks.append(TuneReportCallback())
    elif not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 num_cpus=max(1, int(round(res.cpu_per_worker * res.workers + 0.499))))
    scaling = ScalingConfig(num_workers=res.workers, use_gpu=gpu > 0,
                            resources_per_worker={"CPU": res.cpu_per_worker,
                                                  **({"GPU": gpu} if gpu > 0 else {})})
    backend = res.backend if res.backend != "auto" else ("nccl" if gpu > 0 else "gloo")
    # a fixed name under the run's own storage: running it again (a retried or resumed trial)
    # restores Ray Train's latest checkpoint, which the workers read with ray.train.get_checkpoint()
    trainer = TorchTrainer(train_fn, train_loop_config=loop_config, scaling_config=scaling,
                           torch_config=TorchConfig(backend=backend),
                           run_config=RunConfig(storage_path=storage_path, callbacks=callbacks,
                                                name="workers"))
    trainer.fit()


def worker_dist() -> Dist:
    """The Dist of the current Ray Train worker."""
    import ray.train
    ctx = ray.train.get_context()
    return Dist(rank=ctx.get_world_rank(), world=ctx.get_world_size())
