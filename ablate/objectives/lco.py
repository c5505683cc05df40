"""LCO (Logits Convex Optimization, arXiv 2603.00963), its KL form (LCO-KLD), as an objective term
over the full vocabulary: each valid token's distribution π_θ(·|s_t) is pulled towards the target
π*(·|s_t) ∝ π_old(·|s_t)·exp(Â_vocab/β) by KL(π* ‖ π_θ).

Read from the authors' code, homzer/llama-rlhf@0bde42a2447adbb12c9567c4723790a5727cd7d1
src/ppo/trainer_lco.py (``ParallelLCOTrainerForRuleRM``) and src/utils.py (``estimate_vocab_adv``,
``create_lco_log_target``): only the sampled token a_t has an advantage; with p = π_old(a_t) it is
smoothed to Â·(1 − p) and every other token gets −p·Â·(1 − p)/max(1 − p, 0.1) (so that the target's
first-order change keeps E_π_old[Â_vocab] ≈ 0). The loss is the mean KL over tokens with Â > 0 plus
the mean KL over the others (an empty side adds 0).

The MSE and log-cosh forms (``form: mse | log_cosh``) follow the authors' later code,
homzer/llama-rlhf@486887fbe0b9129bc9a96f669c859b51f459ab94 src/ppo/trainer_lco.py
(``ParallelLCOWithMSETrainerForRuleRM``, ``ParallelLCOWithLogCoshTrainerForRuleRM``; src/criterion.py
``LogCoshLoss``): on the sampled token's logit z_t only, with the target sg(z_t) + Â_t/β′ and
β′ = β where Â > 0, ``neg_beta_scale``·β (the code: 100β) otherwise, the loss is the mean over valid
tokens of (z − target)² or log cosh(z − target) = |d| + log(1 + e^{−2|d|}) − log 2.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Optional

import torch
import torch.nn.functional as F

from ablate.component import Needs
from ablate.objectives.base import ROW_KINDS, Term, TermOutput
from ablate.spec.params import Num, Positive
from ablate.upge.aggregation import Aggregation, Normalizer
from ablate.upge.diagnostics import mean
from ablate.upge.slots.base import Advantage, TokenContext


@torch.no_grad()
def lco_log_target(old_logits: torch.Tensor, actions: torch.Tensor, adv: torch.Tensor,
                   beta: float) -> torch.Tensor:
    """log π* [N, V] from the behaviour logits [N, V], sampled tokens [N] and their advantages [N]."""
    log_old = F.log_softmax(old_logits, dim=-1)
    p = log_old.gather(-1, actions[:, None]).exp()  # [N, 1]
    a_tok = adv[:, None] * (1.0 - p)
    others = -(p * a_tok) / (1.0 - p).clamp_min(0.1)
    vocab_adv = others.expand_as(log_old).clone()
    vocab_adv.scatter_(-1, actions[:, None], a_tok)
    log_t = log_old + vocab_adv / beta
    return log_t - torch.logsumexp(log_t, dim=-1, keepdim=True)


FORMS = ("kld", "mse", "log_cosh")


def log_cosh(d: torch.Tensor) -> torch.Tensor:
    """log cosh(d), stable: |d| + log(1 + e^{−2|d|}) − log 2 (the authors' LogCoshLoss)."""
    a = d.abs()
    return a + torch.log1p(torch.exp(-2 * a)) - math.log(2)


class LCOTerm(Term):
    """LCO-KLD: Σ_{Â>0} KL(π*‖π_θ)/N₊ + Σ_{Â≤0} KL(π*‖π_θ)/N₋ over valid tokens (authors' code).

    Reads ``ctx.logits`` (declares ``Needs(full_logits=True)``). The behaviour distribution is the
    detached current one, which is π_old at a batch's first update (the authors store the rollout
    logits; a second update on the same batch would need them stored). The two means are over the
    tokens of each microbatch, divided by the microbatches (TRL-style accumulation), as the authors'
    per-batch means with one microbatch.
    """

    NEEDS: ClassVar[Needs] = Needs(full_logits=True)

    def __init__(self, advantage: Optional[Advantage] = None, beta: Positive = 1.0, weight: Num = 1.0,
                 rows: Literal[ROW_KINDS] = "all", aggregation: Optional[Aggregation] = None,
                 form: Literal[FORMS] = "kld", neg_beta_scale: Positive = 100.0):
        super().__init__(weight=weight, rows=rows, advantage=advantage,
                         aggregation=aggregation or Aggregation("token-mean", scope="microbatch"))
        self.beta, self.form, self.neg_beta_scale = beta, form, neg_beta_scale

    def _logit_regression(self, logits: torch.Tensor, actions: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """MSE / log-cosh form: per valid token, (z − sg(z) − Â/β′)² or log cosh of it, [N]."""
        z = logits.gather(-1, actions[:, None]).squeeze(-1)
        beta = torch.where(adv > 0, self.beta, self.beta * self.neg_beta_scale).to(z.dtype)
        d = z - (z.detach() + adv / beta)
        return d * d if self.form == "mse" else log_cosh(d)

    def loss(self, ctx: TokenContext, norm: Normalizer) -> TermOutput:
        if ctx.logits is None:
            raise RuntimeError("LCOTerm needs ctx.logits (full-vocabulary logits); the trainer "
                               "provides them when a component declares Needs(full_logits=True)")
        valid = ctx.response_mask > 0
        if ctx.loss_weights is not None:
            valid = valid & (ctx.loss_weights[:, None] > 0)
        logits = ctx.logits[valid]  # [N, V]
        actions = ctx.response_ids[valid]
        adv = ctx.advantages[valid].detach()
        if self.form != "kld":
            per_tok = self._logit_regression(logits, actions, adv)
            total = per_tok.mean() if per_tok.numel() else per_tok.new_zeros(())
            value = total / (norm.num_chunks * norm.workers)
            return TermOutput(loss=value, diags={"pg_loss": mean(value.detach())})
        log_t = lco_log_target(logits.detach(), actions, adv, self.beta)
        kl = (log_t.exp() * (log_t - F.log_softmax(logits, dim=-1))).sum(-1)  # [N]
        pos = adv > 0
        total = kl.new_zeros(())
        for side in (pos, ~pos):
            if bool(side.any()):
                total = total + kl[side].mean()
        value = total / (norm.num_chunks * norm.workers)
        kl_mean = kl.detach().mean() if kl.numel() else kl.new_zeros(())
        return TermOutput(loss=value, diags={"pg_loss": mean(value.detach()), "lco/kl": mean(kl_mean)})
