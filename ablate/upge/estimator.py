"""The UPGE estimator: loss_{i,t} = −M·Â·g(π_θ)/π_ref, aggregated, plus regularizers.

This is the only place the four slots meet. With the identity likelihood and π_ref = π_old,
−M·ρ·Â has the same gradient as PPO's −min(ρÂ, clip(ρ)Â): every clip is a mask (tests prove it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import torch

from ablate.upge.aggregation import Aggregation, Normalizer
from ablate.upge.batch import RolloutBatch
from ablate.upge.slots.base import (LOG_RATIO_CLAMP, Denominator, Likelihood, Mask, MaskResult,
                                    Regularizer, TokenContext)


@dataclass
class EstimatorOutput:
    """``loss`` carries the gradient; ``metrics`` are detached 0-d tensors, means over the valid
    tokens of this microbatch (the trainer weights them by ``num_tokens`` across microbatches)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    num_tokens: torch.Tensor | float = 0.0  # 0-d tensor: no host sync inside the estimator


def _masked_mean(x: torch.Tensor, m: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    return (x.to(m.dtype) * m).sum() / n


class UPGE:
    """Composes mask, denominator, likelihood, aggregation and regularizers into one loss."""

    def __init__(self, mask: Mask, denominator: Denominator, likelihood: Likelihood,
                 aggregation: Aggregation, regularizers: Optional[Mapping[str, Regularizer]] = None):
        self.mask = mask
        self.denominator = denominator
        self.likelihood = likelihood
        self.aggregation = aggregation
        self.regularizers = dict(regularizers or {})

    @property
    def needs_entropy_grad(self) -> bool:
        return any(getattr(r, "needs_entropy_grad", False) and r.coef != 0
                   for r in self.regularizers.values())

    def per_token(self, ctx: TokenContext) -> tuple[torch.Tensor, MaskResult]:
        """The unaggregated loss matrix −M·Â·g/π_ref and the mask result."""
        m = self.mask(ctx)
        log_ref = self.denominator(ctx).detach()
        log_g = self.likelihood(ctx)
        surrogate = torch.exp((log_g - log_ref).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
        loss_mat = -(m.keep.to(surrogate.dtype) * ctx.advantages * surrogate)
        return loss_mat, m

    def __call__(self, batch: RolloutBatch, logp: torch.Tensor, entropy: Optional[torch.Tensor] = None,
                 entropy_grad: Optional[torch.Tensor] = None,
                 norm: Optional[Normalizer] = None) -> EstimatorOutput:
        ctx = TokenContext.from_batch(batch, logp, entropy=entropy, entropy_grad=entropy_grad)
        rm = ctx.response_mask
        norm = norm or Normalizer.of(rm)
        loss_mat, m = self.per_token(ctx)
        if batch.loss_weights is not None:
            loss_mat = loss_mat * batch.loss_weights.to(loss_mat.dtype)[:, None]
        pg_loss = self.aggregation(loss_mat, rm, norm)
        loss = pg_loss
        n = rm.sum().clamp_min(1.0)
        metrics: dict[str, torch.Tensor] = {"pg_loss": pg_loss.detach()}
        for name, reg in self.regularizers.items():
            if reg.coef == 0:
                continue
            term = reg(ctx)
            if term.dim() == 2:
                agg = getattr(reg, "aggregation", None)
                value = Aggregation(agg)(term, rm, norm) if agg else self.aggregation(term, rm, norm)
            else:
                value = term
            loss = loss + reg.coef * value
            metrics[f"reg/{name}"] = value.detach()
        with torch.no_grad():
            keep = m.keep.to(rm.dtype)
            metrics["mask_frac"] = _masked_mean(1.0 - keep, rm, n)
            for ev in ("clip_low", "clip_high", "clip_dual"):
                t = m.events.get(ev)
                metrics[f"clip_frac_{ev.split('_')[1]}"] = (
                    _masked_mean(t, rm, n) if t is not None else torch.zeros((), dtype=rm.dtype))
            for ev, t in m.events.items():
                if ev not in ("clip_low", "clip_high", "clip_dual"):
                    metrics[f"mask/{ev}_frac"] = _masked_mean(t, rm, n)
            ratio = ctx.ratio
            pad = rm <= 0
            metrics["ratio_mean"] = _masked_mean(ratio, rm, n)
            big = torch.finfo(ratio.dtype).max  # finite even for an empty microbatch
            metrics["ratio_max"] = ratio.masked_fill(pad, -big).amax()
            metrics["ratio_min"] = ratio.masked_fill(pad, big).amin()
            # k3 estimate of KL(π_θ || π_old) from samples of π_old: E[r − 1 − log r], r = π_old/π_θ
            lr = -ctx.log_ratio
            metrics["kl_old"] = _masked_mean(torch.exp(lr) - 1.0 - lr, rm, n)
            if ctx.ref_logp is not None:
                d = (ctx.ref_logp - logp.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
                metrics["kl_ref"] = _masked_mean(torch.exp(d) - 1.0 - d, rm, n)
            metrics["adv_mean"] = _masked_mean(ctx.advantages, rm, n)
            metrics["adv_abs_mean"] = _masked_mean(ctx.advantages.abs(), rm, n)
        return EstimatorOutput(loss=loss, metrics=metrics, num_tokens=n)

    def __repr__(self) -> str:
        return (f"UPGE(mask={self.mask!r}, denominator={self.denominator!r}, "
                f"likelihood={self.likelihood!r}, aggregation={self.aggregation!r}, "
                f"regularizers={self.regularizers!r})")
