"""Group-coupled classification terms: REAL (arXiv 2602.05630).

Per prompt group g, with s̄_i = mean_t log π_θ(y_i,t)/π_old(y_i,t) and O⁺/O⁻ its correct/incorrect
responses (reward > ``threshold``):

    L_g = log(1 + Σ_{i∈O⁺} e^{−s̄_i/τ}) + log(1 + Σ_{i∈O⁻} e^{s̄_i/τ})

(the "1" terms are anchor logits 0; Red-RL/REAL README, ms-swift REAL doc, τ = 0.5 ms-swift default).
∂L/∂s̄_i couples every response of the prompt at the current parameters, so this is computed in the
loss over whole groups (``Needs(whole_groups=True)``), not in a pre-update advantage slot. The loss is
Σ_g L_g divided by the minibatch's group count, so microbatch accumulation is exact.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from ablate.component import Needs
from ablate.objectives.base import ROW_KINDS, Term, TermOutput
from ablate.objectives.grouped import dense_groups, group_log1p_sum_exp, participants, sequence_log_ratio
from ablate.spec.params import Num, Positive
from ablate.upge.aggregation import Normalizer
from ablate.upge.diagnostics import mean, partial
from ablate.upge.slots.base import TokenContext


class GroupLogistic(Term):
    """REAL's anchored group classification loss on length-averaged log-ratios (module doc).

    ``length_mean`` = True uses s̄ = mean_t log ρ (REAL); False uses Σ_t log ρ."""

    NEEDS: ClassVar[Needs] = Needs(whole_groups=True)

    def __init__(self, weight: Num = 1.0, rows: Literal[ROW_KINDS] = "policy", tau: Positive = 0.5,
                 threshold: Num = 0.5, length_mean: bool = True):
        super().__init__(weight=weight, rows=rows)
        self.tau, self.threshold, self.length_mean = tau, threshold, length_mean

    def loss(self, ctx: TokenContext, norm: Normalizer) -> TermOutput:
        if ctx.group_ids is None or ctx.rewards is None:
            raise ValueError("GroupLogistic needs ctx.group_ids and ctx.rewards")
        idx = torch.nonzero(participants(ctx.response_mask)).reshape(-1)
        if idx.numel() == 0:
            zero = (ctx.logp * 0).sum()
            return TermOutput(loss=zero, diags={"pg_loss": partial(zero)})
        s = sequence_log_ratio(ctx.logp, ctx.old_logp, ctx.response_mask, mean=self.length_mean)[idx]
        pos = ctx.rewards.to(s.device)[idx] > self.threshold
        inv, G = dense_groups(ctx.group_ids[idx])
        l_pos = group_log1p_sum_exp(-s / self.tau, inv, G, pos)
        l_neg = group_log1p_sum_exp(s / self.tau, inv, G, ~pos)
        value = (l_pos + l_neg).sum() / norm.num_groups
        with torch.no_grad():
            diags = {"pg_loss": partial(value), "real/pos_frac": mean(pos.to(s.dtype).mean()),
                     "real/log_ratio_mean": mean(s.mean())}
        return TermOutput(loss=value, diags=diags)
