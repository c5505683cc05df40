"""Split a batch's rows into minibatches/microbatches: random row chunks, or whole prompt groups.

With ``groups`` given (a component declared ``Needs(whole_groups=True)``) every chunk holds whole
groups, so a loss that couples the responses of one prompt sees all of them; chunks are balanced by
row count. Gradient accumulation stays exact either way: losses are normalised over the minibatch.
"""

from __future__ import annotations

import math
from typing import Optional

import torch


def partition(n: int, k: int, gen: Optional[torch.Generator],
              groups: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
    """Row indices of ``k`` chunks of ``range(n)``; shuffled with ``gen`` (None: in order)."""
    k = max(1, k)
    if groups is None:
        order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
        return [c for c in order.tensor_split(min(k, max(n, 1))) if c.numel() > 0]
    ids = groups.reshape(-1).cpu()
    uniq = torch.unique(ids)
    if gen is not None:
        uniq = uniq[torch.randperm(uniq.numel(), generator=gen)]
    members = [torch.nonzero(ids == g).reshape(-1) for g in uniq]
    k = min(k, len(members)) if members else 1
    target = n / k
    chunks: list[list[torch.Tensor]] = [[]]
    filled = 0
    for i, rows in enumerate(members):  # in order: close a chunk once it reaches its share of rows,
        left = len(members) - i  # or when each remaining group must open a chunk of its own
        if chunks[-1] and len(chunks) < k and (filled >= target * len(chunks) or left <= k - len(chunks)):
            chunks.append([])
        chunks[-1].append(rows)
        filled += rows.numel()
    return [torch.cat(c) for c in chunks if c]


def group_units(groups: torch.Tensor, k: int) -> list[tuple[torch.Tensor, bool]]:
    """About ``k`` microbatches of a minibatch whose rows carry prompt-group ids, for
    ``train/grad_var``: ``(rows, closes_unit)`` pairs where the rows of each group are consecutive
    and a unit (what the gradient-variance meter treats as one independent draw) ends only at a
    group boundary. Responses of one prompt are correlated (the advantage couples them), so only
    whole groups are i.i.d.; see ablate/metrics/gradvar.py. With at least ``k`` groups the chunks
    are whole groups (``partition``); with fewer, each group is split into consecutive chunks of
    about n/k rows (memory as requested) and its last chunk closes the unit."""
    ids = groups.reshape(-1).cpu()
    n = ids.numel()
    if n == 0:
        return []
    k = max(1, k)
    uniq = torch.unique(ids)
    if uniq.numel() >= k:
        return [(c, True) for c in partition(n, k, None, ids)]
    out: list[tuple[torch.Tensor, bool]] = []
    for g in uniq:
        rows = torch.nonzero(ids == g).reshape(-1)
        pieces = [c for c in rows.tensor_split(max(1, min(rows.numel(), math.ceil(k * rows.numel() / n))))
                  if c.numel() > 0]
        out.extend((c, i == len(pieces) - 1) for i, c in enumerate(pieces))
    return out
