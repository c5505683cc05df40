"""Reference losses transcribed from the *authors'* published code (not a peer's port), one function
per method, each naming the repository, file and commit it was read from. Like reference_losses.py
nothing here imports ablate; tensors are float64 and the transcriptions keep the authors' tensor
operations (``view(-1, G)``, ``std(dim=1)``, ``repeat_interleave``) so a reader can diff them against
the source. Batches are the ``rl`` layout of make_case: contiguous groups of G rows.
"""

from __future__ import annotations

import torch

from tests.upge.reference_losses import D, Case

GPG_SOURCE = ("AMAP-ML/GPG", "open-r1/src/open_r1/gpg_trainer.py", "e096da8ce527a1636272469cee383ba71ec4a511")
DRGRPO_SOURCE = ("sail-sg/understand-r1-zero", "train_zero_math.py", "dfca49dd460ee7cc8e4a5a162c876a7fd6993b87")
OAT_SOURCE = ("sail-sg/oat", "oat/algorithms/ppo.py + oat/utils/ops.py", "c1a074c320ff5ca9fe9a4f669bf05208e2f310be")
CISPO_SOURCE = ("MiniMax-AI/MiniMax-M1", "MiniMax_M1_tech_report.pdf §3.1 eq. 4-5",
                "2abb4f45a9df4154b4bde024d51874bd127edcee")


def _t(xs) -> torch.Tensor:
    return torch.tensor(list(xs), dtype=D)


def gpg_authors_loss(logp: torch.Tensor, c: Case, G: int, scale_rewards: bool = False) -> torch.Tensor:
    """GPG as gpg_trainer.py computes it with ``adjust_gd=True`` and one generation round
    (min_inverse_alpha = 0): identical groups counted from ``std(dim=1) == 0``, inverse_alpha =
    min(1, valid groups / groups), per-token loss −log π·Â, token mean over the completion mask,
    then ``loss / inverse_alpha``."""
    rewards = _t(c.rewards)
    stds = rewards.view(-1, G).std(dim=1)
    num_identical_reward_groups = (stds == 0).sum().item()
    num_samples = stds.numel()
    n_valid_samples = num_samples - num_identical_reward_groups
    mean_grouped_rewards = rewards.view(-1, G).mean(dim=1).repeat_interleave(G, dim=0)
    std_grouped_rewards = stds.repeat_interleave(G, dim=0)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards:
        advantages = advantages / (std_grouped_rewards + 1e-4)
    inverse_alpha = min(1.0, n_valid_samples / num_samples)
    per_token_loss = -logp * advantages.unsqueeze(1)
    completion_mask = c.mask
    loss = (per_token_loss * completion_mask).sum() / completion_mask.sum()
    return loss / inverse_alpha


def drgrpo_authors_loss(logp: torch.Tensor, c: Case, G: int, generate_max_length: float,
                        cliprange: float = 0.2) -> torch.Tensor:
    """Dr. GRPO as understand-r1-zero's ZeroMathLearner runs it on oat's PPOLearner
    (critic_type=drgrpo): Â = r − mean over ``view(-1, num_samples)`` (no std); per token
    max(−Â·ρ, −Â·clip(ρ, 1 ± cliprange)); ``masked_sum(·, axis=1, constant_normalizer=
    generate_max_length)`` per sequence, then the mean over the mini-batch rows (loss masks 1)."""
    rewards = _t(c.rewards)
    values = rewards.view(-1, G).mean(dim=1).repeat_interleave(G, dim=0)
    advantages = (rewards - values).unsqueeze(1)
    ratio = torch.exp(logp - c.old_logp)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss_max = torch.max(pg_losses, pg_losses2)
    pg_loss = (pg_loss_max * c.mask).sum(axis=1) / generate_max_length
    return pg_loss.mean()


def cispo_paper_loss(logp: torch.Tensor, c: Case, G: int, eps_high: float = 0.28) -> torch.Tensor:
    """CISPO, MiniMax-M1 eq. 4-5 (no training code is published): token-level
    (1/Σ|o_i|) Σ_i Σ_t sg(r̂)·Â·log π with r̂ = clip(r, 1 − ε_low, 1 + ε_high) and, as §3.1 says,
    no lower bound (ε_low large); Â the GRPO group-relative advantage (verl's std ε 1e-6)."""
    rewards = _t(c.rewards)
    mean = rewards.view(-1, G).mean(dim=1).repeat_interleave(G)
    std = rewards.view(-1, G).std(dim=1).repeat_interleave(G)
    adv = ((rewards - mean) / (std + 1e-6)).unsqueeze(1)
    r_hat = torch.clamp(torch.exp(logp - c.old_logp), max=1.0 + eps_high).detach()
    return -(r_hat * adv * logp * c.mask).sum() / c.mask.sum()
