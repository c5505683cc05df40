"""RolloutBatch: the one tensor container that flows from rollout to the estimator.

Slots read from it and never from the trainer; everything here is plain tensors so a slot can be
unit-tested on hand-made batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

import torch

from ablate.component import StepInfo


@dataclass
class RolloutBatch:
    """B responses (G per prompt), right-padded to T response tokens.

    Shapes: [B, T] for token tensors, [B] for per-response tensors, [B, K] for multi-rewards.
    ``old_logp`` is the behaviour policy's log-prob of each sampled token at the sampling temperature
    (for demonstrations it is the current policy's log-prob at the time of the rollout, or zeros);
    ``ref_logp`` is the frozen KL reference model's (None when no KL regulariser is used).

    ``rows`` holds per-row side data that every component may read and that survives slicing:
    [B, ...] tensors or length-B lists. The trainer fills ``truncated``, ``group_size``,
    ``group_reward_mean``/``group_reward_var`` (p̂ for 0/1 rewards; on-policy rows only),
    ``reward/<name>`` per named reward component, ``meta`` (the verifier's metadata, one dict a
    row), ``answer``/``prompt`` (text), ``adv/<term>`` per objective term, and the prescoring results
    (``old_entropy``, ``old_logp@T``).
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
    rows: dict[str, Any] = field(default_factory=dict)  # per-row side data, sliced by select()
    info: Optional[StepInfo] = None  # step context (when a component declares step_info)
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
        """Rows ``idx`` of every per-row tensor and of ``rows`` (for minibatches and group filters)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == self.batch_size:
                out[f.name] = v[idx]
        if self.rows:
            out["rows"] = select_rows(self.rows, idx, self.batch_size)
        return replace(self, **out)

    def to(self, device: torch.device | str) -> "RolloutBatch":
        out: dict[str, Any] = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                               if isinstance(getattr(self, f.name), torch.Tensor)}
        if self.rows:
            out["rows"] = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                           for k, v in self.rows.items()}
        return replace(self, **out)


def select_rows(rows: dict[str, Any], idx: torch.Tensor, batch_size: int) -> dict[str, Any]:
    """Slice per-row side data: [B, ...] tensors by ``idx``, length-B lists by position."""
    out: dict[str, Any] = {}
    positions: Optional[list[int]] = None
    for k, v in rows.items():
        if isinstance(v, torch.Tensor):
            if v.dim() == 0 or v.shape[0] != batch_size:
                raise ValueError(f"batch.rows[{k!r}]: expected {batch_size} rows, got shape {tuple(v.shape)}")
            out[k] = v[idx.to(v.device)]
        elif isinstance(v, (list, tuple)):
            if len(v) != batch_size:
                raise ValueError(f"batch.rows[{k!r}]: expected {batch_size} rows, got {len(v)}")
            if positions is None:
                positions = idx.reshape(-1).tolist() if idx.dtype != torch.bool else \
                    idx.nonzero().reshape(-1).tolist()
            out[k] = [v[i] for i in positions]
        else:
            raise ValueError(f"batch.rows[{k!r}]: per-row data must be a tensor or a list, got {type(v).__name__}")
    return out
