"""Regression / target-matching terms on sequence log-ratios: REBEL, CoPG, on-policy OAPL.

One family: with s_i = Σ_t log π_θ(y_i,t)/π_base(y_i,t) (base = behaviour π_old or the frozen
reference π_ref) and a detached target r_i from the rewards, the loss is a squared error

    pairs  ("all" | "adjacent"):  Σ_g c_g Σ_{(i,j) in g} (a·(s_i − s_j) − b·(r_i − r_j))²
    points ("none"):              Σ_g c_g Σ_{i in g} (a·s_i − b·Â*_i)²

divided by the minibatch's group count (``normalize: groups``) or response count (``responses``).
Each paper/peer convention is a named parameter (see conf/objective/{rebel,copg,oapl}.yaml):

* REBEL (arXiv 2404.16767; code ZhaolinGao/REBEL ``rebel.py``): base old, one pair per prompt,
  mean over pairs, (Δs − η·Δr)² (the code puts η on the reward: ``ratio_scale: 1, reward_scale: η``;
  the paper writes ((1/η)·Δs − Δr)²: ``ratio_scale: 1/η, reward_scale: 1``), reward with the
  sequence KL folded in: r − kl_coef·Σ_t(log π_old − log π_ref).
* CoPG (arXiv 2406.19185): base ref, all pairs, weight 1/(k−1), (ΔR − β·Δs)² (``ratio_scale: β``).
* OAPL (arXiv 2602.19362, NeMo-RL doc quoting Eq. 2–3), on-policy (lag L = 1): base old, points,
  Â* = r − β₁·ln mean_g exp(r/β₁), (β₂·s − Â*)², mean over responses.

Not a UPGE term: the loss is quadratic in s, so its per-token weight depends on the whole group at
the current parameters. It declares ``Needs(whole_groups=True)``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch

from ablate.component import Needs
from ablate.objectives.base import ROW_KINDS, Term, TermOutput
from ablate.objectives.grouped import (adjacent_pairs, all_pairs_sum, dense_groups, group_sums,
                                       participants, sequence_log_ratio)
from ablate.spec.params import Finite, Ge, Gt, Num, require
from ablate.upge.aggregation import Normalizer
from ablate.upge.diagnostics import mean, partial
from ablate.upge.slots.base import TokenContext

BASES = ("old", "ref")
PAIRS = ("all", "adjacent", "none")
GROUP_WEIGHTS = ("mean", "inv_k_minus_1", "sum")
NORMALIZE = ("groups", "responses")
TARGETS = ("reward", "optimal_advantage")


def optimal_advantage(r: torch.Tensor, inv: torch.Tensor, n_groups: int, beta1: float) -> torch.Tensor:
    """OAPL Eq. 2: Â*_i = r_i − β₁·ln mean_{j in g} exp(r_j/β₁) (stable log-sum-exp), [B]."""
    x = r / beta1
    mx = torch.full((n_groups,), float("-inf"), dtype=x.dtype, device=x.device).scatter_reduce(
        0, inv, x, reduce="amax", include_self=True)
    k = group_sums(torch.ones_like(x), inv, n_groups)
    lme = mx + torch.log(group_sums(torch.exp(x - mx[inv]), inv, n_groups) / k)
    return r - beta1 * lme[inv]


class LogRatioRegression(Term):
    """Squared error between a scaled sequence log-ratio and a reward-derived target (module doc)."""

    def __init__(self, weight: Num = 1.0, rows: Literal[ROW_KINDS] = "policy", base: Literal[BASES] = "old",
                 pairs: Literal[PAIRS] = "all", group_weight: Literal[GROUP_WEIGHTS] = "mean",
                 normalize: Literal[NORMALIZE] = "groups", ratio_scale: Annotated[Finite, Gt(0)] = 1.0,
                 reward_scale: Annotated[Finite, Ge(0)] = 1.0, target: Literal[TARGETS] = "reward",
                 beta1: Annotated[Finite, Gt(0)] = 1.0, kl_coef: Annotated[Finite, Ge(0)] = 0.0):
        super().__init__(weight=weight, rows=rows)
        require(target != "optimal_advantage" or pairs == "none", self, "pairs", pairs,
                "none with target optimal_advantage (a pairwise difference cancels the group's value V̂*)")
        self.base, self.pairs, self.group_weight, self.normalize = base, pairs, group_weight, normalize
        self.target, self.ratio_scale, self.reward_scale = target, ratio_scale, reward_scale
        self.beta1, self.kl_coef = beta1, kl_coef

    def needs(self) -> Needs:
        return Needs(whole_groups=True, ref_model=self.base == "ref" or self.kl_coef > 0)

    # ------------------------------------------------------------------ pieces (detached targets)
    def rewards(self, ctx: TokenContext) -> torch.Tensor:
        """r − kl_coef·Σ_t(log π_old − log π_ref) (REBEL's KL-in-reward; detached), [B]."""
        if ctx.rewards is None:
            raise ValueError("LogRatioRegression needs ctx.rewards")
        r = ctx.rewards.to(ctx.logp.dtype)
        if self.kl_coef > 0:
            if ctx.ref_logp is None:
                raise ValueError("kl_coef > 0 needs reference log-probs (Needs(ref_model=True))")
            m = ctx.response_mask.to(ctx.logp.dtype)
            r = r - self.kl_coef * ((ctx.old_logp - ctx.ref_logp) * m).sum(-1)
        return r.detach()

    def loss(self, ctx: TokenContext, norm: Normalizer) -> TermOutput:
        if ctx.group_ids is None:
            raise ValueError("LogRatioRegression needs ctx.group_ids")
        rows = participants(ctx.response_mask)
        idx = torch.nonzero(rows).reshape(-1)
        zero = (ctx.logp * 0).sum()
        if idx.numel() == 0:
            return TermOutput(loss=zero, diags={"pg_loss": partial(zero)})
        base = ctx.old_logp if self.base == "old" else ctx.ref_logp
        if base is None:
            raise ValueError("base: 'ref' needs reference log-probs (Needs(ref_model=True))")
        s = sequence_log_ratio(ctx.logp, base, ctx.response_mask)[idx]
        r = self.rewards(ctx)[idx]
        inv, G = dense_groups(ctx.group_ids[idx])
        k = group_sums(torch.ones_like(r), inv, G)
        if self.pairs == "none":
            tgt = optimal_advantage(r, inv, G, self.beta1) if self.target == "optimal_advantage" else r
            e2 = (self.ratio_scale * s - self.reward_scale * tgt) ** 2
            per_group, n_items = group_sums(e2, inv, G), k
        else:
            d = self.ratio_scale * s - self.reward_scale * r
            if self.pairs == "all":
                per_group, n_items = all_pairs_sum(d, inv, G), k * (k - 1) / 2
            else:
                i, j = adjacent_pairs(inv, G)
                per_group = group_sums((d[i] - d[j]) ** 2, inv[i], G)
                n_items = group_sums(torch.ones_like(d[i]), inv[i], G)
        if self.group_weight == "mean":
            c = 1.0 / n_items.clamp_min(1.0)
        elif self.group_weight == "inv_k_minus_1":
            c = 1.0 / (k - 1).clamp_min(1.0)
        else:
            c = torch.ones_like(k)
        denom = norm.num_groups if self.normalize == "groups" else norm.num_seqs
        value = (c * per_group).sum() / denom
        with torch.no_grad():
            diags = {"pg_loss": partial(value), "regression/log_ratio_abs": mean(s.abs().mean()),
                     "regression/target_mean": mean(r.mean())}
        return TermOutput(loss=value, diags=diags)
