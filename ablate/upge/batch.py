"""RolloutBatch: the one tensor container that flows from rollout to the estimator.

Slots read from it and never from the trainer; everything here is plain tensors so a slot can be
unit-tested on hand-made batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Optional

import torch


@dataclass
class RolloutBatch:
    """B responses (G per prompt), right-padded to T response tokens.

    Shapes: [B, T] for token tensors, [B] for per-response tensors, [B, K] for multi-rewards.
    ``old_logp`` is the behaviour policy's log-prob of each sampled token at the sampling temperature
    (for demonstrations it is the current policy's log-prob at the time of the rollout, or zeros);
    ``ref_logp`` is the frozen KL reference model's (None when no KL regulariser is used).
    """

    input_ids: torch.Tensor  # [B, P+T] prompt (left-padded) + response (right-padded)
    attention_mask: torch.Tensor  # [B, P+T]
    response_mask: torch.Tensor  # [B, T] float {0,1}: valid response tokens
    old_logp: torch.Tensor  # [B, T]
    rewards: torch.Tensor  # [B] scalar reward used by single-reward estimators
    group_ids: torch.Tensor  # [B] long, same id = same prompt
    prompt_len: int = 0  # P: response tokens start at input_ids[:, P]
    ref_logp: Optional[torch.Tensor] = None  # [B, T]
    reward_components: Optional[torch.Tensor] = None  # [B, K] named rewards (GDPO)
    is_demo: Optional[torch.Tensor] = None  # [B] bool: response is a demonstration (off-policy)
    advantages: Optional[torch.Tensor] = None  # [B, T], filled by the advantage slot
    loss_weights: Optional[torch.Tensor] = None  # [B] per-response loss multiplier (pipeline gates)
    extras: dict = field(default_factory=dict)  # free-form per-batch info (not sliced)

    @property
    def batch_size(self) -> int:
        return int(self.response_mask.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """Valid response tokens per row, [B] long."""
        return self.response_mask.sum(-1).long()

    def demo_mask(self) -> torch.Tensor:
        if self.is_demo is None:
            return torch.zeros(self.batch_size, dtype=torch.bool, device=self.response_mask.device)
        return self.is_demo.bool()

    def select(self, idx: torch.Tensor) -> "RolloutBatch":
        """Rows ``idx`` of every per-row tensor (for minibatches and group filters)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == self.batch_size:
                out[f.name] = v[idx]
        return replace(self, **out)

    def to(self, device: torch.device | str) -> "RolloutBatch":
        out = {f.name: getattr(self, f.name).to(device) for f in fields(self)
               if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **out)
