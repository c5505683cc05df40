"""Hand-written float64 reference losses for the method presets (used by test_presets_reference.py).

Every function here is written from the method's formula as its paper or the named peer (verl, TRL,
the official HPT code) states it, with plain Python loops over groups and rows. Nothing here imports
ablate: advantages are Python floats computed from the reward lists, per-token surrogates are
element-wise torch expressions of the current log-probs ``logp`` (the only tensor carrying a
gradient), and aggregations are explicit sums over rows.

Conventions shared by all references (peer_semantics §1.2, §1.4):

* groups are rows with the same group id; std is the unbiased (Bessel) one, as ``torch.std`` in verl;
* a zero-length response still counts in its group's reward statistics (verl works on scores) but
  has no token, and rows without tokens are left out of every "mean over sequences" (verl
  ``agg_loss``: "exclude fully masked sequences"); TRL divides by all rows instead, see
  ``seq_mean_token_sum_norm(count_empty_rows=True)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

D = torch.float64


@dataclass
class Case:
    """One hand-made batch: everything a reference needs, as the pipeline + trainer leave it."""

    logp: torch.Tensor  # [B, T] current log-probs (values at padding are garbage on purpose)
    old_logp: torch.Tensor  # [B, T] behaviour log-probs, 0 on padding (trainer × response_mask)
    ref_logp: torch.Tensor  # [B, T] frozen reference model, 0 on padding
    mask: torch.Tensor  # [B, T] float64 {0, 1}
    rewards: list  # [B] floats
    group_ids: list  # [B] ints
    is_demo: list  # [B] bools
    loss_weights: list  # [B] floats (pipeline gates; 1.0 = none)
    components: Optional[list] = None  # [B][K] named rewards (GDPO)

    @property
    def B(self) -> int:
        return len(self.rewards)

    def length(self, i: int) -> int:
        return int(self.mask[i].sum().item())

    def groups(self) -> dict:
        out: dict = {}
        for i, g in enumerate(self.group_ids):
            out.setdefault(g, []).append(i)
        return out

    def nonempty_rows(self) -> list:
        return [i for i in range(self.B) if self.length(i) > 0]


# ------------------------------------------------------------------------------------------------
# group statistics (Python floats)
# ------------------------------------------------------------------------------------------------

def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _std_unbiased(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def grpo_advantages(rewards: Sequence[float], group_ids: Sequence[int], eps: float = 1e-6) -> list:
    """GRPO (DeepSeekMath; verl compute_grpo_outcome_advantage): (r − mean_G)/(std_G + ε), Bessel std;
    a singleton group has mean 0 and std 1 (verl)."""
    out = [0.0] * len(rewards)
    for rows in _groups(group_ids).values():
        rs = [rewards[i] for i in rows]
        mean, std = (0.0, 1.0) if len(rs) == 1 else (_mean(rs), _std_unbiased(rs))
        for i in rows:
            out[i] = (rewards[i] - mean) / (std + eps)
    return out


def centered_advantages(rewards, group_ids) -> list:
    """Dr. GRPO: r − mean_G (no std)."""
    out = [0.0] * len(rewards)
    for rows in _groups(group_ids).values():
        mean = 0.0 if len(rows) == 1 else _mean([rewards[i] for i in rows])
        for i in rows:
            out[i] = rewards[i] - mean
    return out


def rloo_advantages(rewards, group_ids) -> list:
    """RLOO (Ahmadian et al. 2024): r_i − (1/(G−1)) Σ_{j≠i} r_j."""
    out = [0.0] * len(rewards)
    for rows in _groups(group_ids).values():
        for i in rows:
            others = [rewards[j] for j in rows if j != i]
            out[i] = rewards[i] - (sum(others) / len(others) if others else 0.0)
    return out


def opo_advantages(rewards, group_ids, lengths) -> list:
    """OPO (verl compute_opo_outcome_advantage): r − Σ_j |o_j| r_j / Σ_j |o_j| within the group."""
    out = [0.0] * len(rewards)
    for rows in _groups(group_ids).values():
        tot = sum(lengths[j] for j in rows)
        base = sum(lengths[j] * rewards[j] for j in rows) / tot if (len(rows) > 1 and tot > 0) else 0.0
        for i in rows:
            out[i] = rewards[i] - base
    return out


def gpg_advantages(rewards, group_ids) -> list:
    """GPG as verl computes it: α (r − mean_G), α = B / #(non-zero rewards in the batch)."""
    nnz = sum(1 for r in rewards if r != 0)
    alpha = len(rewards) / nnz if nnz else 1.0
    return [alpha * a for a in centered_advantages(rewards, group_ids)]


