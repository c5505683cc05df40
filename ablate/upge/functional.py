"""Pure tensor helpers shared by the advantage estimators: masked moments, whitening, group statistics.

Everything here is a function of plain tensors (no RolloutBatch, no config). Group statistics are
vectorised with ``index_add_``/``scatter_reduce`` over ``torch.unique(group_ids)``: no Python loop
over groups, and group ids may be any integers in any order (interleaved groups are fine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ablate.errors import choice_error

EPS_PLACEMENTS = ("std", "var", "max")
"""Where ε enters a std division. ``std``: x/(std+ε) (verl grpo, TRL, OpenRLHF group_norm);
``var``: x·rsqrt(var+ε) (verl ``masked_whiten``); ``max``: x·rsqrt(max(var, ε)) (OpenRLHF whitening)."""


def check_eps_placement(value: str, field: str = "eps_placement") -> str:
    if value not in EPS_PLACEMENTS:
        raise choice_error(field, value, EPS_PLACEMENTS)
    return value


def _as_bool(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


# --------------------------------------------------------------------------------------------------
# masked moments
# --------------------------------------------------------------------------------------------------

def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Σ x over ``mask`` (values outside the mask, NaN included, are ignored)."""
    m = _as_bool(mask)
    xz = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return xz.sum() if dim is None else xz.sum(dim)


def masked_count(mask: torch.Tensor, dim: Optional[int] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    m = _as_bool(mask).to(dtype)
    return m.sum() if dim is None else m.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Mean of x over ``mask``; 0 where the mask is empty."""
    n = masked_count(mask, dim, dtype=x.dtype)
    return masked_sum(x, mask, dim) / n.clamp_min(1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True,
               dim: Optional[int] = None) -> torch.Tensor:
    """Variance of x over ``mask`` (two-pass). ``unbiased``: Bessel's n−1 (torch.std, verl, TRL).

    NaN where it is undefined (n ≤ 1 with Bessel, n = 0 without), like ``torch.var`` of one value.
    """
    m = _as_bool(mask)
    n = masked_count(m, dim, dtype=x.dtype)
    mean = masked_mean(x, m, dim)
    centred = x - (mean if dim is None else mean.unsqueeze(dim))
    ssd = masked_sum(centred * centred, m, dim)
    denom = n - 1 if unbiased else n
    return torch.where(denom > 0, ssd / denom.clamp_min(1), torch.full_like(ssd, float("nan")))


def divide_by_std(x: torch.Tensor, var: torch.Tensor, eps: float, eps_placement: str = "std") -> torch.Tensor:
    """x / σ with ε placed per ``eps_placement`` (see EPS_PLACEMENTS)."""
    if eps_placement == "std":
        return x / (var.sqrt() + eps)
    if eps_placement == "var":
        return x * torch.rsqrt(var + eps)
    if eps_placement == "max":
        return x * torch.rsqrt(var.clamp_min(eps))
    raise choice_error("eps_placement", eps_placement, EPS_PLACEMENTS)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True, eps: float = 1e-8,
                  eps_placement: str = "var", shift_mean: bool = True) -> torch.Tensor:
    """Whiten x over every valid entry of ``mask`` (token-weighted when x is [B, T]); 0 outside.

    Defaults are verl's ``masked_whiten`` (unbiased var, +1e-8 inside the rsqrt); OpenRLHF's global
    whitening is ``unbiased=False, eps_placement="max"``. With ``shift_mean=False`` the mean is only
    used for the variance. An undefined variance (≤ 1 valid entry) counts as 0.
    """
    m = _as_bool(mask)
    mean = masked_mean(x, m)
    var = torch.nan_to_num(masked_var(x, m, unbiased=unbiased), nan=0.0)
    out = divide_by_std(x - mean if shift_mean else x, var, eps, eps_placement)
    return torch.where(m, out, torch.zeros((), dtype=out.dtype, device=out.device))


# --------------------------------------------------------------------------------------------------
# group statistics (per prompt), vectorised
# --------------------------------------------------------------------------------------------------

def group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(inverse [B] long in 0..G−1, G) for arbitrary, possibly interleaved group ids."""
    _, inv = torch.unique(group_ids.reshape(-1), return_inverse=True)
    return inv, int(inv.max().item()) + 1 if inv.numel() else 0


def _scatter_sum(x: torch.Tensor, inv: torch.Tensor, n_groups: int) -> torch.Tensor:
    return torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, inv, x)


