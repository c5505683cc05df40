"""Regularizers: additive loss terms outside the four UPGE slots (KL to a frozen reference, entropy).

Each returns the per-token term [B, T] to *minimise*; the estimator aggregates it (with the policy
loss's mode, or the mode named by ``aggregation``) and adds ``coef`` times it to the loss.
conf/regularizers/<name>.yaml is a mapping of term name → ``{_target_: ..., coef: ...}``.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional


import torch

from ablate.spec.params import NonNeg, PosFrac
from ablate.component import Needs
from ablate.upge.aggregation import MODES, SCOPES
from ablate.upge.slots.base import LOG_RATIO_CLAMP, Regularizer, TokenContext
from ablate.upge.slots.mask import TopEntropy, valid_tokens

KL_ESTIMATORS = ("k1", "k2", "k3", "abs")
KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}  # verl's names
KL_CLAMPS = ("verl", "openrlhf", "none")
KL_RESULT_CLAMP = 10.0
KL_CHOICES = tuple(e + s for e in KL_ESTIMATORS + tuple(KL_ALIASES) for s in ("", "+"))


class KLPenalty(Regularizer):
    """KL(π_θ ‖ π_ref) loss term, k1/k2/k3 estimators (GRPO 2402.03300; verl use_kl_loss; TRL beta).

    With d = log π_θ − log π_ref: ``k1`` = d, ``abs`` = |d|, ``k2`` = ½d², ``k3`` (verl
    ``low_var_kl``) = e^{−d} + d − 1; a ``+`` suffix (e.g. ``k3+``) gives that value with k2's
    gradient (verl straight-through). verl aliases ``kl``/``mse``/``low_var_kl`` are accepted.
    ``clamp``: ``verl`` (k3 exponent to ±20, k3 result to ±10), ``openrlhf`` (every estimator's result
    to ±10), ``none`` (TRL). ``bias_correction``: multiply the per-token KL by ρ = π_θ/π_old, with its
    gradient (TRL ``use_bias_correction_kl=True``, its default since DeepSeek-V3.2; False = TRL's
    ``use_bias_correction_kl=False``). Declares ``Needs(ref_model=True)`` (a frozen reference model).
    """

    NEEDS: ClassVar[Needs] = Needs(ref_model=True)

    def __init__(self, coef: NonNeg = 0.001, estimator: Literal[KL_CHOICES] = "k3",
                 clamp: Literal[KL_CLAMPS] = "verl", aggregation: Optional[Literal[MODES]] = None,
                 bias_correction: bool = False):
        self.coef, self.bias_correction = coef, bias_correction
        self.estimator, self.clamp, self.aggregation = estimator, clamp, aggregation

    def _value(self, kind: str, d: torch.Tensor) -> torch.Tensor:
        if kind == "k1":
            out = d
        elif kind == "abs":
            out = d.abs()
        elif kind == "k2":
            out = 0.5 * d.square()
        else:  # k3: e^x − x − 1 with x = log π_ref − log π_θ
            x = -d
            if self.clamp != "none":  # verl clamps the exponent; for openrlhf it changes no clamped value
                x = x.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
            out = torch.exp(x) - x - 1.0
            if self.clamp == "verl":
                out = out.clamp(-KL_RESULT_CLAMP, KL_RESULT_CLAMP)
        if self.clamp == "openrlhf":
            out = out.clamp(-KL_RESULT_CLAMP, KL_RESULT_CLAMP)
        return out

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        if ctx.ref_logp is None:
            raise ValueError("KLPenalty needs ctx.ref_logp (log-probs of a frozen reference model); "
                             "the trainer loads one when a component declares Needs(ref_model=True)")
        valid = valid_tokens(ctx)
        d = torch.where(valid, ctx.logp - ctx.ref_logp.detach(), torch.zeros_like(ctx.logp))
        straight_through = self.estimator.endswith("+")
        name = self.estimator.rstrip("+")
        kind = KL_ALIASES.get(name, name)
        value = self._value(kind, d)
        if straight_through and kind != "k2":
            k2 = 0.5 * d.square()
            value = k2 - k2.detach() + value.detach()
        if self.bias_correction:  # TRL: per_token_kl * coef_1, coef_1 = exp(log π_θ − log π_old)
            lr = torch.where(valid, ctx.logp - ctx.old_logp.detach(), torch.zeros_like(ctx.logp))
            value = value * torch.exp(lr)
        return value


class EntropyBonus(Regularizer):
    """Entropy bonus −c·H (verl entropy_coeff; TRL entropy_coef; HPT 0.001): returns −H per token.

    ``aggregation`` defaults to token-mean: TRL's bonus is the mean per-token entropy whatever the
    loss_type (set None to follow the policy loss's mode, as verl does).

    ``top_quantile`` (TRL 1.16 GRPOTrainer ``top_entropy_quantile`` < 1 with ``entropy_coef``): the
    bonus acts on the top-entropy tokens only (H ≥ the (1 − q) quantile over the microbatch, the
    ``TopEntropy`` mask's rule). ``top_mean`` True averages H over those tokens, per microbatch
    (TRL loss types grpo/bnpo/dr_grpo/sapo: Σ H·E·M / Σ E·M / accumulation steps; use
    ``scope="microbatch"``); False sums them over the minibatch's valid tokens (TRL cispo/dapo/vespo:
    Σ H·E·M / num_items_in_batch).
    """

    NEEDS: ClassVar[Needs] = Needs(entropy_grad=True)

    def __init__(self, coef: NonNeg = 0.001, aggregation: Optional[Literal[MODES]] = "token-mean",
                 top_quantile: Optional[PosFrac] = None, top_mean: bool = True,
                 scope: Literal[SCOPES] = "minibatch"):
        self.coef, self.aggregation, self.top_quantile = coef, aggregation, top_quantile
        self.top_mean, self.aggregation_scope = top_mean, scope

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        if ctx.entropy_grad is None:
            raise ValueError("EntropyBonus needs ctx.entropy_grad (per-token entropy with gradient); "
                             "the trainer computes it when a component declares Needs(entropy_grad=True)")
        if self.top_quantile is None or self.top_quantile >= 1.0:
            return -ctx.entropy_grad
        valid = valid_tokens(ctx)
        h = ctx.entropy_grad.detach()
        if not bool(valid.any()):
            return torch.zeros_like(ctx.entropy_grad)
        thr = TopEntropy._threshold(h[valid].float(), 1.0 - self.top_quantile)
        top = (valid & (h >= thr)).to(ctx.entropy_grad.dtype)
        if self.top_mean:  # ×(valid tokens / top tokens): the token mean becomes a mean over E
            top = top * (valid.sum().to(top.dtype) / top.sum().clamp_min(1.0))
        return -ctx.entropy_grad * top
