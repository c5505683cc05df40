"""Loss aggregation: how per-token losses become one scalar (outside the four slots, always explicit).

Peers disagree most here (peer_semantics §1.4, §2.2, §8.3). By default every mode normalises by the
*minibatch* (``Normalizer``), not the microbatch, so gradient accumulation over microbatches gives
exactly the gradient of the whole-minibatch objective (verl's engine path ≥ Feb 2026).
``scope="microbatch"`` is TRL's convention for loss_type grpo/bnpo/dr_grpo/sapo (each microbatch by
its own counts, the loss divided by the number of accumulation steps); ``count_empty_rows`` is TRL's
row count, which includes rows whose mask is all zero (rows zeroed by mask_truncated_completions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from ablate.spec.params import Checked, Positive

MODES = ("token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum",
         "seq-mean-token-sum-norm")
SCOPES = ("minibatch", "microbatch")


@dataclass(frozen=True)
class Normalizer:
    """Counts over the whole minibatch that one optimizer step covers."""

    num_tokens: float  # valid response tokens
    num_seqs: float  # rows with at least one valid token
    horizon: int  # padded response length T (the default Dr.GRPO constant)
    num_groups: float = 1.0  # prompt groups with at least one such row (group-coupled terms)
    num_rows: float = 1.0  # all rows, empty ones included (TRL's row count: count_empty_rows)
    num_chunks: float = 1.0  # microbatches the minibatch is cut into, over all workers
    workers: float = 1.0  # workers sharing the minibatch (scope="microbatch" averages over them)

    @classmethod
    def of(cls, response_mask: torch.Tensor, reducer=None,
           group_ids: Optional[torch.Tensor] = None, num_chunks: int = 1) -> "Normalizer":
        """Counts of ``response_mask`` (and of the prompt groups with a valid row, given ``group_ids``);
        with ``reducer`` (an object with ``all_reduce(t, op)``, e.g. ablate.train.distributed.Dist) the
        counts of every worker's share of the minibatch (workers hold whole prompt groups).
        ``num_chunks``: this worker's microbatches of the minibatch (for ``scope="microbatch"``)."""
        m = response_mask.float()
        nonempty = m.sum(-1) > 0
        groups = 0.0
        if group_ids is not None:
            groups = float(torch.unique(group_ids.reshape(-1)[nonempty.to(group_ids.device)]).numel())
        counts = torch.stack([m.sum(), nonempty.sum().float()]).double().cpu()
        counts = torch.cat([counts, torch.tensor([groups, float(m.shape[0]), float(max(num_chunks, 1)), 1.0],
                                                 dtype=torch.float64)])
        horizon = torch.tensor([float(m.shape[-1])], dtype=torch.float64)
        if reducer is not None:
            counts, horizon = reducer.all_reduce(counts, "sum"), reducer.all_reduce(horizon, "max")
        return cls(num_tokens=max(float(counts[0]), 1.0), num_seqs=max(float(counts[1]), 1.0),
                   horizon=int(horizon[0]), num_groups=max(float(counts[2]), 1.0),
                   num_rows=max(float(counts[3]), 1.0), num_chunks=float(counts[4]),
                   workers=float(counts[5]))

    def local(self, mask: torch.Tensor) -> "Normalizer":
        """The counts of one microbatch's ``mask`` (TRL's per-microbatch normalisers); the chunk and
        worker counts stay those of the minibatch."""
        m = mask.float()
        return Normalizer(num_tokens=max(float(m.sum()), 1.0),
                          num_seqs=max(float((m.sum(-1) > 0).sum()), 1.0), horizon=int(m.shape[-1]),
                          num_groups=self.num_groups, num_rows=max(float(m.shape[0]), 1.0),
                          num_chunks=self.num_chunks, workers=self.workers)


