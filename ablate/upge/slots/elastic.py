"""ETR elastic trust regions (arXiv 2601.03723): a PPO clip whose bounds widen with the token's
advantage magnitude (micro level) and with its group's reward variance (macro level)."""

from __future__ import annotations

from typing import Annotated

import torch

from ablate.spec.params import Frac, Ge, NonNeg, Num, Positive
from ablate.component import ACTS_ON_DRIFT
from ablate.upge.slots.base import Mask, MaskResult, TokenContext
from ablate.upge.slots.mask import _result, valid_tokens


class ElasticClip(Mask):
    """PPO clip with per-token bounds ε·s_{i,t}, s = min(max_scale, (1 + α·|Â_{i,t}|)·(1 + β·Var_g/var_ref)).

    Var_g is the population variance of the row's group rewards (``ctx.rows["group_reward_var"]``,
    p̂(1−p̂) for 0/1 rewards, filled by the trainer); ``var_ref`` = 0.25 makes the macro factor 1 + β
    at p̂ = ½, the middle of the "optimal learning zone". The abstract states only the two
    dependencies; these scaling functions are a reading (no formula retrieved). The lower bound is
    kept below 1 (ε_low·s ≤ ``max_eps_low``). Events ``clip_low``/``clip_high`` as in PPOClip.
    """

    ACTS = ACTS_ON_DRIFT  # ρ ≡ 1 on-policy: inside any bounds ε·s > 0

    def __init__(self, eps_low: Frac = 0.2, eps_high: NonNeg = 0.2, alpha: NonNeg = 0.5, beta: NonNeg = 1.0,
                 var_ref: Positive = 0.25, max_scale: Annotated[Num, Ge(1)] = 3.0, max_eps_low: Frac = 0.95):
        self.eps_low = eps_low
        self.eps_high = eps_high
        self.alpha = alpha
        self.beta = beta
        self.var_ref = var_ref
        self.max_scale = max_scale
        self.max_eps_low = max_eps_low

    def scale(self, ctx: TokenContext) -> torch.Tensor:
        """s_{i,t} [B, T]: the factor both clip bounds are multiplied by."""
        var = ctx.rows.get("group_reward_var")
        if var is None:
            raise ValueError("ElasticClip needs ctx.rows['group_reward_var'] (per-row group reward "
                             "variance, filled by the trainer in RolloutBatch.rows)")
        var = var.to(device=ctx.advantages.device, dtype=ctx.advantages.dtype)
        macro = 1.0 + self.beta * var[:, None] / self.var_ref
        micro = 1.0 + self.alpha * ctx.advantages.abs()
        return (micro * macro).clamp(max=self.max_scale)

    def __call__(self, ctx: TokenContext) -> MaskResult:
        s = self.scale(ctx)
        lo = (self.eps_low * s).clamp(max=self.max_eps_low)
        hi = self.eps_high * s
        ratio, adv, valid = ctx.ratio, ctx.advantages, valid_tokens(ctx)
        low = valid & (adv < 0) & (ratio < 1.0 - lo)
        high = valid & (adv > 0) & (ratio > 1.0 + hi)
        out = _result({"clip_low": low, "clip_high": high}, ctx.response_mask)
        w = torch.zeros_like(ratio)
        out.clipped_weight = torch.where(high, 1.0 + hi, torch.where(low, 1.0 - lo, w))
        return out
