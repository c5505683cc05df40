"""The RL optimizer and its learning-rate schedules. Schedules all go through
``transformers.get_scheduler`` (HF Trainer's and TRL's conventions: linear warm-up from 0 over
``warmup`` optimizer steps, then the named decay to 0 at ``total``). Used by the trainer
(train.scheduler) and the value model (critic.warmup_steps)."""

from __future__ import annotations

from typing import Iterable

import torch

FUSED_DEVICES = ("cpu", "cuda")  # where torch's fused AdamW kernel exists for every float dtype


def adamw(params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float],
          weight_decay: float) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where every parameter is on a device that has it (HF
    Trainer's and so TRL's default, ``adamw_torch_fused``): the same update as the per-tensor loop,
    one kernel per step instead of ~10 per parameter (1.8 → 0.7 ms per step on CPU for the
    0.66M-parameter tiny policy's 38 tensors)."""
    params = list(params)
    fused = all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay,
                             fused=fused or None)

# our names (schema: train.scheduler) -> transformers' SchedulerType
SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def lr_schedule(opt: torch.optim.Optimizer, kind: str, warmup: int,
                total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-optimizer-step schedule; ``kind`` was checked by the schema (one of SCHEDULES)."""
    # imported here: transformers.optimization pulls in trainer_utils and peft (≈ 2.6 s), which
    # the sweep driver would pay just to resolve the critic's class in its preflight
    from transformers import get_scheduler

    return get_scheduler(SCHEDULES[kind], opt, num_warmup_steps=warmup,
                         num_training_steps=max(1, total))
