"""Base classes of the four UPGE slots and the per-microbatch context they read.

A slot is a small class whose constructor takes named, typed parameters (what a YAML file under
conf/<family>/ sets) and whose ``__call__`` is a pure tensor function of the context. No slot knows
about the trainer, the tracker or Ray. Slots are ``Component``s: what they need beyond logp and Â
(entropy, reference log-probs, step context, ...) they declare with ``NEEDS``/``needs()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, ClassVar, Optional

import torch

from ablate.component import Component, Needs, StepInfo
from ablate.upge.batch import RolloutBatch

LOG_RATIO_CLAMP = 20.0  # verl clamps the log-ratio to ±20 before exp (peer_semantics §8.9)


def bool_as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool tensor as 0./1. of ``dtype``, through a uint8 view: the same values, but torch's
    direct bool → float cast is ~5× slower on CPU (bench/README.md, estimator section)."""
    return t.view(torch.uint8).to(dtype) if t.dtype == torch.bool else t.to(dtype)


def flags(compare: Callable[..., torch.Tensor], x: torch.Tensor, other: Any) -> torch.Tensor:
    """``compare(x, other)`` (a torch comparison such as ``torch.lt``) as 0./1. in x's dtype. A
    comparison written into a bool tensor is ~5× slower on CPU than into a float one (bench/README.md,
    estimator section); products of flags are conjunctions and ``.bool()`` is the bool result."""
    return compare(x, other, out=torch.empty_like(x))


