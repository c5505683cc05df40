"""User-defined slot classes used by tests (as a user would reference them by `_target_`)."""

import torch

from ablate.upge.slots.base import Advantage


class NaNAdvantage(Advantage):
    """Always NaN: a broken variant, to check failures are recorded, not hidden."""

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def __call__(self, batch):
        return torch.full_like(batch.response_mask, float("nan"))
