"""KL folded into the reward (REINFORCE++, RLOO, P3O): a per-token penalty −β·kl_t from the behaviour
and reference log-probs that the prescoring pass fills before the advantage slot.

kl_t is an estimate of KL(π_old ‖ π_ref) from the sampled token (behaviour = the sampling policy):
``k1`` = log π_old − log π_ref (verl ``kl_penalty: kl``, OpenRLHF/TRL default), ``k2`` = ½(·)²,
``k3`` = e^{−d} + d − 1. ``clamp`` bounds each kl_t (OpenRLHF clamps every estimator to ±10; verl
and TRL do not clamp k1).
"""

from __future__ import annotations

from typing import Optional

import torch

from ablate.errors import choice_error
from ablate.upge.batch import RolloutBatch

KL_REWARD_ESTIMATORS = ("k1", "k2", "k3")


def token_kl(batch: RolloutBatch, estimator: str = "k1", clamp: Optional[float] = None) -> torch.Tensor:
    """kl_t per valid token, float64 [B, T] (0 on padding). Needs ``batch.old_logp`` complete and
    ``batch.ref_logp`` (declare ``Needs(logp_before_advantage=True, ref_model=True)``)."""
    if batch.ref_logp is None:
        raise ValueError("KL in the reward needs batch.ref_logp (a frozen reference model); the trainer "
                         "scores it when a component declares Needs(ref_model=True)")
    mask = batch.response_mask.to(torch.float64)
    d = (batch.old_logp.to(torch.float64) - batch.ref_logp.to(torch.float64)) * mask
    if estimator == "k1":
        kl = d
    elif estimator == "k2":
        kl = 0.5 * d.square()
    elif estimator == "k3":
        kl = torch.expm1(-d) + d
    else:
        raise choice_error("kl_estimator", estimator, KL_REWARD_ESTIMATORS)
    if clamp is not None:
        kl = kl.clamp(-clamp, clamp)
    return kl * mask