@dataclass
class TokenContext:
    """Everything a mask, denominator or likelihood slot may read, for one microbatch.

    ``logp`` carries the gradient; every other tensor is detached. ``entropy`` is the current
    policy's per-token entropy at the sampling temperature (detached), when a component declared
    ``Needs(entropy=True)``. ``rows`` is the batch's per-row side data (see ``RolloutBatch``),
    ``info`` the step context (``Needs(step_info=True)``).
    """

    logp: torch.Tensor  # [B, T] log π_θ(y_t), requires grad
    old_logp: torch.Tensor  # [B, T] behaviour log-probs
    advantages: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T] float {0, 1}
    is_demo: torch.Tensor  # [B] bool
    group_ids: Optional[torch.Tensor] = None  # [B]
    entropy: Optional[torch.Tensor] = None  # [B, T] detached
    entropy_grad: Optional[torch.Tensor] = None  # [B, T] with grad (entropy bonus only)
    logits: Optional[torch.Tensor] = None  # [B, T, V] logits/T with grad (Needs(full_logits=True))
    hidden: Optional[torch.Tensor] = None  # [B, T, H] detached LM-head inputs (Needs(hidden_states=True))
    lr: Optional[float] = None  # learning rate of the coming optimizer step (Needs(hidden_states=True))
    response_ids: Optional[torch.Tensor] = None  # [B, T] the sampled tokens (a view of the batch)
    ref_logp: Optional[torch.Tensor] = None  # [B, T] frozen KL reference model
    rewards: Optional[torch.Tensor] = None  # [B] scalar rewards
    loss_weights: Optional[torch.Tensor] = None  # [B] per-row loss multipliers (pipeline gates)
    rows: dict[str, Any] = field(default_factory=dict)  # per-row side data, sliced with the rows
    info: Optional[StepInfo] = None
    extras: dict = field(default_factory=dict)

    @cached_property
    def log_ratio(self) -> torch.Tensor:
        """Detached, clamped log ρ = log π_θ − log π_old, zero on padding."""
        lr = (self.logp.detach() - self.old_logp).clamp_(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        return lr.mul_(self.response_mask)

    @cached_property
    def valid_flags(self) -> torch.Tensor:
        """``valid`` as 0./1. of the mask's dtype (``flags``), for conjunctions by products."""
        return flags(torch.gt, self.response_mask, 0)

    @cached_property
    def valid(self) -> torch.Tensor:
        """bool [B, T]: the response tokens that count (``response_mask > 0``), computed once."""
        return self.valid_flags.bool()

    @cached_property
    def num_valid(self) -> torch.Tensor:
        """Σ response_mask: the microbatch's valid tokens, 0-d on the device, computed once."""
        return self.response_mask.sum()

    @cached_property
    def ratio(self) -> torch.Tensor:
        """Detached token ratio ρ (1 on padding)."""
        return torch.exp(self.log_ratio)

    @cached_property
    def lengths(self) -> torch.Tensor:
        """Valid tokens per row as float, clamped to ≥ 1 so empty rows never divide by zero."""
        return self.response_mask.sum(-1).clamp_min(1.0)

    @cached_property
    def seq_log_ratio(self) -> torch.Tensor:
        """Detached GSPO log s_i = mean_t log ρ_t over valid tokens, [B]."""
        return self.log_ratio.sum(-1) / self.lengths

    @cached_property
    def seq_logp(self) -> torch.Tensor:
        """Σ_t log π_θ over valid tokens, [B], carrying the gradient."""
        return (self.logp * self.response_mask).sum(-1)

    @classmethod
    def from_batch(cls, batch: RolloutBatch, logp: torch.Tensor, entropy: Optional[torch.Tensor] = None,
                   entropy_grad: Optional[torch.Tensor] = None,
                   advantages: Optional[torch.Tensor] = None,
                   logits: Optional[torch.Tensor] = None, hidden: Optional[torch.Tensor] = None,
                   lr: Optional[float] = None) -> "TokenContext":
        adv = batch.advantages if advantages is None else advantages
        if adv is None:
            raise ValueError("batch.advantages is None: run the advantage slot before the estimator")
        return cls(logp=logp, old_logp=batch.old_logp.detach(), advantages=adv.detach(),
                   response_mask=batch.response_mask.to(logp.dtype), is_demo=batch.demo_mask(),
                   group_ids=batch.group_ids, entropy=None if entropy is None else entropy.detach(),
                   entropy_grad=entropy_grad, ref_logp=batch.ref_logp, rewards=batch.rewards,
                   loss_weights=batch.loss_weights, rows=batch.rows, info=batch.info,
                   extras=batch.extras, logits=logits, lr=lr,
                   hidden=None if hidden is None else hidden.detach(),
                   response_ids=batch.input_ids[:, batch.prompt_len:])


@dataclass
class MaskResult:
    """``keep`` is the stabilisation mask M (bool, [B, T]); ``events`` names why tokens were dropped.

    Standard event names (each a bool [B, T], a subset of ~keep): ``clip_low`` (A<0, ratio below
    1−ε_low), ``clip_high`` (A>0, ratio above 1+ε_high), ``clip_dual`` (A<0, ratio above c), and any
    variant-specific ones (``cov``, ``entropy``, ``divergence``, ``seq_clip_low``, ...).
    """

    keep: torch.Tensor
    events: dict[str, torch.Tensor] = field(default_factory=dict)
    # the constant weight a peer's min/clip objective gives each masked token (PPO: 1±ε, dual c);
    # only for the peer-comparable loss value ``pg_loss_peer``; None = masked tokens count 0
    clipped_weight: Optional[torch.Tensor] = None
    # the same as (event, constant) pairs, built into a tensor only when read (``peer_weight``)
    clipped_bounds: Optional[list] = None
    # the mask guarantees that its events (each tensor once) are disjoint subsets of the valid
    # tokens (``response_mask > 0``) and that ``keep`` drops exactly their union: the diagnostics
    # then count and aggregate events without the valid mask, and ``mask_frac`` is their count
    events_partition: bool = False
    _keep_as: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _flags: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def keep_as(self, dtype: torch.dtype) -> torch.Tensor:
        """``keep`` as 0./1. of ``dtype``, converted once: the loss and the diagnostics share it."""
        if dtype not in self._keep_as:
            self._keep_as[dtype] = bool_as(self.keep, dtype)
        return self._keep_as[dtype]

    def flags_of(self, event: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``event`` (a tensor of ``events``) as 0./1. of ``dtype``, converted once, or the float
        flags the mask built it from (``with_flags``): summing and adding floats is several times
        faster on CPU than counting or adding bools (bench/README.md, estimator section)."""
        held = self._flags.get((id(event), dtype))
        if held is None or held[0] is not event:
            held = self._flags[(id(event), dtype)] = (event, bool_as(event, dtype))
        return held[1]

    def with_flags(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> "MaskResult":
        """Register (bool event, the same as 0./1. floats) pairs the mask already has (``flags_of``)."""
        for event, values in pairs:
            self._flags[(id(event), values.dtype)] = (event, values)
        return self

    def peer_weight(self, weight: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The weight a peer's min/clip objective gives each token: ``weight`` where kept, the
        clipped constant on clipped tokens (``clipped_weight``, or ``clipped_bounds``: events are
        disjoint), 0 on other dropped tokens. Only the diagnostics read it. Built as w·keep + Σ c·event
        (w·1 + 0 and w·0 + c are exact for a finite w: the values of ``where``, which is several
        times slower on CPU). ``out``: a [B, T] buffer to write into."""
        if self.clipped_weight is not None:
            return torch.where(self.keep, weight, self.clipped_weight.to(weight.dtype), out=out)
        out = torch.mul(weight, self.keep_as(weight.dtype), out=out)
        for event, value in self.clipped_bounds or ():
            out.add_(self.flags_of(event, out.dtype), alpha=value)
        return out

    def bounds_weight(self, out: torch.Tensor) -> torch.Tensor:
        """Σ c·event over ``clipped_bounds`` (the clipped tokens' part of ``peer_weight``), in ``out``."""
        (first, c), *rest = self.clipped_bounds
        out = torch.mul(self.flags_of(first, out.dtype), c, out=out)
        for event, value in rest:
            out.add_(self.flags_of(event, out.dtype), alpha=value)
        return out


Slot = Component  # the four slots, regularizers, terms and stages share one contract


class Mask(Slot):
    """Slot 1: which tokens keep their gradient. Computed from detached quantities only."""

    family = "mask"

    def __call__(self, ctx: TokenContext) -> MaskResult:
        raise NotImplementedError


class Denominator(Slot):
    """Slot 2: log π_ref per token, detached (or a detached function of π_θ).

    The applied importance weight is π_θ/π_ref: π_ref = sg(π_θ) gives weight 1 and ∇log π.
    ``PEER_LOGP_VALUE``: the peer (verl) writes this weight's loss as −Â·w·log π (gpg, cispo), so
    ``pg_loss_peer`` multiplies the weight by log π to report the peer's value.
    """

    family = "denominator"
    PEER_LOGP_VALUE: ClassVar[bool] = False
    # log π_ref = sg(log π_θ) − log w_i with a per-row weight w_i: ``row_log_weight`` gives log w
    # ([B]), so with a ``ROW_FORM`` likelihood the estimator works on rows (see ``UPGE.surrogate_loss``)
    ROW_FORM: ClassVar[bool] = False

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        raise NotImplementedError

    def row_log_weight(self, ctx: TokenContext) -> torch.Tensor:
        """log w_i, [B], detached (only where ``ROW_FORM``)."""
        raise NotImplementedError


class Likelihood(Slot):
    """Slot 4: log g(π_θ) per token, carrying the gradient (identity: ``ctx.logp``)."""

    family = "likelihood"
    # a sequence-level likelihood: log g = sg(log π_θ) + u_i with a per-row term u_i carrying the
    # gradient (``row_term``, [B]); with a ``ROW_FORM`` denominator log g − log π_ref = u_i + log w_i
    ROW_FORM: ClassVar[bool] = False

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        raise NotImplementedError

    def row_term(self, ctx: TokenContext) -> torch.Tensor:
        """u_i, [B], carrying the gradient (only where ``ROW_FORM``)."""
        raise NotImplementedError


class Advantage(Slot):
    """Slot 3: Â per token [B, T], computed once per rollout batch from rewards and groups."""

    family = "advantage"
    # a baseline from the other samples of the prompt's group: meaningless with group_size 1
    group_relative: ClassVar[bool] = False

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        raise NotImplementedError


class Regularizer(Slot):
    """Additive loss term outside the four slots (KL to a reference model, entropy bonus, ...).

    Returns the per-token term [B, T] to be aggregated with the estimator's normaliser, or a scalar.
    """

    family = "regularizer"
    coef: float = 0.0
    aggregation: Optional[str] = None  # None: the objective's primary aggregation
    aggregation_scope: str = "minibatch"  # with ``aggregation``: minibatch or microbatch counts

    def needs(self) -> Needs:
        return Needs() if self.coef == 0 else super().needs()

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        raise NotImplementedError


FAMILIES: dict[str, type[Slot]] = {
    "mask": Mask,
    "denominator": Denominator,
    "advantage": Advantage,
    "likelihood": Likelihood,
    "regularizer": Regularizer,
}
