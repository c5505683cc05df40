"""EM Policy Gradient's M-step weights (arXiv 2504.18587): reward-weighted maximum likelihood on the
sampled rationales, the E-step posterior q(y) ∝ π_old(y)·w(r(y)) estimated by self-normalised weights."""

from __future__ import annotations

from typing import ClassVar, Optional

import torch

from ablate.spec.params import Positive
from ablate.upge import functional as F
from ablate.upge.slots.advantage import _Outcome


class RewardWeighted(_Outcome):
    """Â_i = w_i / mean_group(w), w_i = r_i (``temperature`` None) or exp(r_i/τ): self-normalised
    E-step weights of the group's samples (mean weight 1 per group; 0 where the group's weight sum is 0).

    No baseline is subtracted (EM maximises a weighted log-likelihood), so an all-correct group gets
    weight 1 on every sample and an all-wrong group (w ≡ 0) none. With ``temperature`` None the
    rewards must be ≥ 0 (a weight); NaN rewards get Â = 0 and are left out of the group mean.
    """

    zero_constant_groups: ClassVar[bool] = False

    def __init__(self, temperature: Optional[Positive] = None):
        self.temperature = temperature

    def _compute(self, r, valid, stats, batch):
        if self.temperature is None:
            if bool((r[stats] < 0).any()):
                raise ValueError("advantage RewardWeighted: rewards must be >= 0 to be weights "
                                 "(set temperature for w = exp(r/τ))")
            w = r
        else:
            w = torch.exp((r - F.group_max(r, batch.group_ids, stats)) / self.temperature)  # stable
        w = torch.where(stats, w, torch.zeros_like(w))
        mean = F.group_mean(w, batch.group_ids, stats)
        return torch.where(mean > 0, w / torch.where(mean > 0, mean, torch.ones_like(mean)), torch.zeros_like(w))
