"""Learning-rate schedules, all through ``transformers.get_scheduler`` (HF Trainer's and TRL's
conventions: linear warm-up from 0 over ``warmup`` optimizer steps, then the named decay to 0 at
``total``). Used by the trainer (train.scheduler) and the value model (critic.warmup_steps)."""

from __future__ import annotations

import torch

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
