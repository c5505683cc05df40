"""`train/entropy`: the mean token entropy of the current policy over all valid response tokens.

Why this does not take an aggregation mode: verl logs ``actor/entropy`` through
``agg_loss(entropy, mask, loss_agg_mode)``, so under ``seq-mean-token-sum`` its "entropy" is a
per-sequence *sum* and under ``seq-mean-token-mean`` it up-weights the tokens of short responses
(peer_semantics §1.6). Curves from runs that differ only in the aggregation slot are then not
comparable. Here the metric is always the plain token-weighted mean Σ H·m / Σ m, whatever loss
aggregation the run trains with, so an aggregation ablation compares like with like. (TRL's
``entropy`` is the same global token-weighted mean.) The entropy itself is computed by the policy
on temperature-scaled logits (the sampling temperature), as verl and TRL do.
"""

from __future__ import annotations

import torch


def token_entropy_sum_count(entropy: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ H·m, Σ m) as float64 0-d tensors (float32 on MPS) on the input device, detached: accumulate these over
    microbatches and divide once to get the exact token-weighted mean of a whole batch."""
    if entropy.shape != mask.shape:
        raise ValueError(f"token_entropy: entropy {tuple(entropy.shape)} and mask {tuple(mask.shape)} "
                         "must have the same [B, T] shape")
    acc = torch.float32 if entropy.device.type == "mps" else torch.float64  # MPS has no float64
    e = entropy.detach().to(acc)
    m = mask.detach().to(acc)
    # where() rather than e*m so NaN/inf entropies at padded positions cannot leak into the sum
    return torch.where(m > 0, e * m, torch.zeros_like(e)).sum(), m.sum()


def token_entropy_mean(entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``entropy`` [B, T] over the tokens where ``mask`` [B, T] is nonzero (a 0/1 response
    mask; fractional values act as token weights). Padding never counts, and the result does not
    depend on any loss-aggregation mode (see the module docstring). Returns a float32 0-d tensor on
    the input device (no host sync); NaN when the mask is empty."""
    s, n = token_entropy_sum_count(entropy, mask)
    out = torch.where(n > 0, s / n.clamp_min(1e-30), torch.full_like(s, float("nan")))
    return out.to(torch.float32)
