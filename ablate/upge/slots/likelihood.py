"""Slot 4, the likelihood g: log g(π_θ) per token, the function of π_θ that carries the gradient.

Identity (log g = log π_θ) is the default; LUFFY's policy shaping and GSPO's length-averaged
sequence log-likelihood replace it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ablate.spec.params import Positive
from ablate.component import ACTS_NEUTRAL, ACTS_ON_DRIFT
from ablate.upge.slots.base import Likelihood, TokenContext
from ablate.upge.slots.mask import DemoRouting, valid_tokens


class Identity(Likelihood):
    """g(π) = π: log g = log π_θ, the plain policy-gradient score (PPO, GRPO, REINFORCE, ...)."""

    ACTS = ACTS_NEUTRAL  # g = π_θ: the family's neutral choice

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        return ctx.logp


class PolicyShaping(Likelihood):
    """LUFFY policy shaping f(π) = π/(π+γ) (2504.14945; HPT repo ``off_policy_reshape``).

    log g = log π − log(π + γ); with π_ref ≡ 1 the gradient is γ/(π+γ)²·∇π, which upweights
    low-probability demonstration tokens.
    """

    def __init__(self, gamma: Positive = 0.1):
        self.gamma = gamma

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        logp = ctx.logp
        return logp - torch.logaddexp(logp, torch.full_like(logp, math.log(self.gamma)))


class SequenceMean(Likelihood):
    """GSPO length-averaged sequence log-likelihood (2507.18071): ∇ = ∇ mean_t log π over valid tokens.

    Every token carries the value sg(log π_t) + (m_i − sg(m_i)), m_i = mean_t log π_{i,t}, so its value
    is the token's own log π and its gradient (1/|y_i|)·Σ_t ∇log π_{i,t}. Pair with the
    ``gspo_sequence`` denominator for the GSPO weight s_i.
    """

    ROW_FORM = True  # u_i = m_i − sg(m_i)

    def row_term(self, ctx: TokenContext) -> torch.Tensor:
        # Σ_t log π·mask (``ctx.seq_logp``, mask ∈ {0, 1}): a multiply, whose backward is one too;
        # ``where`` costs ~10× more on CPU both ways (bench/README.md, estimator section)
        m = ctx.seq_logp / ctx.lengths.to(ctx.logp.dtype)
        return m - m.detach()

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        return ctx.logp.detach() + self.row_term(ctx)[:, None]


class LogFidelity(Likelihood):
    """MHPO Log-Fidelity Modulator ("MHPO: Modulated Hazard-aware Policy Optimization", 2603.16929).

    log g = log π_old + ψ, ψ = c·tanh(log r / c), r = π_θ/π_old (unclamped, with gradient): near
    r = 1 ψ ≈ log r, far from it the gradient sech²(log r / c)·∇log π fades smoothly; with π_ref
    = π_old the weight is e^ψ ≤ e^c. Pair with ``denominator=mhpo`` (the hazard penalty), same c.
    """

    def __init__(self, c: Positive = 1.5):
        self.c = c

    def psi(self, ctx: TokenContext) -> torch.Tensor:
        """ψ per token, carrying the gradient (padding: garbage; the aggregation drops it)."""
        return self.c * torch.tanh((ctx.logp - ctx.old_logp) / self.c)

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        return ctx.old_logp.detach() + self.psi(ctx)


class SoftGate(Likelihood):
    """SAPO soft gate (TRL ``loss_type="sapo"``): the per-token loss −(4/τ)·σ(τ(ρ − 1))·Â with τ = τ₊
    for Â > 0 and τ₋ otherwise, in place of the hard clip. With π_ref = π_old (denominator=behaviour)
    log g = log π_old + log((4/τ)·σ(τ(ρ − 1))), so g/π_ref is TRL's ``soft_coef_1`` with its gradient
    (ρ unclamped, as TRL). Use with mask=none."""

    ACTS = ACTS_ON_DRIFT  # at ρ = 1 the gate's gradient is ∇log π: the identity likelihood's

    def __init__(self, tau_pos: Positive = 1.0, tau_neg: Positive = 1.05):
        self.tau_pos = tau_pos
        self.tau_neg = tau_neg

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        tau = torch.where(ctx.advantages > 0, torch.full_like(ctx.logp, self.tau_pos),
                          torch.full_like(ctx.logp, self.tau_neg))
        lr = torch.where(valid_tokens(ctx), ctx.logp - ctx.old_logp.detach(), torch.zeros_like(ctx.logp))
        rho = torch.exp(lr)
        gate = torch.log(4.0 / tau) + torch.nn.functional.logsigmoid(tau * (rho - 1.0))
        return ctx.old_logp.detach() + gate


class DemoSplit(DemoRouting, Likelihood):
    """Different likelihoods for on-policy and demonstration rows (LUFFY: identity on-policy, shaping on demos)."""

    def __init__(self, on_policy: Any, demo: Any):
        DemoRouting.__init__(self, on_policy, demo)

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        return self.route(ctx, self.merge_tensors)
