"""The UPGE estimator: loss_{i,t} = −M·Â·g(π_θ)/π_ref, aggregated, plus regularizers.

This is the only place the four slots meet. With the identity likelihood and π_ref = π_old,
−M·ρ·Â has the same gradient as PPO's −min(ρÂ, clip(ρ)Â): every clip is a mask (tests prove it).
Inside an objective (ablate/objectives) a UPGE estimator is one term; regularizers then belong to
the objective (``apply_regularizers``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch

from ablate.component import Component
from ablate.upge.aggregation import Aggregation, Normalizer
from ablate.upge.batch import RolloutBatch
from ablate.upge.diagnostics import Diag, maximum, mean, minimum, partial
from ablate.upge.slots.base import (LOG_RATIO_CLAMP, Denominator, Likelihood, Mask, MaskResult,
                                    Regularizer, TokenContext)


@dataclass
class EstimatorOutput:
    """``loss`` carries the gradient; ``diags`` are detached 0-d values with explicit reductions
    (means are over the valid tokens of this microbatch, weighted by ``num_tokens`` across chunks)."""

    loss: torch.Tensor
    diags: dict[str, Diag] = field(default_factory=dict)
    num_tokens: torch.Tensor | float = 0.0  # 0-d tensor: no host sync inside the estimator

    @property
    def metrics(self) -> dict[str, torch.Tensor]:
        return {k: d.value for k, d in self.diags.items()}


def _k3_of_log_r(log_r: torch.Tensor, r: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Schulman's k3 estimate of KL(π_old‖π_θ) per token, (r − 1) − log r with r = π_θ/π_old (unbiased,
    ≥ 0), given r = exp(log r), in ``out`` (one buffer at most).

    r − 1 is expm1(log r) = tanh(log r / 2)·(1 + r), accurate near r = 1 like expm1 (no
    cancellation) but ~4× faster on CPU, where torch's expm1 is a slow kernel (bench/README.md)."""
    t = torch.mul(log_r, 0.5, out=out).tanh_()
    return t.addcmul_(t, r).sub_(log_r)


@functools.lru_cache(maxsize=None)
def _open_bounds(dtype: torch.dtype) -> tuple[float, float]:
    """The neighbours of ∓LOG_RATIO_CLAMP outside [−c, c] in ``dtype``: x is in [−c, c] iff it is
    strictly between them, which is the test ``hardtanh_backward`` applies."""
    c = torch.tensor(LOG_RATIO_CLAMP, dtype=dtype)
    inf = torch.tensor(float("inf"), dtype=dtype)
    return torch.nextafter(-c, -inf).item(), torch.nextafter(c, inf).item()


class _ClampedExp(torch.autograd.Function):
    """exp(clamp(x, −c, c)) with clamp's gradient (x·1[−c ≤ x ≤ c]), in one backward kernel:
    autograd's clamp backward is four passes (two compares, an and, a ``where``), slow on CPU."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp_()
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, y = ctx.saved_tensors
        return torch.ops.aten.hardtanh_backward(grad * y, x, *_open_bounds(x.dtype))


def clamped_exp(x: torch.Tensor) -> torch.Tensor:
    """exp(clamp(x, ±LOG_RATIO_CLAMP)) with the gradient of exactly that expression."""
    return _ClampedExp.apply(x) if x.requires_grad else torch.exp(x.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


@functools.lru_cache(maxsize=None)
def _aggregation(mode: str, scope: str) -> Aggregation:
    """A regularizer's own aggregation, built (and its parameters checked) once, not per microbatch."""
    return Aggregation(mode, scope=scope)


def apply_regularizers(regularizers: Mapping[str, Regularizer], ctx: TokenContext, norm: Normalizer,
                       default: Aggregation) -> tuple[torch.Tensor, dict[str, Diag]]:
    """Σ coef·term, each [B, T] term aggregated with its own mode or ``default``."""
    total = torch.zeros((), dtype=ctx.logp.dtype, device=ctx.logp.device)
    diags: dict[str, Diag] = {}
    for name, reg in regularizers.items():
        if reg.coef == 0:
            continue
        term = reg(ctx)
        if term.dim() == 2:
            agg = _aggregation(reg.aggregation, reg.aggregation_scope) if reg.aggregation else default
            value = agg(term, ctx.response_mask, norm)
        else:
            value = term
        total = total + reg.coef * value
        diags[f"reg/{name}"] = partial(value)
    return total, diags


