"""APA (Advantage-Induced Policy Alignment, arXiv 2306.02231) as an objective term: a squared error
per token, L = (log π_θ(a|s) − log π_init(a|s) − Â(s, a)/λ)², with critic (GAE) advantages; no
ratio and no clip. π_init is the frozen initial policy (the run's reference model)."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from ablate.component import Needs
from ablate.objectives.base import ROW_KINDS, Term, TermOutput
from ablate.spec.params import Num, Positive
from ablate.upge.aggregation import Aggregation, Normalizer
from ablate.upge.diagnostics import mean
from ablate.upge.slots.base import Advantage, TokenContext


class APATerm(Term):
    """Squared-error alignment to the advantage-induced target log π_init + Â/λ (token-mean)."""

    NEEDS: ClassVar[Needs] = Needs(ref_model=True)

    def __init__(self, advantage: Advantage, aggregation: Optional[Aggregation] = None,
                 lam: Positive = 1.0, weight: Num = 1.0, rows: Literal[ROW_KINDS] = "all"):
        super().__init__(weight=weight, rows=rows, advantage=advantage,
                         aggregation=aggregation or Aggregation("token-mean"))
        self.lam = lam

    def loss(self, ctx: TokenContext, norm: Normalizer) -> TermOutput:
        if ctx.ref_logp is None:
            raise RuntimeError("APATerm needs batch.ref_logp (the initial policy's log-probs)")
        target = ctx.ref_logp + ctx.advantages / self.lam
        mat = (ctx.logp - target) ** 2
        rm = ctx.response_mask
        if ctx.loss_weights is not None:
            mat = mat * ctx.loss_weights.to(mat.dtype)[:, None]
        value = self.aggregation(mat, rm, norm)
        gap = ((ctx.logp.detach() - ctx.ref_logp) * rm).sum() / rm.sum().clamp_min(1.0)
        return TermOutput(loss=value, diags={"pg_loss": mean(value.detach()),
                                             "apa/log_ratio_init": mean(gap)})
