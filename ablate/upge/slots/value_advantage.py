"""Advantages that need more than the rewards: GAE on a value model's V(s_t) (PPO, T-PPO, APA,
PF-PPO) and ReMax's greedy-decode baseline (written into the rows' metadata by the ReMax stage)."""

from __future__ import annotations

from typing import Literal, Sequence

import torch

from ablate.component import Needs
from ablate.spec.params import NonNeg, Num, Positive, Prob
from ablate.upge import functional as F
from ablate.upge.functional import gae
from ablate.upge.batch import RolloutBatch
from ablate.upge.slots.base import Advantage

TRUNCATION_MODES = ("terminal", "bootstrap")
KL_ESTIMATORS = ("k1", "abs", "k2", "k3")


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL estimate for reward shaping (verl ``kl_penalty``; k3 clamped to ±10 as verl)."""
    d = logp - ref_logp
    if kind == "k1":
        return d
    if kind == "abs":
        return d.abs()
    if kind == "k2":
        return 0.5 * d ** 2
    kl = (-d).clamp(-20, 20)
    return (kl.exp() - kl - 1).clamp(-10, 10)


class GAE(Advantage):
    """Generalised advantage estimation on the critic's values (verl ``gae``).

    The outcome reward sits on the last valid token; ``kl_coef`` > 0 subtracts
    β·KL(π_old‖π_ref) per token from it (verl ``use_kl_in_reward``, estimator ``kl_estimator``).
    ``truncation``: ``terminal`` = V = 0 after every response (verl); ``bootstrap`` = T-PPO's
    extended GAE for responses cut at the length budget (batch.rows["truncated"]): the state after
    the last token keeps V(s_l) := V(s_{l−1}) instead of 0. ``whiten``: masked whitening over the
    batch's valid tokens (verl: unbiased var, +1e-8 in the rsqrt). Writes the value targets
    (unwhitened A + V) to batch.rows["returns"] for the critic.
    """

    def __init__(self, gamma: Prob = 1.0, lam: Prob = 1.0, whiten: bool = True, eps: Num = 1e-8,
                 kl_coef: NonNeg = 0.0, kl_estimator: Literal[KL_ESTIMATORS] = "k1",
                 truncation: Literal[TRUNCATION_MODES] = "terminal"):
        self.gamma, self.lam, self.whiten, self.eps = gamma, lam, whiten, eps
        self.kl_coef, self.kl_estimator, self.truncation = kl_coef, kl_estimator, truncation

    def needs(self) -> Needs:
        extra = Needs(ref_model=True, logp_before_advantage=True) if self.kl_coef > 0 else Needs()
        return Needs(values=True) | extra

    def token_rewards(self, batch: RolloutBatch) -> torch.Tensor:
        mask = batch.response_mask.to(torch.float64)
        r = torch.nan_to_num(batch.rewards.to(torch.float64))
        out = F.place_on_last_token(r, mask)
        if self.kl_coef > 0:
            if batch.ref_logp is None:
                raise RuntimeError("advantage GAE.kl_coef > 0 needs batch.ref_logp (Needs.ref_model)")
            out = out - self.kl_coef * kl_penalty(batch.old_logp.double(), batch.ref_logp.double(),
                                                  self.kl_estimator) * mask
        return out

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        values = batch.rows.get("values")
        if values is None:
            raise RuntimeError("advantage GAE: batch.rows['values'] is missing (the critic scores it)")
        mask = batch.response_mask.to(torch.float64)
        v = values.to(torch.float64) * mask
        last = None
        if self.truncation == "bootstrap":
            trunc = batch.rows.get("truncated")
            if trunc is not None:
                idx = (batch.lengths - 1).clamp_min(0)
                v_last = v.gather(1, idx[:, None]).squeeze(1)
                last = torch.where(trunc.to(v.device).bool() & (batch.lengths > 0), v_last,
                                   torch.zeros_like(v_last))
        adv, returns = gae(self.token_rewards(batch), v, mask, self.gamma, self.lam, last)
        batch.rows["returns"] = returns.to(torch.float32)
        if self.whiten:
            adv = F.masked_whiten(adv, mask, unbiased=True, eps=self.eps, eps_placement="var")
        return adv.to(batch.response_mask.dtype) * batch.response_mask


class ReMaxBaseline(Advantage):
    """Â = R(y) − R(ŷ_greedy) on every valid token (ReMax, arXiv 2310.10505; verl ``remax``). The
    greedy reward is row metadata ``meta[key]``, written by the ``GreedyBaseline`` stage."""

    def __init__(self, key: str = "remax_baseline"):
        self.key = str(key)

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        meta: Sequence[dict] = batch.rows.get("meta") or []
        if len(meta) != batch.batch_size or any(self.key not in m for m in meta):
            raise RuntimeError(f"advantage ReMaxBaseline: every row needs meta[{self.key!r}]; add the "
                               "ablate.pipeline.generative.GreedyBaseline stage")
        b = torch.tensor([float(m[self.key]) for m in meta], dtype=torch.float64,
                         device=batch.rewards.device)
        r = torch.nan_to_num(batch.rewards.to(torch.float64))
        return (r - b).to(batch.response_mask.dtype)[:, None] * batch.response_mask


class ClippedAdvantage(Advantage):
    """Â of an inner estimator clipped to [−limit, limit] (Knapsack RL's script clips Â to ±5, which
    a z-score reaches in large groups: one success among N gives (N−1)/√N > 5 for N ≥ 28)."""

    def __init__(self, advantage: Advantage, limit: Positive = 5.0):
        self.advantage, self.limit = advantage, limit

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        return self.advantage(batch).clamp(-self.limit, self.limit)