def sign_advantages(rewards, threshold: float = 0.5) -> list:
    """UPGE Table 1 REINFORCE: Â = ±1 (binary reward mapped to ±1, no baseline)."""
    return [1.0 if r > threshold else -1.0 for r in rewards]


def beta_pdf(p: float, a: float, b: float) -> float:
    return p ** (a - 1) * (1 - p) ** (b - 1) * math.gamma(a + b) / (math.gamma(a) * math.gamma(b))


def bnpo_advantages(rewards, group_ids) -> tuple[list, float, float]:
    """BNPO: Â = (R − p̂)/Beta_pdf(p̂; α, β), p̂ the group success rate; (α, β) from a method-of-moments
    Beta fit (a, b) to the batch's success rates, α = max(1, 1 + a/3), β = max(1, 1 + b/3)."""
    ps = [_mean([rewards[i] for i in rows]) for rows in _groups(group_ids).values() if len(rows) >= 2]
    a = b = 1.0
    if len(ps) >= 2:
        m, v = _mean(ps), _std_unbiased(ps) ** 2
        if v > 0:
            c = m * (1 - m) / v - 1
            a, b = max(1.0, 1 + m * c / 3), max(1.0, 1 + (1 - m) * c / 3)
    out = [0.0] * len(rewards)
    for rows in _groups(group_ids).values():
        p = 0.0 if len(rows) == 1 else _mean([rewards[i] for i in rows])
        for i in rows:
            out[i] = 0.0 if rewards[i] == p else (rewards[i] - p) / beta_pdf(p, a, b)
    return out, a, b