_CLIP_EVENTS = ("clip_low", "clip_high", "clip_dual")


def _weigh_rows_(ctx: TokenContext, x: torch.Tensor, is_weight: bool = False,
                 dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``x`` ([B, T] or row sums [B]) times the row weights ``ctx.loss_weights`` (pipeline gates)
    and, with ``is_weight``, the [B, T] train–inference correction ``rows["is_weight"]``
    (rollout.is_correction; the loss carries it, the peer value does not), in place, in that
    order; the weights are cast to ``dtype`` (default x's)."""
    dtype = dtype or x.dtype
    if ctx.loss_weights is not None:
        w = ctx.loss_weights.to(dtype)
        x.mul_(w if x.dim() == 1 else w[:, None])
    iw = ctx.rows.get("is_weight") if is_weight else None
    if iw is not None:
        x.mul_(iw.to(dtype))
    return x


class UPGE(Component):
    """Composes mask, denominator, likelihood, aggregation and regularizers into one loss."""

    family = "estimator"

    def __init__(self, mask: Mask, denominator: Denominator, likelihood: Likelihood,
                 aggregation: Aggregation, regularizers: Optional[Mapping[str, Regularizer]] = None):
        self.mask = mask
        self.denominator = denominator
        self.likelihood = likelihood
        self.aggregation = aggregation
        self.regularizers = dict(regularizers or {})

    def _surrogate(self, ctx: TokenContext) -> torch.Tensor:
        """g/π_ref per token, carrying the gradient (after the mask: slots are called in slot order)."""
        log_ref = self.denominator(ctx).detach()
        return clamped_exp(self.likelihood(ctx) - log_ref)

    def per_token(self, ctx: TokenContext) -> tuple[torch.Tensor, MaskResult, torch.Tensor]:
        """The definition, unaggregated: the loss matrix −M·Â·g/π_ref, the mask result and the
        detached weight g/π_ref (tests check ``surrogate_loss`` against it)."""
        m = self.mask(ctx)
        surrogate = self._surrogate(ctx)
        # −M·Â is detached: negate it in place, so autograd sees one product
        loss_mat = torch.mul(m.keep_as(surrogate.dtype), ctx.advantages).neg_() * surrogate
        return loss_mat, m, surrogate.detach()

    @staticmethod
    def _coef(ctx: TokenContext, m: MaskResult, dtype: torch.dtype) -> torch.Tensor:
        """−M·Â·m with the row and IS weights: the detached factor of the loss, zero on padding,
        built in place (one fresh buffer), so the loss needs one product with the surrogate and
        aggregates from its row sums (no product with the mask, forward or backward)."""
        coef = _weigh_rows_(ctx, torch.mul(m.keep_as(dtype), ctx.advantages), is_weight=True, dtype=dtype)
        return coef.mul_(ctx.response_mask).neg_()

    def surrogate_loss(self, ctx: TokenContext, norm: Normalizer) -> tuple[torch.Tensor, MaskResult, torch.Tensor]:
        """The aggregated ``per_token`` loss with the row and IS weights, the mask result and the
        detached weight g/π_ref ([B, T], for the diagnostics), aggregated from the row sums of
        ``_coef``·g/π_ref. When the likelihood and the denominator declare a per-row form
        (``ROW_FORM``), log g − log π_ref = u_i + log w_i on every token of row i: the surrogate is
        one value s_i per row and Σ_t coef·s_i = s_i·Σ_t coef, so the gradient flows through [B]
        values, not a [B, T] matrix."""
        m = self.mask(ctx)
        if self.likelihood.ROW_FORM and self.denominator.ROW_FORM:
            s = clamped_exp(self.likelihood.row_term(ctx) + self.denominator.row_log_weight(ctx).detach())
            rows = self._coef(ctx, m, s.dtype).sum(-1) * s
            weight = s.detach()[:, None].expand_as(ctx.response_mask)
        else:
            surrogate = self._surrogate(ctx)
            rows = (self._coef(ctx, m, surrogate.dtype) * surrogate).sum(-1)
            weight = surrogate.detach()
        return self.aggregation.of_rows(rows, ctx.response_mask, norm, lengths=ctx.lengths), m, weight

    def policy_loss(self, ctx: TokenContext, norm: Normalizer) -> tuple[torch.Tensor, dict[str, Diag]]:
        """The aggregated surrogate and its diagnostics (no regularizers)."""
        pg_loss, m, weight = self.surrogate_loss(ctx, norm)
        iw = ctx.rows.get("is_weight")
        with torch.no_grad():  # pg_loss is the peer value's kept-token part unless iw reweighs it
            diags = self._diagnostics(ctx, m, weight, norm, pg_loss=None if iw is not None else pg_loss)
        diags["pg_loss"] = partial(pg_loss)
        return pg_loss, diags

    def _diagnostics(self, ctx: TokenContext, m: MaskResult, weight: torch.Tensor,
                     norm: Normalizer, pg_loss: Optional[torch.Tensor] = None) -> dict[str, Diag]:
        """~12 detached values. On CPU the cost is memory passes over [B, T] tensors, slow kernels
        (``where`` with a tensor operand, bool → float casts, ``expm1``, bool counts) and one
        dispatch per 0-d op (bench/README.md, estimator section), so: each masked mean is one
        ``dot`` with the flat mask, and all their numerators are divided by the token count in one
        op; clip fractions are sums of the mask's float flags where it declares
        ``events_partition`` (else counts of bools ∧ valid); the masked extremes use ρ > 0: max over
        valid = max(ρ·m), min over valid = min(ρ/m); the [B, T] temporaries share one scratch
        buffer, and passes that read the same tensors run back to back (cache). ``pg_loss``: the
        aggregated loss without an IS weight, from which the peer value is one correction away."""
        rm = ctx.response_mask
        count = ctx.num_valid
        tmp = torch.empty_like(rm)  # one scratch buffer for every [B, T] temporary below
        peer = self._peer_loss(ctx, m, weight, norm, tmp, pg_loss)  # reads the events' flags and Â
        nums = self._token_sums(ctx, m, tmp)
        ratio = ctx.ratio  # exp of the clamped log-ratio: > 0, so padding (×0, ÷0) never wins
        big = torch.finfo(ratio.dtype).max  # finite even for an empty microbatch
        empty = count <= 0
        ratio_max = torch.where(empty, -big, torch.mul(ratio, rm, out=tmp).amax())
        ratio_min = torch.where(empty, big, torch.div(ratio, rm, out=tmp).amin())
        value = dict(zip(nums, torch.stack(list(nums.values())).div_(count.clamp_min(1.0)).unbind()))
        zero = torch.zeros_like(count) if any(ev not in m.events for ev in _CLIP_EVENTS) else None
        d: dict[str, Diag] = {"mask_frac": mean(value["mask_frac"])}
        for ev in _CLIP_EVENTS:
            t = m.events.get(ev)
            d[f"clip_frac_{ev.split('_')[1]}"] = mean(value[id(t)] if t is not None else zero)
        for ev, t in m.events.items():
            if ev not in _CLIP_EVENTS:
                d[f"mask/{ev}_frac"] = mean(value[id(t)])
        d["pg_loss_peer"] = partial(peer)
        d["ratio_mean"] = mean(value["ratio_mean"])
        d["ratio_max"], d["ratio_min"] = maximum(ratio_max), minimum(ratio_min)
        for k in ("kl_old", "kl_ref", "is_weight_mean", "adv_mean", "adv_abs_mean"):
            if k in value:
                d[k] = mean(value[k])
        return d

    @staticmethod
    def _token_sums(ctx: TokenContext, m: MaskResult, tmp: torch.Tensor) -> dict:
        """Σ x·rm of every token mean, keyed by name, and each event's valid count, keyed by the
        event tensor's id (a tensor registered under two names, GSPO's seq_clip_* = clip_*, is
        counted once). ``tmp``: a [B, T] scratch buffer."""
        rm = ctx.response_mask
        flat = rm.reshape(-1)

        def dot(x: torch.Tensor) -> torch.Tensor:
            return torch.dot(x.to(rm.dtype).reshape(-1), flat)

        events = {id(t): t for t in m.events.values()}
        if m.events_partition:  # Σ event·rm = Σ event, and the dropped valid tokens are their union
            sums: dict = {k: m.flags_of(t, rm.dtype).sum() for k, t in events.items()}
            sums["mask_frac"] = sum(sums.values()) if sums else torch.zeros_like(ctx.num_valid)
        else:  # #(event ∧ valid) = Σ event·rm (rm ∈ {0, 1}): bool work
            sums = {k: torch.count_nonzero(t & ctx.valid).to(rm.dtype) for k, t in events.items()}
            sums["mask_frac"] = ctx.num_valid - dot(m.keep_as(rm.dtype))
        sums["adv_mean"] = dot(ctx.advantages)
        sums["adv_abs_mean"] = dot(torch.abs(ctx.advantages, out=tmp))
        iw = ctx.rows.get("is_weight")
        if iw is not None:
            sums["is_weight_mean"] = dot(iw)
        sums["ratio_mean"] = dot(ctx.ratio)
        # KL(π_old ‖ π_θ) from samples of π_old: k3 with r = π_θ/π_old (ρ − 1 − log ρ ≥ 0)
        sums["kl_old"] = dot(_k3_of_log_r(ctx.log_ratio, ctx.ratio, tmp))
        if ctx.ref_logp is not None:
            # KL(π_θ ‖ π_ref) from samples of π_θ (on-policy rows): r = π_ref/π_θ
            log_r = (ctx.ref_logp - ctx.logp.detach()).clamp_(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
            sums["kl_ref"] = dot(_k3_of_log_r(log_r, torch.exp(log_r), tmp))
        return sums

    def _peer_loss(self, ctx: TokenContext, m: MaskResult, weight: torch.Tensor, norm: Normalizer,
                   out: torch.Tensor, pg_loss: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Peer-comparable value (verl/TRL pg_loss): masked tokens count the constant their
        min/clip objective gives them instead of 0; same gradient as pg_loss. ``out``: scratch.

        The aggregation is linear and the kept tokens' part, −Â·w·keep, is the loss itself, so given
        ``pg_loss`` the value is pg_loss − agg(Â·Σ c·event): a few passes over the sparse events
        instead of rebuilding the whole peer weight; with ``events_partition`` that matrix is already
        zero on padding, so it is aggregated from its row sums (no product with the mask)."""
        shortcut = (pg_loss is not None and m.clipped_weight is None
                    and not self.denominator.PEER_LOGP_VALUE)
        if not shortcut:
            peer_w = m.peer_weight(weight, out=out)
            if self.denominator.PEER_LOGP_VALUE:  # verl's gpg/cispo value: −Â·w·log π
                peer_w.mul_(ctx.logp.detach())
            peer_mat = peer_w.mul_(ctx.advantages).neg_()
        elif not m.clipped_bounds:
            return pg_loss
        else:
            peer_mat = m.bounds_weight(out).mul_(ctx.advantages)
            if m.events_partition:
                rows = _weigh_rows_(ctx, peer_mat.sum(-1))
                return pg_loss - self.aggregation.of_rows(rows, ctx.response_mask, norm, lengths=ctx.lengths)
        value = self.aggregation(_weigh_rows_(ctx, peer_mat), ctx.response_mask, norm, lengths=ctx.lengths)
        return value if not shortcut else pg_loss - value

    def __call__(self, batch: RolloutBatch, logp: torch.Tensor, entropy: Optional[torch.Tensor] = None,
                 entropy_grad: Optional[torch.Tensor] = None,
                 norm: Optional[Normalizer] = None) -> EstimatorOutput:
        ctx = TokenContext.from_batch(batch, logp, entropy=entropy, entropy_grad=entropy_grad)
        rm = ctx.response_mask
        norm = norm or Normalizer.of(rm)
        loss, diags = self.policy_loss(ctx, norm)
        reg, reg_diags = apply_regularizers(self.regularizers, ctx, norm, self.aggregation)
        diags.update(reg_diags)
        return EstimatorOutput(loss=loss + reg, diags=diags, num_tokens=ctx.num_valid.clamp_min(1.0))

    def extra_repr(self) -> str:
        return (f"mask={self.mask!r}, denominator={self.denominator!r}, "
                f"likelihood={self.likelihood!r}, aggregation={self.aggregation!r}, "
                f"regularizers={self.regularizers!r}")
