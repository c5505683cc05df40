"""Slot 2, the denominator π_ref: log π_ref per token, detached (or a detached function of π_θ).

The estimator applies the weight π_θ/π_ref = exp(log g − log π_ref): π_ref = sg(π_θ) gives weight 1
and gradient ∇log π (REINFORCE/SFT); π_ref = π_old gives the PPO ratio; π_ref = sg(π_θ/w) gives a
weight w with gradient w·∇log π (GSPO, CISPO, DPPO, MinPRO).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from ablate.spec.params import Frac, NonNeg, Num, Positive
from ablate.component import ACTS_NEUTRAL, ACTS_ON_DRIFT, Acts
from ablate.upge.slots.base import Denominator, TokenContext
from ablate.upge.slots.mask import DemoRouting, valid_tokens


class CurrentPolicy(Denominator):
    """π_ref = sg(π_θ): weight 1, gradient ∇log π (SFT, REINFORCE, RLOO, GPG; verl `gpg`)."""

    ACTS = ACTS_NEUTRAL  # weight 1: the family's neutral choice
    PEER_LOGP_VALUE = True  # verl compute_policy_loss_gpg: −Â·log π

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        return ctx.logp.detach()


class Behaviour(Denominator):
    """π_ref = π_old, the behaviour policy: weight ρ = π_θ/π_old (PPO, GRPO, DAPO; verl `vanilla`)."""

    ACTS = ACTS_ON_DRIFT  # weight ≡ 1 while π_θ = π_old: the gradient of current_policy

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        return ctx.old_logp.detach()


class Unit(Denominator):
    """π_ref ≡ 1: weight π_θ, gradient ∇π (offline demonstrations in LUFFY 2504.14945 / SRFT)."""

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        return torch.zeros_like(ctx.logp).detach()


class GSPOSequence(Denominator):
    """GSPO-token denominator (2507.18071; verl `gspo`): log π_ref_t = sg(log π_t − log s_i).

    The weight is the sequence ratio s_i = exp(mean_t log ρ_{i,t}) at every token of row i, with
    gradient s_i·∇log π_t; under seq-mean-token-mean this is ∇ of the GSPO objective s_i·A_i.
    ``max_log_ratio`` caps the *weight* at e^cap and keeps its gradient e^cap·∇log π (TRL: no cap,
    the default here). verl's ``clamp(log s, max=10)`` also zeroes the gradient beyond the cap: add
    the mask ``SequenceClip(max_log_ratio=10)`` (conf: mask=gspo_seq_clip_verl) for that.
    """

    ACTS = ACTS_ON_DRIFT  # weight ≡ 1 while π_θ = π_old: the gradient of current_policy

    def __init__(self, max_log_ratio: Optional[Num] = None):
        self.max_log_ratio = max_log_ratio

    ROW_FORM = True  # w_i = s_i (capped)

    def row_log_weight(self, ctx: TokenContext) -> torch.Tensor:
        log_s = ctx.seq_log_ratio
        return log_s if self.max_log_ratio is None else log_s.clamp(max=self.max_log_ratio)

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        return ctx.logp.detach() - self.row_log_weight(ctx)[:, None]


class ClippedRatio(Denominator):
    """Bounded IS weight w = sg(clip(ρ)) with gradient w·∇log π (CISPO 2506.13585; DPPO 2602.04879).

    w = clip(ρ, 1−eps_low, 1+eps_high) (verl `cispo`; either bound None = open), then
    min(w, max_ratio) when set (TRL `cispo`: min(ρ, epsilon_high) with an absolute cap such as 5.0;
    verl DPPO: sg(min(ρ, clip_ratio_c)), 20 when the config has no clip_ratio_c, 10000 in verl's DPPO
    example). log π_ref = sg(log π_θ − log w).
    """

    PEER_LOGP_VALUE = True  # verl compute_policy_loss_cispo: −Â·sg(clip(ρ))·log π

    def acts(self) -> Acts:
        """sg(clip(1)) = 1 on-policy unless an absolute cap below 1 scales every token."""
        return ACTS_ON_DRIFT if self.max_ratio is None or self.max_ratio >= 1.0 else Acts()

    def __init__(self, eps_low: Optional[Frac] = 0.2, eps_high: Optional[NonNeg] = 0.28,
                 max_ratio: Optional[Positive] = None):
        self.eps_low = eps_low
        self.eps_high = eps_high
        self.max_ratio = max_ratio

    def log_weight(self, ctx: TokenContext) -> torch.Tensor:
        """log w: the clipped log-ratio, then capped by max_ratio (clip first, min last)."""
        lw = ctx.log_ratio
        if self.eps_low is not None:
            lw = lw.clamp(min=math.log(1.0 - self.eps_low))
        if self.eps_high is not None:
            lw = lw.clamp(max=math.log(1.0 + self.eps_high))
        if self.max_ratio is not None:
            lw = lw.clamp(max=math.log(self.max_ratio))
        return lw

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        return ctx.logp.detach() - self.log_weight(ctx)


class VespoGamma(Denominator):
    """VESPO gamma weight (TRL 1.16 GRPOTrainer loss_type="vespo", ``get_gamma_weights``): the
    detached sequence weight φ(w) = e^λ·w^k·e^(−λw) (φ(1) = 1) with gradient φ·Â·∇log π.

    w = exp(clamp(Σ_t clamp(log ρ_t, ±20)·M, log 1e-8, 20)) per row; (k, λ) = (k_pos, λ_pos) where
    Â ≥ 0, else (k_neg, λ_neg); λ ≥ 1e-4. log π_ref = sg(log π_θ − log φ). TRL's value −φ·Â·log π is
    ``pg_loss_peer``. Without a train–inference IS ratio (ablate applies rollout.is_correction apart).
    """

    PEER_LOGP_VALUE = True
    ACTS = ACTS_ON_DRIFT  # w = 1 while π_θ = π_old, and φ(1) = 1: the gradient of current_policy

    def __init__(self, k_pos: Num = 2.0, lambda_pos: Num = 3.0, k_neg: Num = 3.0,
                 lambda_neg: Num = 2.0):
        self.k_pos = k_pos
        self.lambda_pos = lambda_pos
        self.k_neg = k_neg
        self.lambda_neg = lambda_neg

    def log_weight(self, ctx: TokenContext) -> torch.Tensor:
        """log φ per token (constant along each row where Â is)."""
        lr = ctx.log_ratio.detach().clamp(-20.0, 20.0)
        log_w = (lr * ctx.response_mask).sum(-1, keepdim=True).clamp(math.log(1e-8), 20.0)
        nonneg = ctx.advantages >= 0
        k = torch.where(nonneg, torch.full_like(lr, self.k_pos), torch.full_like(lr, self.k_neg))
        lam = torch.where(nonneg, torch.full_like(lr, self.lambda_pos),
                          torch.full_like(lr, self.lambda_neg)).clamp_min(1e-4)
        return lam + k * log_w - lam * torch.exp(log_w)

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        return ctx.logp.detach() - self.log_weight(ctx)


class PrefixMin(Denominator):
    """MinPRO prefix-min weight (2601.22718): w_t = sg(min_{j≤t} ρ_j) over valid tokens, gradient ∇log π.

    A non-cumulative stand-in for the exact trajectory weight Π_{j≤t} ρ_j; padding never lowers it.
    """

    ACTS = ACTS_ON_DRIFT  # weight ≡ 1 while π_θ = π_old: the gradient of current_policy

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        valid = valid_tokens(ctx)
        lr = ctx.log_ratio
        big = torch.full_like(lr, torch.finfo(lr.dtype).max)
        cm = torch.cummin(torch.where(valid, lr, big), dim=-1).values
        log_w = torch.where(valid, cm, torch.zeros_like(lr))
        return ctx.logp.detach() - log_w


class HazardPenalty(Denominator):
    """MHPO Decoupled Hazard Penalty (2603.16929): log π_ref = log π_old + sg ζ, so that with the
    ``LogFidelity`` likelihood (same ``c``) the per-token weight is exp(ψ − sg ζ).

    ζ = (softplus(ψ)/λ₊)^{k₊} + (softplus(−ψ)/λ₋)^{k₋} on the detached ψ = c·tanh(log r / c)
    (Weibull cumulative hazards for expansion r > 1 and contraction r < 1; semi-gradient: ζ only
    scales the gradient). At r = 1, ζ = (ln2/λ₊)^{k₊} + (ln2/λ₋)^{k₋} (≈ 1.33 with the defaults).
    """

    def __init__(self, c: Positive = 1.5, k_pos: Positive = 1.5, lam_pos: Positive = 1.0, k_neg: Positive = 2.0,
                 lam_neg: Positive = 0.8):
        self.c = c
        self.k_pos = k_pos
        self.lam_pos = lam_pos
        self.k_neg = k_neg
        self.lam_neg = lam_neg

    def zeta(self, ctx: TokenContext) -> torch.Tensor:
        psi = self.c * torch.tanh(ctx.log_ratio / self.c)
        sp = torch.nn.functional.softplus
        return (sp(psi) / self.lam_pos) ** self.k_pos + (sp(-psi) / self.lam_neg) ** self.k_neg

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        return (ctx.old_logp + self.zeta(ctx)).detach()


class DemoSplit(DemoRouting, Denominator):
    """Different denominators for on-policy and demonstration rows (LUFFY: π_old on-policy, ≡1 on demos)."""

    def __init__(self, on_policy: Any, demo: Any):
        DemoRouting.__init__(self, on_policy, demo)

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        return self.route(ctx, self.merge_tensors).detach()
