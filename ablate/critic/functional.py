"""Pure tensor functions of the critic: GAE, the clipped value loss, explained variance.

Conventions are verl's (``compute_gae_advantage_return``, ``compute_value_loss``,
``compute_data_metrics``); where T-PPO's extended GAE differs it is a parameter (``last_value``).
"""

from __future__ import annotations

from typing import Optional

import torch


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


def value_loss(vpred: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, cliprange: Optional[float], num_tokens: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(0.5 · Σ max((V−R)², (clip(V, V_old ± c) − R)²) / num_tokens, clipped-token count).

    verl ``compute_value_loss`` with token-mean aggregation; ``num_tokens`` is the minibatch's valid
    token count so microbatch accumulation gives the minibatch loss. ``cliprange`` None = unclipped.
    """
    m = mask.to(vpred.dtype)
    l1 = (vpred - returns) ** 2
    if cliprange is None:
        per_tok, clipped = l1, torch.zeros_like(l1)
    else:
        vclip = old_values + (vpred - old_values).clamp(-cliprange, cliprange)
        l2 = (vclip - returns) ** 2
        per_tok = torch.maximum(l1, l2)
        clipped = (l2 > l1).to(vpred.dtype)
    return 0.5 * (per_tok * m).sum() / max(num_tokens, 1.0), (clipped * m).sum().detach()


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       eps: float = 1e-5) -> float:
    """1 − Var(R − V) / (Var(R) + eps) over valid tokens, unbiased variances (verl
    ``critic/vf_explained_var``). 1 = perfect, 0 = no better than a constant, < 0 = worse."""
    sel = mask.bool()
    v, r = values[sel].double(), returns[sel].double()
    if r.numel() < 2:
        return float("nan")
    return float(1.0 - torch.var(r - v) / (torch.var(r) + eps))
