"""Pure tensor functions of the critic: the clipped value loss, explained variance (GAE, an
advantage estimator, lives in ablate/upge/functional.py).

Conventions are verl's (``compute_gae_advantage_return``, ``compute_value_loss``,
``compute_data_metrics``); where T-PPO's extended GAE differs it is a parameter (``last_value``).
"""

from __future__ import annotations

from typing import Optional

import torch


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
