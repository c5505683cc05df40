"""The UPGE estimator as an objective term: −M·Â·g/π_ref with its own four slots and aggregation."""

from __future__ import annotations

from ablate.objectives.base import Term, TermOutput
from ablate.upge.aggregation import Aggregation, Normalizer
from ablate.upge.estimator import UPGE
from ablate.upge.slots.base import Advantage, Denominator, Likelihood, Mask, TokenContext


class UPGETerm(Term):
    """One UPGE estimator. Slots left unset in config are the run's top-level choices
    (``mask=``, ``denominator=``, ``advantage=``, ``likelihood=``, ``aggregation=``), so
    command-line slot overrides keep working for the primary term of any objective."""

    def __init__(self, mask: Mask, denominator: Denominator, advantage: Advantage,
                 likelihood: Likelihood, aggregation: Aggregation, weight: float = 1.0,
                 rows: str = "all"):
        super().__init__(weight=weight, rows=rows, advantage=advantage, aggregation=aggregation)
        self.estimator = UPGE(mask=mask, denominator=denominator, likelihood=likelihood,
                              aggregation=aggregation)

    def loss(self, ctx: TokenContext, norm: Normalizer) -> TermOutput:
        value, diags = self.estimator.policy_loss(ctx, norm)
        return TermOutput(loss=value, diags=diags)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, rows={self.rows!r}, advantage={self.advantage!r}, {self.estimator.extra_repr()}"

