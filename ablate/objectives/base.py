"""Objectives: a method's loss as a weighted sum of terms (DESIGN §1.1).

A ``Term`` maps one microbatch context to a scalar loss (plus diagnostics). A UPGE estimator (four
slots + aggregation) is one kind of term (``ablate.objectives.upge.UPGETerm``); regression,
group-coupled and value losses are others. Each term may own an advantage slot, computed once per
rollout batch, and may be restricted to a kind of row (``rows``: all, policy or demo); it is
normalised over its own rows of the minibatch, so gradient accumulation stays exact per term.
The objective adds the run's regularizers once, and is the one thing the trainer asks for needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Mapping, Optional

import torch

from ablate.component import Component, Needs
from ablate.errors import ConfigError
from ablate.spec.params import Num
from ablate.upge.aggregation import Aggregation, Normalizer
from ablate.upge.batch import RolloutBatch
from ablate.upge.diagnostics import Diag, partial
from ablate.upge.estimator import apply_regularizers
from ablate.upge.slots.base import Advantage, Regularizer, TokenContext

ROW_KINDS = ("all", "policy", "demo")


@dataclass
class TermOutput:
    loss: torch.Tensor
    diags: dict[str, Diag] = field(default_factory=dict)


class Term(Component):
    """One weighted loss term. Subclasses implement ``loss(ctx, norm)``.

    ``weight`` multiplies the term; ``rows`` restricts it to policy rows, demonstration rows, or all.
    ``advantage`` (optional) is this term's advantage slot: ``ctx.advantages`` holds its output.
    ``aggregation`` is how the term reduces tokens (used for its normaliser share in gradient
    variance, and by regularizers that follow the primary term).
    """

    family = "term"

    def __init__(self, weight: Num = 1.0, rows: Literal[ROW_KINDS] = "all",
                 advantage: Optional[Advantage] = None, aggregation: Optional[Aggregation] = None):
        self.weight, self.rows = weight, rows
        self.advantage = advantage
        self.aggregation = aggregation or Aggregation("token-mean")

    def row_select(self, batch: RolloutBatch) -> Optional[torch.Tensor]:
        """[B] bool of the rows this term trains on (None = all)."""
        if self.rows == "all":
            return None
        demo = batch.demo_mask()
        return demo if self.rows == "demo" else ~demo

    def loss(self, ctx: TokenContext, norm: Normalizer) -> TermOutput:
        raise NotImplementedError


def _restrict(batch: RolloutBatch, sel: Optional[torch.Tensor]) -> torch.Tensor:
    rm = batch.response_mask
    return rm if sel is None else rm * sel.to(rm.dtype)[:, None]


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    diags: dict[str, Diag]
    num_tokens: torch.Tensor


class Objective(Component):
    """Σ_k weight_k · term_k + Σ coef · regularizer. The first term is the primary one: its
    advantage is ``batch.advantages``, its diagnostics keep the unprefixed names of DESIGN §4, and
    regularizers without their own aggregation follow its aggregation."""

    family = "objective"
    NEEDS: ClassVar[Needs] = Needs()

    def __init__(self, terms: Mapping[str, Term], regularizers: Optional[Mapping[str, Regularizer]] = None):
        if not terms:
            raise ConfigError("objective.terms: at least one term is needed")
        self.terms = dict(terms)
        self.regularizers = dict(regularizers or {})
        self._norms: dict[str, Normalizer] = {}

    @property
    def primary(self) -> Term:
        return next(iter(self.terms.values()))

    # ------------------------------------------------------------------ once per rollout batch
    def compute_advantages(self, batch: RolloutBatch) -> None:
        """Run each term's advantage slot once; the first one's becomes ``batch.advantages``."""
        rm = batch.response_mask
        primary: Optional[torch.Tensor] = None
        for name, term in self.terms.items():
            if term.advantage is None:
                continue
            adv = term.advantage(batch).to(rm.dtype) * rm
            batch.rows[f"adv/{name}"] = adv
            if primary is None:
                primary = adv
        batch.advantages = primary  # None: no term has an advantage slot (REBEL, REAL, ...)

    # ------------------------------------------------------------------ once per minibatch
    def normalizers(self, mb: RolloutBatch, reducer=None, num_chunks: int = 1) -> dict[str, Normalizer]:
        """Each term's counts (tokens, sequences, prompt groups) over its own rows of the minibatch
        ("" = all rows, for regularizers); ``reducer`` sums them over the workers of a multi-worker trial;
        ``num_chunks``: the minibatch's microbatches on this worker (per-microbatch aggregation scope)."""
        out = {"": Normalizer.of(mb.response_mask, reducer, mb.group_ids, num_chunks)}
        for name, term in self.terms.items():
            out[name] = Normalizer.of(_restrict(mb, term.row_select(mb)), reducer, mb.group_ids,
                                      num_chunks)
        self._norms = out  # the current minibatch's, for chunk_weight
        return out

    def chunk_weight(self, mc: RolloutBatch) -> float:
        """This microbatch's share of the loss (gradient-variance weights): Σ_k |weight_k| × the
        chunk's fraction of term k's minibatch normaliser (tokens or sequences, per its aggregation).
        One term: proportional to its count, as before; several: a term with no rows in the chunk
        (HPT's RL term when every prompt went to SFT) adds nothing instead of zeroing the chunk."""
        norms = self._norms
        total = 0.0
        for name, term in self.terms.items():
            agg = term.aggregation
            share = agg.weight_of(_restrict(mc, term.row_select(mc)))
            norm = norms.get(name)
            if norm is not None:
                share /= norm.num_tokens if agg.mode.startswith("token") else norm.num_seqs
            total += abs(term.weight) * share
        return total

    def batch_loss(self, batch: RolloutBatch, logp: torch.Tensor, entropy: Optional[torch.Tensor] = None,
                   entropy_grad: Optional[torch.Tensor] = None,
                   logits: Optional[torch.Tensor] = None, hidden: Optional[torch.Tensor] = None,
                   lr: Optional[float] = None) -> ObjectiveOutput:
        """Advantages, then the loss of the whole batch as one minibatch (tests, references)."""
        self.compute_advantages(batch)
        return self(batch, logp, self.normalizers(batch), entropy=entropy, entropy_grad=entropy_grad,
                    logits=logits, hidden=hidden, lr=lr)

    # ------------------------------------------------------------------ per microbatch
    def __call__(self, mc: RolloutBatch, logp: torch.Tensor, norms: Mapping[str, Normalizer],
                 entropy: Optional[torch.Tensor] = None,
                 entropy_grad: Optional[torch.Tensor] = None,
                 logits: Optional[torch.Tensor] = None, hidden: Optional[torch.Tensor] = None,
                 lr: Optional[float] = None) -> ObjectiveOutput:
        base = TokenContext.from_batch(mc, logp, entropy=entropy, entropy_grad=entropy_grad,
                                       advantages=mc.advantages if mc.advantages is not None
                                       else torch.zeros_like(mc.response_mask), logits=logits,
                                       hidden=hidden, lr=lr)
        loss = torch.zeros((), dtype=logp.dtype, device=logp.device)
        diags: dict[str, Diag] = {}
        multi = len(self.terms) > 1
        for k, (name, term) in enumerate(self.terms.items()):
            sel = term.row_select(mc)
            ctx = base
            adv = mc.rows.get(f"adv/{name}")
            if adv is not None:
                ctx = dataclasses.replace(ctx, advantages=adv.detach())
            if sel is not None:
                ctx = dataclasses.replace(ctx, response_mask=_restrict(mc, sel).to(logp.dtype))
            out = term.loss(ctx, norms[name])
            loss = loss + term.weight * out.loss
            n_term = ctx.response_mask.sum().clamp_min(1.0)
            prefix = "" if k == 0 else f"{name}/"
            for dk, dv in out.diags.items():
                if dv.reduce == "mean" and dv.weight is None:
                    dv = Diag(dv.value, "mean", n_term)
                diags[prefix + dk] = dv
            if multi:
                diags[f"loss/{name}"] = partial(out.loss)
        reg, reg_diags = apply_regularizers(self.regularizers, base, norms[""], self.primary.aggregation)
        diags.update(reg_diags)
        return ObjectiveOutput(loss=loss + reg, diags=diags, num_tokens=base.response_mask.sum().clamp_min(1.0))
