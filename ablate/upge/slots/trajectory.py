"""Trajectory-wise importance ratio s_i = Π_t ρ_{i,t} = π_θ(y_i)/π_old(y_i) and its clip (P3O's
separate-clip variant, arXiv 2310.00212; TRL's RLOOTrainer sequence ratio). Not GSPO's geometric mean."""

from __future__ import annotations

from typing import Optional

import torch

from ablate.spec.params import Frac, NonNeg
from ablate.component import ACTS_ON_DRIFT
from ablate.upge.slots.base import Denominator, Mask, MaskResult, TokenContext
from ablate.upge.slots.mask import _result, valid_tokens


def seq_log_ratio_sum(ctx: TokenContext) -> torch.Tensor:
    """log s_i = Σ_t log ρ_{i,t} over valid tokens, detached, [B]."""
    return ctx.log_ratio.sum(-1)


class TrajectoryRatio(Denominator):
    """log π_ref_t = sg(log π_t − log s_i): weight s_i at every token of row i, gradient s_i·∇log π_t.
    Under seq-mean-token-sum this is ∇ of (1/N) Σ_i s_i·Â_i, the trajectory-level surrogate."""

    ACTS = ACTS_ON_DRIFT  # weight s_i ≡ 1 on-policy: the gradient of current_policy

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        return ctx.logp.detach() - seq_log_ratio_sum(ctx)[:, None]


class TrajectoryClip(Mask):
    """PPO clip on the trajectory ratio s_i (broadcast to the row's tokens): M = 0 where
    (Â>0 ∧ s>1+ε_high) or (Â<0 ∧ s<1−ε_low) — each response clipped separately (P3O "separate").
    Events ``seq_clip_low``/``seq_clip_high``, also reported as ``clip_low``/``clip_high``."""

    ACTS = ACTS_ON_DRIFT  # s_i ≡ 1 on-policy

    def __init__(self, eps_low: Frac = 0.2, eps_high: Optional[NonNeg] = None):
        self.eps_low, self.eps_high = eps_low, eps_low if eps_high is None else eps_high

    def __call__(self, ctx: TokenContext) -> MaskResult:
        s = torch.exp(seq_log_ratio_sum(ctx))[:, None]
        adv, valid = ctx.advantages, valid_tokens(ctx)
        low = valid & (adv < 0) & (s < 1.0 - self.eps_low)
        high = valid & (adv > 0) & (s > 1.0 + self.eps_high)
        return _result({"seq_clip_low": low, "seq_clip_high": high, "clip_low": low, "clip_high": high},
                       ctx.response_mask)
