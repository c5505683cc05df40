"""GBPO (Group-relative Bounded Policy Optimization, arXiv 2604.18578, "Bounded Ratio Reinforcement
Learning"): each token's ratio ρ = π_θ/π_old is regressed (L1) towards a bounded target ratio, the
regression weighted by |Â|.

Read from the authors' code, bounded-ratio-rl/bounded_ratio_rl@64ff1cdfb2bc891899b541abcbeb81ad2d5b14e4
src/verl/trainer/ppo/core_algos.py (``compute_gbpo_outcome_advantage_and_target``,
``compute_policy_loss_gbpo``):

    Â_i      = (r_i − mean_g r)/(std_g r + ε)             (GRPO's z-score: the weights)
    z̃_i      = (r_i − median_g r)/(std_g r + ε)/τ         (median advantage: the target signal)
    ρ*_i     = 1 − ε_low + (ε_low + ε_high)·σ(z̃_i)        (→ (1+ε)·π_old above the median, (1−ε)·π_old below)
    L        = agg_t |ρ_t − ρ*_i|·|Â_i|                   (token-mean in the authors' runs)

std is Bessel-corrected, the median is torch.quantile(·, 0.5) (the mean of the two middle rewards for
an even group); a one-row group has mean 0, std 1, median 0. ρ = exp(clamp(log π_θ − log π_old, ±20)).
The target needs each prompt's whole group (``Needs(whole_groups=True)``); the weights come from the
term's advantage slot (GRPO's z-score in the preset).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

import torch

from ablate.component import Needs
from ablate.objectives.base import ROW_KINDS, Term, TermOutput
from ablate.objectives.grouped import dense_groups
from ablate.spec.params import Num, OpenProb, Positive
from ablate.upge.aggregation import Aggregation, Normalizer
from ablate.upge.diagnostics import mean, partial
from ablate.upge.slots.base import Advantage, TokenContext


@torch.no_grad()
def median_target(rewards: torch.Tensor, group_ids: torch.Tensor, temperature: float,
                  eps: float = 1e-6) -> torch.Tensor:
    """z̃ = (r − median_g)/(std_g + ε)/τ per row ([B]); a one-row group: median 0, std 1."""
    inv, n_groups = dense_groups(group_ids)
    r = rewards
    out = torch.empty_like(r)
    for g in range(n_groups):
        rows = inv == g
        x = r[rows]
        if x.numel() == 1:
            med, std = x.new_zeros(()), x.new_ones(())
        else:
            med, std = torch.quantile(x, 0.5), x.std()
        out[rows] = (x - med) / (std + eps) / temperature
    return out


class BoundedRatioTerm(Term):
    """L = agg_t |ρ_t − ρ*_i|·|Â_i| with the bounded target ratio ρ* of the module doc."""

    NEEDS: ClassVar[Needs] = Needs(whole_groups=True)

    def __init__(self, advantage: Optional[Advantage] = None, eps_low: OpenProb = 0.2,
                 eps_high: Positive = 0.2, temperature: Positive = 1.0, eps: Positive = 1e-6,
                 weight: Num = 1.0, rows: Literal[ROW_KINDS] = "all", aggregation: Optional[Aggregation] = None):
        super().__init__(weight=weight, rows=rows, advantage=advantage, aggregation=aggregation)
        self.eps_low, self.eps_high, self.temperature, self.eps = eps_low, eps_high, temperature, eps

    def target_ratio(self, ctx: TokenContext) -> torch.Tensor:
        """ρ*_i = 1 − ε_low + (ε_low + ε_high)·σ(z̃_i), detached, [B]."""
        if ctx.rewards is None or ctx.group_ids is None:
            raise ValueError("BoundedRatioTerm needs ctx.rewards and ctx.group_ids")
        z = median_target(ctx.rewards.to(ctx.logp.dtype), ctx.group_ids, self.temperature, self.eps)
        return 1.0 - self.eps_low + (self.eps_low + self.eps_high) * torch.sigmoid(z)

    def loss(self, ctx: TokenContext, norm: Normalizer) -> TermOutput:
        ratio = torch.exp(torch.clamp(ctx.logp - ctx.old_logp, -20.0, 20.0))
        target = self.target_ratio(ctx)[:, None]
        mat = torch.abs((ratio - target) * ctx.advantages.detach())
        value = self.aggregation(mat, ctx.response_mask, norm)
        with torch.no_grad():
            m = ctx.response_mask > 0
            r = ratio.detach()
            out_of_band = ((r > 1.0 + self.eps_high) | (r < 1.0 - self.eps_low)) & m
            n = m.sum().clamp_min(1)
            diags = {"pg_loss": partial(value.detach()),
                     "gbpo/clipfrac": mean(out_of_band.sum() / n),
                     "gbpo/target_ratio_mean": mean((target.expand_as(r) * m).sum() / n)}
        return TermOutput(loss=value, diags=diags)

    def extra_repr(self) -> str:
        return (f"eps_low={self.eps_low}, eps_high={self.eps_high}, temperature={self.temperature}, "
                f"advantage={self.advantage!r}, aggregation={self.aggregation!r}")