def whiten_tokens(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """verl masked_whiten over the batch's valid tokens: (x − mean)/sqrt(var_unbiased + ε)."""
    xs = [float(values[i, t]) for i in range(values.shape[0]) for t in range(values.shape[1]) if mask[i, t] > 0]
    m = _mean(xs)
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return (values - m) / math.sqrt(var + eps) * mask


def broadcast(per_response: Sequence[float], mask: torch.Tensor) -> torch.Tensor:
    return torch.tensor(list(per_response), dtype=D)[:, None] * mask


def gae_advantages(rewards, mask: torch.Tensor, gamma: float = 1.0, lam: float = 1.0) -> torch.Tensor:
    """GAE (Schulman et al. 2015) with the outcome reward on the last valid token and V ≡ 0:
    δ_t = r_t + γV_{t+1} − V_t, A_t = δ_t + γλA_{t+1}."""
    B, T = mask.shape
    A = torch.zeros(B, T, dtype=D)
    for i in range(B):
        L = int(mask[i].sum())
        nxt = 0.0
        for t in reversed(range(L)):
            r_t = rewards[i] if t == L - 1 else 0.0
            delta = r_t + gamma * 0.0 - 0.0
            nxt = delta + gamma * lam * nxt
            A[i, t] = nxt
    return A


def return_to_go(rewards, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """REINFORCE++: G_t = Σ_{s≥t} γ^{s−t} r_s with the outcome reward at the last valid token."""
    B, T = mask.shape
    G = torch.zeros(B, T, dtype=D)
    for i in range(B):
        L = int(mask[i].sum())
        for t in range(L):
            G[i, t] = sum((gamma ** (s - t)) * (rewards[i] if s == L - 1 else 0.0) for s in range(t, L))
    return G


def gdpo_token_advantages(components, group_ids, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GDPO (verl compute_gdpo_outcome_advantage): per reward component GRPO z-score, summed with
    unit weights, then verl masked_whiten over the batch's valid tokens."""
    K = len(components[0])
    total = [0.0] * len(components)
    for k in range(K):
        a_k = grpo_advantages([c[k] for c in components], group_ids, eps)
        total = [x + y for x, y in zip(total, a_k)]
    return whiten_tokens(broadcast(total, mask), mask)


# ------------------------------------------------------------------------------------------------
# per-token surrogates (differentiable in logp)
# ------------------------------------------------------------------------------------------------

def ppo_clip_loss(logp, old_logp, adv, eps_low: float, eps_high: float) -> torch.Tensor:
    """PPO (Schulman et al. 2017): −min(ρÂ, clip(ρ, 1−ε_l, 1+ε_h)Â) per token."""
    ratio = torch.exp(logp - old_logp)
    return -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)


def ppo_clipped_tokens(c: Case, adv: torch.Tensor, eps_low: float, eps_high: float) -> torch.Tensor:
    """bool [B, T]: valid tokens on the clipped branch (no gradient)."""
    ratio = torch.exp(c.logp.detach() - c.old_logp)
    return (c.mask > 0) & (((adv > 0) & (ratio > 1 + eps_high)) | ((adv < 0) & (ratio < 1 - eps_low)))


def k3_kl(logp, ref_logp) -> torch.Tensor:
    """verl low_var_kl: x = clamp(ref − logp, ±20); e^x − x − 1, clamped to ±10 (DeepSeekMath Eq. 4)."""
    x = torch.clamp(ref_logp - logp, -20.0, 20.0)
    return torch.clamp(torch.exp(x) - x - 1.0, -10.0, 10.0)


# ------------------------------------------------------------------------------------------------
# aggregations (explicit sums over rows)
# ------------------------------------------------------------------------------------------------

def token_mean(L: torch.Tensor, c: Case) -> torch.Tensor:
    """(1/Σ_i|o_i|) Σ_i Σ_t L_{i,t} (DAPO token-level; verl token-mean)."""
    total = sum((L[i, :c.length(i)]).sum() for i in range(c.B))
    return total / sum(c.length(i) for i in range(c.B))


def seq_mean_token_mean(L: torch.Tensor, c: Case) -> torch.Tensor:
    """(1/G) Σ_i (1/|o_i|) Σ_t L_{i,t} over non-empty rows (original GRPO)."""
    rows = c.nonempty_rows()
    return sum(L[i, :c.length(i)].sum() / c.length(i) for i in rows) / len(rows)


def seq_mean_token_sum(L: torch.Tensor, c: Case) -> torch.Tensor:
    """(1/N) Σ_i Σ_t L_{i,t}: the whole completion as one action, mean over sequences."""
    rows = c.nonempty_rows()
    return sum(L[i, :c.length(i)].sum() for i in rows) / len(rows)


def seq_mean_token_sum_norm(L: torch.Tensor, c: Case, constant: float,
                            count_empty_rows: bool = False) -> torch.Tensor:
    """Dr. GRPO: Σ_i Σ_t L_{i,t} / (G · L_max). ``count_empty_rows``: TRL's B_local counts every row;
    verl ≥ Feb 2026 counts rows with at least one token."""
    rows = c.nonempty_rows()
    n = c.B if count_empty_rows else len(rows)
    return sum(L[i, :c.length(i)].sum() for i in rows) / (n * constant)


# ------------------------------------------------------------------------------------------------
# method references: loss(logp) for one Case
# ------------------------------------------------------------------------------------------------

def sft_loss(logp, c: Case) -> torch.Tensor:
    """SFT: token-mean NLL over all demonstration tokens of the batch."""
    return token_mean(-logp, c)


def ppo_loss(logp, c: Case, eps: float = 0.2) -> torch.Tensor:
    """PPO, UPGE Table 1 row without a critic: GAE(γ=λ=1, V≡0) whitened over the batch (verl whitens
    GAE advantages), PPO clip ε, token-mean."""
    adv = whiten_tokens(gae_advantages(c.rewards, c.mask, 1.0, 1.0), c.mask)
    return token_mean(ppo_clip_loss(logp, c.old_logp, adv, eps, eps), c)


def grpo_loss(logp, c: Case, eps: float = 0.2, beta: float = 0.04) -> torch.Tensor:
    """GRPO (DeepSeekMath Eq. 3): (1/G)Σ_i (1/|o_i|)Σ_t [−min(ρÂ, clip(ρ)Â) + β·D_KL^{k3}]."""
    adv = broadcast(grpo_advantages(c.rewards, c.group_ids), c.mask)
    L = ppo_clip_loss(logp, c.old_logp, adv, eps, eps) + beta * k3_kl(logp, c.ref_logp)
    return seq_mean_token_mean(L, c)


def reinforce_loss(logp, c: Case) -> torch.Tensor:
    """UPGE Table 1 REINFORCE: −(1/N) Σ_i Â_i log π_θ(y_i), Â = ±1, log π(y) = Σ_t log π_t."""
    adv = sign_advantages(c.rewards)
    rows = c.nonempty_rows()
    return sum(-adv[i] * logp[i, :c.length(i)].sum() for i in rows) / len(rows)


def rloo_loss(logp, c: Case) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024): −(1/N) Σ_i (r_i − mean_{j≠i} r_j) log π_θ(y_i), on-policy."""
    adv = rloo_advantages(c.rewards, c.group_ids)
    rows = c.nonempty_rows()
    return sum(-adv[i] * logp[i, :c.length(i)].sum() for i in rows) / len(rows)


def cispo_loss(logp, c: Case, eps_low: float = 0.2, eps_high: float = 0.28) -> torch.Tensor:
    """verl compute_policy_loss_cispo: −sg(clip(ρ, 1−ε_l, 1+ε_h))·Â·log π, token-mean."""
    adv = broadcast(grpo_advantages(c.rewards, c.group_ids), c.mask)
    w = torch.clamp(torch.exp(torch.clamp(logp - c.old_logp, -20, 20)), 1 - eps_low, 1 + eps_high).detach()
    return token_mean(-w * adv * logp, c)


def gspo_loss(logp, c: Case, eps_low: float = 3e-4, eps_high: float = 4e-4) -> torch.Tensor:
    """GSPO: (1/G) Σ_i −min(s_i Â_i, clip(s_i, 1−ε_l, 1+ε_h) Â_i), s_i = exp((1/|y_i|) Σ_t log ρ_{i,t})."""
    adv = grpo_advantages(c.rewards, c.group_ids)
    rows = c.nonempty_rows()
    total = 0.0
    for i in rows:
        L = c.length(i)
        s = torch.exp((logp[i, :L] - c.old_logp[i, :L]).mean())
        total = total - torch.minimum(s * adv[i], torch.clamp(s, 1 - eps_low, 1 + eps_high) * adv[i])
    return total / len(rows)


def gspo_clipped_rows(c: Case, eps_low: float = 3e-4, eps_high: float = 4e-4) -> tuple[int, int]:
    """(#rows whose sequence ratio is clipped, #rows with a gradient) among non-empty rows with Â ≠ 0."""
    adv = grpo_advantages(c.rewards, c.group_ids)
    clipped = free = 0
    for i in c.nonempty_rows():
        if adv[i] == 0:
            continue
        L = c.length(i)
        s = math.exp(float((c.logp[i, :L] - c.old_logp[i, :L]).mean()))
        if (adv[i] > 0 and s > 1 + eps_high) or (adv[i] < 0 and s < 1 - eps_low):
            clipped += 1
        else:
            free += 1
    return clipped, free


def offpolicy_mix_loss(logp, c: Case, shaping_gamma: Optional[float], eps: float = 0.2) -> torch.Tensor:
    """LUFFY / SRFT (UPGE Table 1 offline rows): Â z-scored over on ∪ off; on-policy tokens PPO clip
    with π_old; demonstration tokens −Â·f(π_θ) with π_ref ≡ 1 and f(π) = π (SRFT) or π/(π+γ) (LUFFY
    policy shaping); token-mean over all tokens."""
    adv = broadcast(grpo_advantages(c.rewards, c.group_ids), c.mask)
    on = ppo_clip_loss(logp, c.old_logp, adv, eps, eps)
    p = torch.exp(logp)
    f = p if shaping_gamma is None else p / (p + shaping_gamma)
    off = -adv * f
    demo = torch.tensor(c.is_demo, dtype=torch.bool)[:, None]
    return token_mean(torch.where(demo, off, on), c)


def dapo_loss(logp, c: Case, eps_low: float = 0.2, eps_high: float = 0.28) -> torch.Tensor:
    """DAPO Eq. (8): (1/Σ_i|o_i|) Σ_i Σ_t −min(ρÂ, clip(ρ, 1−ε_low, 1+ε_high)Â), Â group z-score."""
    adv = broadcast(grpo_advantages(c.rewards, c.group_ids), c.mask)
    return token_mean(ppo_clip_loss(logp, c.old_logp, adv, eps_low, eps_high), c)


def drgrpo_loss(logp, c: Case, constant: float, eps: float = 0.2, count_empty_rows: bool = False) -> torch.Tensor:
    """Dr. GRPO: Â = r − mean_G, PPO clip, Σ_i Σ_t / (G · L_max)."""
    adv = broadcast(centered_advantages(c.rewards, c.group_ids), c.mask)
    return seq_mean_token_sum_norm(ppo_clip_loss(logp, c.old_logp, adv, eps, eps), c, constant, count_empty_rows)


def reinforce_pp_loss(logp, c: Case, eps: float = 0.2, gamma: float = 1.0) -> torch.Tensor:
    """REINFORCE++ (verl reinforce_plus_plus): whitened return-to-go, PPO clip, token-mean."""
    adv = whiten_tokens(return_to_go(c.rewards, c.mask, gamma), c.mask)
    return token_mean(ppo_clip_loss(logp, c.old_logp, adv, eps, eps), c)


def opo_loss(logp, c: Case) -> torch.Tensor:
    """OPO, exact on-policy: −(1/Σ|o|) Σ_i Σ_t (r_i − b_G) log π, b_G length-weighted group reward."""
    adv = broadcast(opo_advantages(c.rewards, c.group_ids, [c.length(i) for i in range(c.B)]), c.mask)
    return token_mean(-adv * logp, c)


def gpg_loss(logp, c: Case) -> torch.Tensor:
    """GPG (verl compute_policy_loss_gpg + gpg advantage): −(1/Σ|o|) Σ Â log π."""
    adv = broadcast(gpg_advantages(c.rewards, c.group_ids), c.mask)
    return token_mean(-adv * logp, c)


def clip_cov_candidates(c: Case, eps: float = 0.2, cov_lb: float = 1.0, cov_ub: float = 5.0) -> torch.Tensor:
    """verl compute_policy_loss_clip_cov: bool [B, T] of valid, not PPO-clipped tokens whose centred
    cov = (Â − mean Â)(log π − mean log π) (means over valid tokens) lies in (lb, ub)."""
    adv = broadcast(grpo_advantages(c.rewards, c.group_ids), c.mask)
    valid = c.mask > 0
    n = float(c.mask.sum())
    mean_a = float((adv * c.mask).sum()) / n
    mean_lp = float((c.logp.detach() * c.mask).sum()) / n
    cov = (adv - mean_a) * (c.logp.detach() - mean_lp)
    clipped = ppo_clipped_tokens(c, adv, eps, eps)
    return valid & ~clipped & (cov > cov_lb) & (cov < cov_ub)


def clip_cov_loss(logp, c: Case, dropped: torch.Tensor, eps: float = 0.2) -> torch.Tensor:
    """Clip-Cov: PPO clip loss with the per-token loss of the ``dropped`` tokens zeroed, token-mean."""
    adv = broadcast(grpo_advantages(c.rewards, c.group_ids), c.mask)
    corr = (~dropped).to(D)
    return token_mean(ppo_clip_loss(logp, c.old_logp, adv, eps, eps) * corr, c)


def bnpo_loss(logp, c: Case, eps: float = 0.2) -> torch.Tensor:
    """BNPO advantage with the PPO clip and seq-mean-token-mean (GRPO's other choices)."""
    adv = broadcast(bnpo_advantages(c.rewards, c.group_ids)[0], c.mask)
    return seq_mean_token_mean(ppo_clip_loss(logp, c.old_logp, adv, eps, eps), c)


def gdpo_loss(logp, c: Case, eps: float = 0.2) -> torch.Tensor:
    """GDPO (verl gdpo advantage) with the PPO clip and seq-mean-token-mean."""
    adv = gdpo_token_advantages(c.components, c.group_ids, c.mask)
    return seq_mean_token_mean(ppo_clip_loss(logp, c.old_logp, adv, eps, eps), c)


def _groups(group_ids) -> dict:
    out: dict = {}
    for i, g in enumerate(group_ids):
        out.setdefault(int(g), []).append(i)
    return out


def token_case(lengths: torch.Tensor, T: int, g: torch.Generator, spread: float, rewards, group_ids,
               is_demo, loss_weights) -> Case:
    """Rows of the given lengths: log π_θ ∈ [−3, −0.05] (garbage on padding), π_old = π_θ − u with
    |u| ≤ ``spread``, π_ref within ±0.5 of π_θ (drawn from ``g`` in that order)."""
    B = len(rewards)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(D)
    valid = mask > 0
    lp = -(0.05 + 2.95 * torch.rand(B, T, generator=g, dtype=D))
    logp = torch.where(valid, lp, -3.0 * torch.rand(B, T, generator=g, dtype=D))
    u = (2 * torch.rand(B, T, generator=g, dtype=D) - 1) * spread
    old = torch.where(valid, lp - u, torch.zeros_like(lp))
    refl = torch.where(valid, lp + (torch.rand(B, T, generator=g, dtype=D) - 0.5), torch.zeros_like(lp))
    return Case(logp=logp, old_logp=old, ref_logp=refl, mask=mask, rewards=rewards, group_ids=group_ids,
                is_demo=is_demo, loss_weights=loss_weights)
