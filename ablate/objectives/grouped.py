"""Pure tensor helpers for group-coupled terms: sequence log-ratios, per-group sums and pairs.

A group-coupled term sees every response of a prompt at once (``Needs(whole_groups=True)``: the
trainer keeps groups intact in minibatches and microbatches). A row takes part when it has at least
one valid token among the term's rows; the term's loss is a sum over groups divided by a count of the
whole minibatch (``Normalizer.num_groups`` or ``num_seqs``), so microbatch accumulation is exact.
"""

from __future__ import annotations

from typing import Optional

import torch

from ablate.upge.functional import group_index


def participants(response_mask: torch.Tensor) -> torch.Tensor:
    """[B] bool: rows with at least one valid token (the rows a group-coupled term trains on)."""
    return response_mask.sum(-1) > 0


def sequence_log_ratio(logp: torch.Tensor, base_logp: torch.Tensor, response_mask: torch.Tensor,
                       mean: bool = False) -> torch.Tensor:
    """Σ_t (log π_θ − log π_base) over valid tokens ([B], with the gradient of ``logp``); the
    per-token mean instead when ``mean``. Padding never enters (garbage log-probs are masked)."""
    m = response_mask.to(logp.dtype)
    s = ((logp - base_logp.detach()) * m).sum(-1)
    return s / m.sum(-1).clamp_min(1.0) if mean else s


def group_sums(x: torch.Tensor, inv: torch.Tensor, n_groups: int) -> torch.Tensor:
    """[n_groups] Σ of x per group (differentiable)."""
    return torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add(0, inv, x)


def dense_groups(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(inverse [B] in 0..G−1, G) for arbitrary group ids."""
    return group_index(group_ids)


def position_in_group(inv: torch.Tensor, n_groups: int) -> torch.Tensor:
    """[B] long: each row's 0-based position among its group's rows, in row order."""
    order = torch.sort(inv, stable=True).indices
    counts = torch.bincount(inv, minlength=n_groups)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.empty_like(inv)
    pos[order] = torch.arange(inv.numel(), device=inv.device) - starts[inv[order]]
    return pos


def adjacent_pairs(inv: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint consecutive pairs within each group, (rows 0,1), (2,3), … in row order (REBEL's
    layout: its minibatch holds y and y′ of a prompt side by side). Returns (first, second) indices."""
    order = torch.sort(inv, stable=True).indices
    pos = position_in_group(inv, n_groups)[order]
    g = inv[order]
    has_next = torch.zeros_like(pos, dtype=torch.bool)
    has_next[:-1] = g[1:] == g[:-1]
    first = (pos % 2 == 0) & has_next
    idx = torch.nonzero(first).reshape(-1)
    return order[idx], order[idx + 1]


def all_pairs_sum(d: torch.Tensor, inv: torch.Tensor, n_groups: int) -> torch.Tensor:
    """[n_groups] Σ_{i<j in g} (d_i − d_j)² = k·Σd² − (Σd)², vectorised over groups."""
    k = group_sums(torch.ones_like(d), inv, n_groups)
    s1 = group_sums(d, inv, n_groups)
    s2 = group_sums(d * d, inv, n_groups)
    return k * s2 - s1 * s1


def group_log1p_sum_exp(x: torch.Tensor, inv: torch.Tensor, n_groups: int,
                        select: Optional[torch.Tensor] = None) -> torch.Tensor:
    """[n_groups] log(1 + Σ_{i in g, select} e^{x_i}) computed stably (the "1" is an anchor logit 0);
    0 for a group with no selected row."""
    sel = torch.ones_like(x, dtype=torch.bool) if select is None else select
    xs = torch.where(sel, x, torch.full_like(x, float("-inf")))
    shift = torch.zeros(n_groups, dtype=x.dtype, device=x.device).scatter_reduce(
        0, inv, xs.detach(), reduce="amax", include_self=True)  # max(0, max x) per group
    z = torch.where(sel, x - shift[inv], torch.full_like(x, float("-inf")))  # no inf·0 in the backward
    e = torch.exp(z)
    return shift + torch.log(torch.exp(-shift) + group_sums(e, inv, n_groups))
