"""DCPO, distribution-centric policy optimisation (arXiv 2601.12730; code 597358816/DCPO
``ray_trainer.py::fit``, ``alg == "DCPO"``): the group advantage blended with a REINFORCE term on the
correct responses, weighted by the ratio of the behaviour policy at a target temperature to itself."""

from __future__ import annotations

import torch

from ablate.component import Needs
from ablate.spec.params import NonNeg, Num, Positive
from ablate.upge.batch import RolloutBatch
from ablate.upge.slots.advantage import GroupZScore, _out_dtype, _rewards
from ablate.upge.slots.base import Advantage


def temp_key(t: float) -> str:
    """The RolloutBatch.rows key of behaviour log-probs scored at temperature t."""
    return f"old_logp@{t:g}"


class TargetTemperature(Advantage):
    """Â_t = (1 − α)·Â_z + α·b_i·ρ^T_t, ρ^T_t = π_old^T(y_t)/π_old(y_t), b_i = 1[r_i > threshold].

    From the last step's mean entropy H (``info.last_metrics[entropy_key]``; 0 before the first step,
    as the code's initial ``entropy = 0``): T = ``temp_high`` if H ≤ H0 else ``temp_low``;
    α = min(|H0 − H|, ``alpha_max``)/acc, α ← α/(1 + α), acc = fraction of correct rows in the batch.
    With no correct row the code divides by zero (NaN); here α = 0 (b ≡ 0 makes the term vanish anyway).
    Â_z is GRPO's group z-score. Needs the behaviour log-probs before the advantage and at both
    temperatures (``rows["old_logp@T"]``), and the step context.
    """

    def __init__(self, entropy_base: Num = 0.5, temp_high: Positive = 1.2, temp_low: Positive = 0.8,
                 alpha_max: NonNeg = 0.1, threshold: Num = 0.05, entropy_key: str = "train/entropy",
                 eps: NonNeg = 1e-6, unbiased: bool = True):
        self.entropy_base, self.temp_high, self.temp_low = entropy_base, temp_high, temp_low
        self.alpha_max, self.threshold, self.entropy_key = alpha_max, threshold, entropy_key
        self.zscore = GroupZScore(eps=eps, unbiased=unbiased)

    def needs(self) -> Needs:
        return super().needs() | Needs(temperatures=frozenset({self.temp_low, self.temp_high}),
                                       logp_before_advantage=True, step_info=True)

    def schedule(self, batch: RolloutBatch) -> tuple[float, float]:
        """(T, α) for this batch from the last step's entropy and the batch accuracy."""
        if batch.info is None:
            raise ValueError("advantage TargetTemperature needs batch.info (declared Needs(step_info=True))")
        h = float(batch.info.last_metrics.get(self.entropy_key, 0.0))
        t = self.temp_high if h <= self.entropy_base else self.temp_low
        r, valid = _rewards(batch)
        correct = (r > self.threshold) & valid
        acc = float(correct.sum()) / max(1, batch.batch_size)
        if acc == 0:
            return t, 0.0
        a = min(abs(self.entropy_base - h), self.alpha_max) / acc
        return t, a / (1.0 + a)

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        t, alpha = self.schedule(batch)
        key = temp_key(t)
        if key not in batch.rows:
            raise ValueError(f"advantage TargetTemperature needs batch.rows[{key!r}] (behaviour log-probs "
                             "at the target temperature; declared Needs(temperatures=...))")
        mask = batch.response_mask.to(torch.float64)
        r, valid = _rewards(batch)
        b = ((r > self.threshold) & valid).to(torch.float64)
        rho_t = torch.exp((batch.rows[key].to(torch.float64) - batch.old_logp.to(torch.float64)) * mask)
        a_z = self.zscore.per_response(batch)[:, None]
        adv = (1.0 - alpha) * a_z + alpha * b[:, None] * rho_t
        dt = _out_dtype(batch)
        return (adv * mask).to(dt) * batch.response_mask.to(dt)
