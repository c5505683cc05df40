"""Weighted log-likelihood terms: the SFT part of a multi-term objective (HPT, CHORD, SRFT).

Loss matrix −w_i·φ_{i,t}·log π_θ(y_i,t), reduced by the term's own aggregation over its rows of the
minibatch (token-mean by default: HPT ``compute_sft_pure_loss``, Trinity-RFT ``SFTLossFn``), so an SFT
term is normalised separately from the RL term it is added to.

* φ is CHORD-φ's sg(p(1 − p)) with p = π_θ(y_t) when ``phi`` is set (Trinity-RFT ``SFTPhiLossFn``).
* w_i = the row's pipeline loss weight (HPTGate puts ``sft_coef`` there) × c_i, with
  c_i = ``coef``·exp(``entropy_scale``·H̄_i) for rows with reward > ``threshold`` (or every row when
  ``negative_coef`` is None) and c_i = ``negative_coef`` otherwise; H̄_i = sg(mean_t entropy of π_θ)
  over the row (SRFT's entropy-aware weights; needs the training forward's entropy).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch

from ablate.component import Needs
from ablate.objectives.base import ROW_KINDS, Term, TermOutput
from ablate.spec.params import Num
from ablate.upge.aggregation import Aggregation, Normalizer
from ablate.upge.diagnostics import mean, partial
from ablate.upge.slots.base import TokenContext


class TokenNLL(Term):
    """Negative log-likelihood of the term's rows (default: demonstrations), optionally φ-weighted."""

    def __init__(self, aggregation: Optional[Aggregation] = None, weight: Num = 1.0,
                 rows: Literal[ROW_KINDS] = "demo", phi: bool = False, coef: Num = 1.0,
                 entropy_scale: Optional[Num] = None, negative_coef: Optional[Num] = None,
                 threshold: Num = 0.5):
        super().__init__(weight=weight, rows=rows, aggregation=aggregation)
        self.phi, self.coef, self.entropy_scale = phi, coef, entropy_scale
        self.negative_coef, self.threshold = negative_coef, threshold

    def needs(self) -> Needs:
        return Needs(entropy=self.entropy_scale is not None)

    def row_coef(self, ctx: TokenContext) -> torch.Tensor:
        """c_i per row [B] (module doc), detached."""
        rm = ctx.response_mask
        c = torch.full(rm.shape[:1], self.coef, dtype=ctx.logp.dtype, device=rm.device)
        if self.entropy_scale is not None:
            if ctx.entropy is None:
                raise ValueError("TokenNLL with entropy_scale needs ctx.entropy (Needs(entropy=True))")
            h = (ctx.entropy.to(c.dtype) * rm).sum(-1) / rm.sum(-1).clamp_min(1.0)
            c = c * torch.exp(self.entropy_scale * h)
        if self.negative_coef is not None:
            if ctx.rewards is None:
                raise ValueError("TokenNLL with negative_coef needs ctx.rewards")
            pos = ctx.rewards.to(rm.device) > self.threshold
            c = torch.where(pos, c, torch.full_like(c, self.negative_coef))
        return c.detach()

    def loss(self, ctx: TokenContext, norm: Normalizer) -> TermOutput:
        rm = ctx.response_mask
        logp = torch.where(rm > 0, ctx.logp, torch.zeros_like(ctx.logp))  # padding never enters
        w = self.row_coef(ctx)[:, None].expand_as(logp)
        if self.phi:
            p = torch.exp(logp.detach())
            w = w * p * (1.0 - p)
        if ctx.loss_weights is not None:
            w = w * ctx.loss_weights.to(w.dtype)[:, None]
        value = self.aggregation(-w * logp, rm, norm)
        with torch.no_grad():
            n = rm.sum().clamp_min(1.0)
            diags = {"pg_loss": partial(value), "sft/nll": mean((-logp.detach() * rm).sum() / n)}
        return TermOutput(loss=value, diags=diags)