class Aggregation(Checked):
    """Turn a [B, T] loss matrix into a scalar.

    modes (verl names): ``token-mean`` Σ L·M / N_tokens (DAPO; TRL ``dapo``/``bnpo``);
    ``token-sum`` Σ L·M; ``seq-mean-token-mean`` mean_i of token means (original GRPO; TRL ``grpo``);
    ``seq-mean-token-sum`` mean_i of token sums; ``seq-mean-token-sum-norm`` that divided by a constant
    C (Dr.GRPO; C = ``constant`` or the padded horizon; TRL ``dr_grpo`` with C=max_completion_length).
    ``legacy_no_seq_mean`` reproduces verl ≤ Jan 2026 / HPT ``loss_remove_token_mean``: Σ L·M / C.

    ``scope``: ``minibatch`` (default) or ``microbatch`` = TRL 1.16 GRPOTrainer for loss_type
    grpo/bnpo/dr_grpo/sapo: the mode applied with the microbatch's own counts, divided by the number
    of microbatches (its ``current_gradient_accumulation_steps``) and averaged over workers (DDP).
    ``count_empty_rows``: sequence modes divide by all rows, empty ones included (TRL's ``.mean()``
    and ``size(0)``: rows zeroed by ``mask_truncated_completions`` still count; tokens do not).
    """

    def __init__(self, mode: Literal[MODES] = "token-mean", constant: Optional[Positive] = None,
                 legacy_no_seq_mean: bool = False, scope: Literal[SCOPES] = "minibatch",
                 count_empty_rows: bool = False):
        self.mode, self.constant, self.legacy_no_seq_mean = mode, constant, legacy_no_seq_mean
        self.scope, self.count_empty_rows = scope, count_empty_rows

    def __call__(self, loss_mat: torch.Tensor, mask: torch.Tensor,
                 norm: Optional[Normalizer] = None, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``lengths``: Σ_t M per row clamped to ≥ 1, when the caller has it (as ``of_rows``)."""
        return self._scoped(self._reduce, loss_mat, mask, norm, lengths)

    def of_rows(self, row_sums: torch.Tensor, mask: torch.Tensor, norm: Optional[Normalizer] = None,
                lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The same scalar from the rows' Σ_t L·M ([B]): every mode is linear in them, so a loss
        that is a per-row value times a detached token matrix never needs its [B, T] form.
        ``lengths``: Σ_t M per row clamped to ≥ 1, when the caller has it."""
        return self._scoped(self._of_rows, row_sums, mask, norm, lengths)

    def _scoped(self, reduce, x: torch.Tensor, mask: torch.Tensor, norm: Optional[Normalizer],
                lengths: Optional[torch.Tensor]) -> torch.Tensor:
        """``reduce`` with the counts ``scope`` names (the one home of the scope rule for both entries)."""
        mask = mask.to(x.dtype)
        norm = norm or Normalizer.of(mask)
        if self.scope == "microbatch":
            return reduce(x, mask, norm.local(mask), lengths) / (norm.num_chunks * norm.workers)
        return reduce(x, mask, norm, lengths)

    def _reduce(self, loss_mat: torch.Tensor, mask: torch.Tensor, norm: Normalizer,
                lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.mode in ("token-mean", "token-sum"):
            # Σ L·M as one dot: no [B, T] product in the forward, one in the backward
            total = torch.dot(loss_mat.reshape(-1), mask.expand_as(loss_mat).reshape(-1))
            return total / norm.num_tokens if self.mode == "token-mean" else total
        # a batched dot (bmm) measured slower on CPU
        return self._of_rows((loss_mat * mask).sum(-1), mask, norm, lengths)

    def _of_rows(self, seq_sum: torch.Tensor, mask: torch.Tensor, norm: Normalizer,
                 lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        seqs = norm.num_rows if self.count_empty_rows else norm.num_seqs
        if self.mode in ("token-mean", "token-sum"):
            total = seq_sum.sum()
            return total / norm.num_tokens if self.mode == "token-mean" else total
        if self.mode == "seq-mean-token-mean":
            lengths = mask.sum(-1).clamp_min(1.0) if lengths is None else lengths
            return (seq_sum / lengths).sum() / seqs
        if self.mode == "seq-mean-token-sum":
            return seq_sum.sum() / seqs
        c = float(self.constant if self.constant is not None else norm.horizon)
        if self.legacy_no_seq_mean:
            return seq_sum.sum() / c
        return seq_sum.sum() / seqs / c

    def weight_of(self, mask: torch.Tensor) -> float:
        """This chunk's share of the normaliser, in its units (tokens or non-empty sequences);
        the gradient-variance meter uses it to weigh unequal microbatches."""
        m = mask.float()
        if self.mode.startswith("token"):
            return float(m.sum())
        return float((m.sum(-1) > 0).sum())

    def __repr__(self) -> str:
        extra = "" if self.scope == "minibatch" else f", scope={self.scope!r}"
        extra += ", count_empty_rows=True" if self.count_empty_rows else ""
        return f"Aggregation(mode={self.mode!r}, constant={self.constant!r}{extra})"
