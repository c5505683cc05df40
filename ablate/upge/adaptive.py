"""Regularizers with a schedule or a state across steps: MDPO's annealed KL to the behaviour policy
(arXiv 2005.09814), R²VPO's ratio-variance constraint with a primal–dual multiplier (2601.03320) and
EPO's entropy corridor around the historical entropy (2509.22576)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Mapping, Optional

import torch

from ablate.component import ACTS_ON_DRIFT, Acts, Needs, StepInfo
from ablate.spec.params import require
from ablate.spec.params import NonNeg
from ablate.upge.aggregation import MODES
from ablate.upge.slots.base import LOG_RATIO_CLAMP, Regularizer, TokenContext
from ablate.upge.slots.mask import valid_tokens

PROXIMAL_ESTIMATORS = ("k1", "k3")


def _ratio(ctx: TokenContext) -> torch.Tensor:
    """ρ = π_θ/π_old per token, carrying the gradient (1 on padding)."""
    valid = valid_tokens(ctx)
    lr = torch.where(valid, ctx.logp - ctx.old_logp.detach(), torch.zeros_like(ctx.logp))
    return torch.exp(lr.clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))


class ProximalKL(Regularizer):
    """(1/t_k)·KL(π_θ ‖ π_old) from the behaviour samples, t_k = 1 − progress (MDPO's step size,
    annealed linearly from 1 over training, so the proximity weight grows as 1/(1 − k/K)).

    Per token, with ρ = π_θ/π_old on tokens sampled from π_old: ``k1`` = ρ·log ρ (unbiased for
    KL(π_θ‖π_old)), ``k3`` = ρ·log ρ − (ρ − 1) (same expectation since E_old[ρ] = 1, ≥ 0, and a zero
    gradient at ρ = 1). ``coef`` multiplies 1/t_k. Reads the step context (``ctx.info``).
    """

    def acts(self) -> Acts:
        """k3 has value and gradient 0 at ρ = 1; k1 = ρ·log ρ has gradient ∇log π there."""
        return ACTS_ON_DRIFT if self.estimator == "k3" else Acts()

    NEEDS: ClassVar[Needs] = Needs(step_info=True)

    def __init__(self, coef: NonNeg = 1.0, estimator: Literal[PROXIMAL_ESTIMATORS] = "k3",
                 aggregation: Optional[Literal[MODES]] = None):
        self.coef, self.estimator, self.aggregation = coef, estimator, aggregation

    @staticmethod
    def inverse_step_size(info: Optional[StepInfo]) -> float:
        if info is None:
            raise ValueError("ProximalKL needs ctx.info (declared Needs(step_info=True))")
        return 1.0 / max(1e-8, 1.0 - info.progress)

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        rho = _ratio(ctx)
        kl = rho * torch.log(rho)
        if self.estimator == "k3":
            kl = kl - (rho - 1.0)
        return self.inverse_step_size(ctx.info) * kl * ctx.response_mask


class RatioVariance(Regularizer):
    """λ·(Var(ρ) − δ) with Var(ρ) = E_old[(ρ − 1)²] (the second central moment: E_old[ρ] = 1), as a
    token mean, so microbatch accumulation is exact. λ is a dual variable, not a hyperparameter:
    after every step ``observe`` sets λ ← [λ + η·(Var̂ − δ)]₊ and ``state_dict`` saves it.

    The term's forward value is the constraint violation Var − δ and its gradient λ·∇Var
    (straight-through), so the logged ``train/reg/<name>`` is Var̂ − δ of the step, reduced exactly
    over microbatches and workers; ``observe`` reads it from ``metric`` (every worker then takes
    the same dual step). Without that metric (a direct call) it uses its own running Var̂ of the
    microbatches it saw. ``coef`` is a fixed multiplier (1: the Lagrangian itself), so the term is
    evaluated, and Var̂ measured, even at λ = 0.
    """

    ACTS = ACTS_ON_DRIFT  # (ρ − 1)² has value and gradient 0 while π_θ = π_old

    def __init__(self, lam_init: NonNeg = 1.0, lr: NonNeg = 1.0, delta: NonNeg = 0.01, coef: NonNeg = 1.0,
                 metric: Optional[str] = "train/reg/ratio_var"):
        self.lam = lam_init
        self.lr = lr
        self.delta = delta
        self.coef = coef
        self.metric = None if metric is None else str(metric)
        self.aggregation = "token-mean"
        self._sq: Optional[torch.Tensor] = None
        self._n: Optional[torch.Tensor] = None

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        rm = ctx.response_mask
        sq = ((_ratio(ctx) - 1.0) * rm).square()
        with torch.no_grad():  # running Var̂ of this step, on the device (no host sync here)
            s, n = sq.detach().sum(), rm.sum()
            self._sq = s if self._sq is None else self._sq + s
            self._n = n if self._n is None else self._n + n
        x = sq - self.delta * rm
        return self.lam * x + (1.0 - self.lam) * x.detach()  # value Var − δ, gradient λ·∇Var

    def violation(self, metrics: Mapping[str, float]) -> Optional[float]:
        """Var̂ − δ of the step just trained (None if nothing was measured)."""
        v = metrics.get(self.metric) if self.metric else None
        if v is not None and math.isfinite(float(v)):
            return float(v)
        if self._n is not None and float(self._n) > 0:
            return float(self._sq) / float(self._n) - self.delta
        return None

    def observe(self, info: StepInfo, metrics: Mapping[str, float]) -> None:
        v = self.violation(metrics)
        if v is not None:
            self.lam = max(0.0, self.lam + self.lr * v)
        self._sq = self._n = None

    def state_dict(self) -> dict:
        return {"lam": float(self.lam)}

    def load_state_dict(self, state: Mapping) -> None:
        if state:
            self.lam = float(state["lam"])
        self._sq = self._n = None

    def extra_repr(self) -> str:
        return f"lam={self.lam!r}, lr={self.lr!r}, delta={self.delta!r}, coef={self.coef!r}, metric={self.metric!r}"


class EntropyCorridor(Regularizer):
    """EPO's entropy smoothing regularizer (arXiv 2509.22576 v2, eqs. 3–5 and Algorithm 1):
    β_k·P per token, P = [κ_l·H̄_W − H]₊ + [H − κ_r·H̄_W]₊ on the current policy's entropy H (with
    its gradient), so only tokens outside the corridor [κ_l·H̄_W, κ_r·H̄_W] are pushed back into it.

    H̄_W is the mean of the previous steps' batch entropies (the paper's cumulative window W_k: one
    token-mean entropy per step, read from ``metric`` after each step by ``observe``, reduced over
    workers; ``state_dict`` keeps it), so the term is 0 at the first step (no history).
    β_k = 1 + exp(−γ·k/k_mid) with k the 0-based step and k_mid = ⌊K/2⌋ (the phase weight).
    ``coef`` is λ·α (entropy coefficient × penalty weight): the paper's loss adds λ·β_k·L_smooth.
    """

    NEEDS: ClassVar[Needs] = Needs(entropy_grad=True, step_info=True)

    def __init__(self, coef: NonNeg = 5e-5, kappa_low: NonNeg = 0.0, kappa_high: NonNeg = 2.0,
                 gamma: NonNeg = 3.0, aggregation: Optional[Literal[MODES]] = "token-mean",
                 metric: str = "train/entropy"):
        require(kappa_high >= kappa_low, self, "kappa_high", kappa_high, f"a number >= kappa_low ({kappa_low:g})")
        self.coef, self.kappa_low, self.kappa_high, self.gamma = coef, kappa_low, kappa_high, gamma
        self.aggregation, self.metric = aggregation, metric
        self._sum = 0.0  # Σ H̄_m over the steps seen
        self._n = 0  # number of steps in the window

    @property
    def reference(self) -> Optional[float]:
        """H̄_W: the mean of the previous steps' entropies (None before the first step)."""
        return self._sum / self._n if self._n else None

    def beta(self, info: Optional[StepInfo]) -> float:
        if info is None:
            raise ValueError("EntropyCorridor needs ctx.info (declared Needs(step_info=True))")
        k_mid = max(1, info.total_steps // 2)
        return 1.0 + math.exp(-self.gamma * (info.step - 1) / k_mid)

    def __call__(self, ctx: TokenContext) -> torch.Tensor:
        if ctx.entropy_grad is None:
            raise ValueError("EntropyCorridor needs ctx.entropy_grad (per-token entropy with gradient); "
                             "the trainer computes it when a component declares Needs(entropy_grad=True)")
        ref = self.reference
        if ref is None:
            return torch.zeros_like(ctx.entropy_grad)
        h = ctx.entropy_grad
        p = torch.relu(self.kappa_low * ref - h) + torch.relu(h - self.kappa_high * ref)
        return self.beta(ctx.info) * p * ctx.response_mask

    def observe(self, info: StepInfo, metrics: Mapping[str, float]) -> None:
        v = metrics.get(self.metric)
        if v is not None and math.isfinite(float(v)):
            self._sum += float(v)
            self._n += 1

    def state_dict(self) -> dict:
        return {"sum": self._sum, "n": self._n}

    def load_state_dict(self, state: Mapping) -> None:
        if state:
            self._sum, self._n = float(state["sum"]), int(state["n"])
