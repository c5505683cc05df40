"""Supervised terms on demonstration rows: the NLL of a multi-term objective (HPT, CHORD).

Loss matrix −w_i·φ_{i,t}·log π_θ(y_i,t), reduced by the term's own aggregation over its rows of the
minibatch (token-mean by default: HPT ``compute_sft_pure_loss``, Trinity-RFT ``SFTLossFn``), so an SFT
term is normalised separately from the RL term it is added to. w_i is the row's pipeline loss weight
(HPTGate puts ``sft_coef`` there); φ is CHORD-φ's sg(p(1 − p)) with p = π_θ(y_t) when ``phi`` is set
(Trinity-RFT ``SFTPhiLossFn``), else 1.
"""

from __future__ import annotations

from typing import Optional

import torch

from ablate.objectives.base import Term, TermOutput
from ablate.upge.aggregation import Aggregation, Normalizer
from ablate.upge.diagnostics import mean
from ablate.upge.slots.base import TokenContext


class TokenNLL(Term):
    """Negative log-likelihood of the term's rows (default: demonstrations), optionally φ-weighted."""

    def __init__(self, aggregation: Optional[Aggregation] = None, weight: float = 1.0, rows: str = "demo",
                 phi: bool = False):
        super().__init__(weight=weight, rows=rows, aggregation=aggregation)
        self.phi = bool(phi)

    def loss(self, ctx: TokenContext, norm: Normalizer) -> TermOutput:
        rm = ctx.response_mask
        logp = torch.where(rm > 0, ctx.logp, torch.zeros_like(ctx.logp))  # padding never enters
        w = torch.ones_like(logp)
        if self.phi:
            p = torch.exp(logp.detach())
            w = p * (1.0 - p)
        if ctx.loss_weights is not None:
            w = w * ctx.loss_weights.to(w.dtype)[:, None]
        value = self.aggregation(-w * logp, rm, norm)
        with torch.no_grad():
            n = rm.sum().clamp_min(1.0)
            diags = {"pg_loss": mean(value.detach()), "sft/nll": mean((-logp.detach() * rm).sum() / n)}
        return TermOutput(loss=value, diags=diags)
