"""Independent float64 references for the presets that need more than a loss (value model, greedy
baseline, per-prompt budgets): written from the papers / verl formulas with plain Python loops and
no ablate code. The per-token surrogates and aggregations come from tests/upge/reference_losses.py
(also ablate-free)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from tests.upge.reference_losses import (D, Case, broadcast, grpo_advantages, ppo_clip_loss,
                                         seq_mean_token_mean, seq_mean_token_sum, token_mean,
                                         whiten_tokens)


def gae_with_values(rewards: Sequence[float], values: torch.Tensor, mask: torch.Tensor, gamma: float,
                    lam: float, bootstrap: Optional[Sequence[bool]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2015) per row over its L valid tokens, outcome reward on token L−1:
    δ_t = r_t + γV_{t+1} − V_t, A_t = δ_t + γλA_{t+1}; V_L = 0, or V_L = V_{L−1} for rows in
    ``bootstrap`` (T-PPO extended GAE on truncated responses). Returns (A, A + V)."""
    B, T = mask.shape
    A = torch.zeros(B, T, dtype=D)
    R = torch.zeros(B, T, dtype=D)
    for i in range(B):
        L = int(mask[i].sum())
        if L == 0:
            continue
        v_next = float(values[i, L - 1]) if bootstrap is not None and bootstrap[i] else 0.0
        a_next = 0.0
        for t in reversed(range(L)):
            r_t = rewards[i] if t == L - 1 else 0.0
            v_t = float(values[i, t])
            delta = r_t + gamma * v_next - v_t
            a_next = delta + gamma * lam * a_next
            A[i, t] = a_next
            R[i, t] = a_next + v_t
            v_next = v_t
    return A, R


def ppo_critic_loss(logp, c: Case, values: torch.Tensor, lam: float = 0.95, eps: float = 0.2,
                    bootstrap=None) -> torch.Tensor:
    """PPO as verl runs it: whitened GAE(γ=1, λ) on the critic's values, clip ε, token-mean."""
    A, _ = gae_with_values(c.rewards, values, c.mask, 1.0, lam, bootstrap)
    adv = whiten_tokens(A, c.mask)
    return token_mean(ppo_clip_loss(logp, c.old_logp, adv, eps, eps), c)


def apa_loss(logp, c: Case, values: torch.Tensor, lam_apa: float = 1.0, lam: float = 0.95) -> torch.Tensor:
    """APA: (1/Σ|o|) Σ (log π_θ − log π_init − Â/λ_APA)², Â = whitened GAE."""
    A, _ = gae_with_values(c.rewards, values, c.mask, 1.0, lam)
    adv = whiten_tokens(A, c.mask)
    return token_mean((logp - c.ref_logp - adv / lam_apa) ** 2, c)


def remax_loss(logp, c: Case, baselines: Sequence[float]) -> torch.Tensor:
    """ReMax: −(1/N) Σ_i (R(y_i) − R(ŷ_greedy of its prompt)) Σ_t log π_θ(y_i,t)."""
    adv = [r - b for r, b in zip(c.rewards, baselines)]
    return seq_mean_token_sum(-broadcast(adv, c.mask) * logp, c)


def dual_clip_loss(logp, old_logp, adv, eps_low: float, eps_high: float, c_dual: float) -> torch.Tensor:
    """Dual-clip PPO (Ye et al. 2020, verl): for Â < 0 the loss is min(PPO loss, −c·Â)."""
    base = ppo_clip_loss(logp, old_logp, adv, eps_low, eps_high)
    return torch.where(adv < 0, torch.minimum(base, -c_dual * adv), base)


def knapsack_loss(logp, c: Case) -> torch.Tensor:
    """Knapsack RL's GRPO: z-score Â (any group sizes) clipped to ±5, clip (0.2, 0.28), dual clip 10,
    token-mean."""
    adv = broadcast([max(-5.0, min(5.0, a)) for a in grpo_advantages(c.rewards, c.group_ids)], c.mask)
    return token_mean(dual_clip_loss(logp, c.old_logp, adv, 0.2, 0.28, 10.0), c)


def grpo_nokl_loss(logp, c: Case, eps: float = 0.2) -> torch.Tensor:
    adv = broadcast(grpo_advantages(c.rewards, c.group_ids), c.mask)
    return seq_mean_token_mean(ppo_clip_loss(logp, c.old_logp, adv, eps, eps), c)


# ------------------------------------------------------------------------------------------------
# Knapsack RL allocation by brute force (the authors' objective, every feasible allocation)
# ------------------------------------------------------------------------------------------------

def knapsack_value(n: int, p: float) -> float:
    return (1 - p ** n - (1 - p) ** n) * p * (1 - p) ** 2


def brute_force_extras(p: Sequence[float], min_n: int, max_extra: int, budget: int) -> tuple[float, list]:
    """max over extras k_i ∈ [0, max_extra], Σ k_i = budget, of Σ_i [k_i > 0]·value(k_i + min_n, p_i)."""
    best, arg = -math.inf, None

    def rec(i: int, left: int, acc: float, ks: list) -> None:
        nonlocal best, arg
        if i == len(p):
            if left == 0 and acc > best + 1e-15:
                best, arg = acc, list(ks)
            return
        for k in range(0, min(max_extra, left) + 1):
            v = knapsack_value(k + min_n, p[i]) if k > 0 else 0.0
            rec(i + 1, left - k, acc + v, ks + [k])

    rec(0, budget, 0.0, [])
    return best, arg