def group_sum(x: torch.Tensor, group_ids: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per row: Σ of x over the rows of its group that are in ``mask`` ([B])."""
    inv, g = group_index(group_ids)
    m = torch.ones_like(x, dtype=torch.bool) if mask is None else _as_bool(mask)
    xz = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return _scatter_sum(xz, inv, g)[inv]


def group_count(group_ids: torch.Tensor, mask: Optional[torch.Tensor] = None,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Per row: number of rows of its group that are in ``mask`` ([B])."""
    ones = torch.ones(group_ids.shape[0], dtype=dtype, device=group_ids.device)
    return group_sum(ones, group_ids, mask)


def group_mean(x: torch.Tensor, group_ids: torch.Tensor, mask: Optional[torch.Tensor] = None,
               weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per row: (weighted) mean of x over its group's rows in ``mask``; 0 when the group has no
    weight (no rows in the mask, or all weights zero)."""
    w = torch.ones_like(x) if weights is None else weights.to(x.dtype)
    m = torch.ones_like(x, dtype=torch.bool) if mask is None else _as_bool(mask)
    w = torch.where(m, w, torch.zeros_like(w))
    num = group_sum(torch.where(m, x, torch.zeros_like(x)) * w, group_ids)
    den = group_sum(w, group_ids)
    return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(num))


@dataclass
class GroupStats:
    """Per-row statistics of each row's group over the rows in the mask ([B] each).

    ``var``/``std`` are NaN where undefined (count ≤ 1 with Bessel, like torch.std / TRL nanstd).
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()


def group_stats(x: torch.Tensor, group_ids: torch.Tensor, mask: Optional[torch.Tensor] = None,
                unbiased: bool = True) -> GroupStats:
    """Mean, variance and count of x per group over ``mask`` (two-pass, vectorised)."""
    m = torch.ones_like(x, dtype=torch.bool) if mask is None else _as_bool(mask)
    count = group_count(group_ids, m, dtype=x.dtype)
    mean = group_mean(x, group_ids, m)
    d = torch.where(m, x - mean, torch.zeros_like(x))
    ssd = group_sum(d * d, group_ids)
    denom = count - 1 if unbiased else count
    var = torch.where(denom > 0, ssd / denom.clamp_min(1), torch.full_like(ssd, float("nan")))
    return GroupStats(mean=mean, var=var, count=count)


def group_reward_stats(rewards: torch.Tensor, group_ids: torch.Tensor,
                       rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: (mean, population variance, count) of its group's rewards over ``rows`` (NaN
    rewards left out). With 0/1 rewards the mean is p̂ and the variance p̂(1−p̂)."""
    r = rewards.to(torch.float64)
    m = _as_bool(rows) & ~torch.isnan(r)
    st = group_stats(torch.nan_to_num(r), group_ids, m, unbiased=False)
    return st.mean, torch.nan_to_num(st.var), st.count


def _group_extreme(x: torch.Tensor, group_ids: torch.Tensor, mask: Optional[torch.Tensor], op: str) -> torch.Tensor:
    inv, g = group_index(group_ids)
    m = torch.ones_like(x, dtype=torch.bool) if mask is None else _as_bool(mask)
    fill = float("-inf") if op == "amax" else float("inf")
    src = torch.where(m, x, torch.full_like(x, fill))
    return torch.full((g,), fill, dtype=x.dtype, device=x.device).scatter_reduce(
        0, inv, src, op, include_self=True)[inv]


def group_max(x: torch.Tensor, group_ids: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per row: max of x over its group's rows in ``mask`` (−inf for an empty group)."""
    return _group_extreme(x, group_ids, mask, "amax")


def group_min(x: torch.Tensor, group_ids: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per row: min of x over its group's rows in ``mask`` (+inf for an empty group)."""
    return _group_extreme(x, group_ids, mask, "amin")


def group_all_equal(x: torch.Tensor, group_ids: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per row (bool [B]): its group has ≥ 2 rows in ``mask`` and they all hold the same value
    (exact max == min, so float error in a mean can never make such a group non-zero)."""
    hi = group_max(x, group_ids, mask)
    lo = group_min(x, group_ids, mask)
    return (hi == lo) & (group_count(group_ids, mask, dtype=x.dtype) >= 2)


# --------------------------------------------------------------------------------------------------
# token-level helpers
# --------------------------------------------------------------------------------------------------

def last_token_index(response_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last valid token per row ([B] long); −1 for zero-length rows."""
    m = _as_bool(response_mask)
    T = m.shape[-1]
    pos = torch.arange(T, device=m.device).expand_as(m)
    return torch.where(m, pos, torch.full_like(pos, -1)).amax(-1) if T else \
        torch.full(m.shape[:-1], -1, dtype=torch.long, device=m.device)


def place_on_last_token(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """[B] per-response values placed on each row's last valid token ([B, T], 0 elsewhere; a
    zero-length row gets nothing) — how verl/OpenRLHF turn an outcome reward into token rewards."""
    idx = last_token_index(response_mask)
    out = torch.zeros(response_mask.shape, dtype=values.dtype, device=values.device)
    has = idx >= 0
    rows = torch.nonzero(has, as_tuple=True)[0]
    out[rows, idx[has]] = values[has]
    return out


def return_to_go(token_rewards: torch.Tensor, response_mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """Discounted return-to-go G_t = r_t + γ·G_{t'} over valid tokens, t' the next valid token.

    Masked tokens inside a response (tool/observation tokens) carry the running return through
    unchanged — no reward added, no discount step — as verl's REINFORCE++ does since PR #7278/#7300
    (Aug 2026); their own return is reported as 0. The loop runs over T, never over rows or groups.
    """
    m = _as_bool(response_mask)
    out = torch.zeros_like(token_rewards)
    running = torch.zeros(token_rewards.shape[:-1], dtype=token_rewards.dtype, device=token_rewards.device)
    for t in range(token_rewards.shape[-1] - 1, -1, -1):
        running = torch.where(m[..., t], token_rewards[..., t] + gamma * running, running)
        out[..., t] = torch.where(m[..., t], running, torch.zeros_like(running))
    return out


def zero_advantage_group_fraction(adv_tokens: torch.Tensor, group_ids: torch.Tensor,
                                  response_mask: torch.Tensor, atol: float = 0.0) -> torch.Tensor:
    """Fraction of groups whose advantages are all zero (|A| ≤ atol) on every valid token (0-d float).

    A group with no valid tokens at all counts as zero (it gives no gradient). Logged by the trainer
    as ``train/frac_zero_adv_groups``.
    """
    m = _as_bool(response_mask)
    inv, g = group_index(group_ids)
    if g == 0:
        return torch.zeros((), dtype=torch.float32, device=adv_tokens.device)
    a = torch.where(m, adv_tokens.abs().to(torch.float64), torch.zeros((), dtype=torch.float64,
                                                                        device=adv_tokens.device))
    row_max = a.amax(-1) if a.shape[-1] else torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
    row_max = torch.nan_to_num(row_max, nan=float("inf"))
    grp_max = torch.zeros(g, dtype=a.dtype, device=a.device).scatter_reduce(0, inv, row_max, "amax",
                                                                              include_self=True)
    return (grp_max <= atol).to(torch.float32).mean()


def gae(token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float, last_value: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), both [B, T] and zero on padding.

    δ_t = r_t + γ V_{t+1} − V_t, A_t = δ_t + γλ A_{t+1}; padded positions are skipped (the next value
    and advantage carry through them), so right padding never leaks. ``last_value`` [B] is V after
    the last valid token: 0 for a finished response (verl), V(s_l) := V(s_{l−1}) for T-PPO's extended
    GAE on a truncated one. returns = A + V (the value target).
    """
    B, T = values.shape
    m = mask.to(values.dtype)
    r = token_rewards.to(values.dtype)
    nextv = torch.zeros(B, dtype=values.dtype, device=values.device) if last_value is None \
        else last_value.to(values.dtype)
    lastgae = torch.zeros(B, dtype=values.dtype, device=values.device)
    adv = torch.zeros_like(values)
    for t in reversed(range(T)):
        delta = r[:, t] + gamma * nextv - values[:, t]
        new = delta + gamma * lam * lastgae
        mt = m[:, t]
        nextv = values[:, t] * mt + (1 - mt) * nextv
        lastgae = new * mt + (1 - mt) * lastgae
        adv[:, t] = lastgae
    adv = adv * m
    return adv, (adv + values) * m
