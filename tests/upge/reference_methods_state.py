"""Hand-written float64 references for the presets that need scoring before the advantage, per-row
data, the step context or state across steps (g2rpo, em_pg, etr, d3s, mdpo, r2vpo, dcpo, p3o, and
REINFORCE++ / RLOO with the KL in the reward). Used by test_new_presets_state.py.

Written from each method's formula (paper, authors' code or the catalog's reading, named per
function) with Python loops over groups, rows and tokens. Nothing here imports ablate; the shared
``Case`` container and the plain aggregations come from reference_losses (also ablate-free).
"""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist
from typing import Optional, Sequence

import torch

from tests.upge.reference_losses import (D, Case, _groups, grpo_advantages, ppo_clip_loss,
                                         seq_mean_token_mean, token_mean)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def per_token(c: Case, fn) -> torch.Tensor:
    """[B, T] tensor with fn(i, t) on valid tokens, 0 elsewhere (plain loops)."""
    out = torch.zeros(c.B, c.mask.shape[1], dtype=D)
    for i in range(c.B):
        for t in range(c.length(i)):
            out[i, t] = fn(i, t)
    return out


def broadcast_rows(values: Sequence[float], c: Case) -> torch.Tensor:
    return per_token(c, lambda i, t: values[i])


# ------------------------------------------------------------------------------------------------
# KL folded into the reward (REINFORCE++, RLOO, P3O)
# ------------------------------------------------------------------------------------------------

def kl_k1(c: Case, i: int, t: int, clamp: Optional[float] = None) -> float:
    """k1 estimate of KL(π_old ‖ π_ref) at a sampled token: log π_old − log π_ref (OpenRLHF clamps ±10)."""
    d = float(c.old_logp[i, t] - c.ref_logp[i, t])
    return max(-clamp, min(clamp, d)) if clamp is not None else d


def kl_shaped_rewards(c: Case, beta: float) -> list:
    """TRL RLOOTrainer: R_i = r_i − β Σ_t (log π_old − log π_ref)."""
    return [c.rewards[i] - beta * sum(kl_k1(c, i, t) for t in range(c.length(i))) for i in range(c.B)]


def loo_advantages(R: Sequence[float], group_ids, singleton: str) -> list:
    """R_i − mean of the other members; a singleton keeps R (verl, ``raw``) or gets 0 (TRL, ``zero``)."""
    out = [0.0] * len(R)
    for rows in _groups(group_ids).values():
        for i in rows:
            others = [R[j] for j in rows if j != i]
            out[i] = R[i] - _mean(others) if others else (R[i] if singleton == "raw" else 0.0)
    return out


def rloo_kl_loss(logp, c: Case, beta: float = 0.05) -> torch.Tensor:
    """RLOO (Ahmadian et al. 2024) with KL in the reward: −(1/N) Σ_i Â_i Σ_t log π_θ, on-policy."""
    adv = loo_advantages(kl_shaped_rewards(c, beta), c.group_ids, "raw")
    rows = c.nonempty_rows()
    return sum(-adv[i] * logp[i, :c.length(i)].sum() for i in rows) / len(rows)


def reinforce_pp_kl_advantages(c: Case, beta: float = 0.01, clamp: float = 10.0) -> torch.Tensor:
    """REINFORCE++ (OpenRLHF compute_reward, γ = 1): r_t = −β·kl_t (+ r on the last token),
    G_t = Σ_{s≥t} r_s, then OpenRLHF global whitening over all valid tokens: (G − μ)·rsqrt(max(σ², 1e-8))
    with the biased σ²."""
    G = torch.zeros(c.B, c.mask.shape[1], dtype=D)
    for i in range(c.B):
        L = c.length(i)
        tok = [-beta * kl_k1(c, i, t, clamp) + (c.rewards[i] if t == L - 1 else 0.0) for t in range(L)]
        for t in range(L):
            G[i, t] = sum(tok[t:])
    xs = [float(G[i, t]) for i in range(c.B) for t in range(c.length(i))]
    m = _mean(xs)
    var = sum((x - m) ** 2 for x in xs) / len(xs)
    return per_token(c, lambda i, t: (float(G[i, t]) - m) / math.sqrt(max(var, 1e-8)))


def reinforce_pp_kl_loss(logp, c: Case, beta: float = 0.01, eps: float = 0.2) -> torch.Tensor:
    adv = reinforce_pp_kl_advantages(c, beta)
    return token_mean(ppo_clip_loss(logp, c.old_logp, adv, eps, eps), c)


def p3o_loss(logp, c: Case, beta: float = 0.05, eps: float = 0.2) -> torch.Tensor:
    """P3O separate clip: Â_i = R_i − R_j (G = 2; leave-one-out for larger groups, singleton 0) on
    KL-shaped rewards; s_i = Π_t π_θ/π_old; −(1/N) Σ_i min(s_i Â_i, clip(s_i, 1±ε) Â_i)."""
    adv = loo_advantages(kl_shaped_rewards(c, beta), c.group_ids, "zero")
    rows = c.nonempty_rows()
    total = 0.0
    for i in rows:
        L = c.length(i)
        s = torch.exp((logp[i, :L] - c.old_logp[i, :L]).sum())
        total = total - torch.minimum(s * adv[i], torch.clamp(s, 1 - eps, 1 + eps) * adv[i])
    return total / len(rows)


# ------------------------------------------------------------------------------------------------
# G²RPO, EM-PG, ETR
# ------------------------------------------------------------------------------------------------

def gaussian_rank_advantages(rewards, group_ids) -> list:
    """G²RPO reading: Â_i = Φ⁻¹(F̂(r_i)), F̂ the mid-rank CDF (#below + ½·#equal)/n of the group."""
    nd = NormalDist()
    out = [0.0] * len(rewards)
    for rows in _groups(group_ids).values():
        n = len(rows)
        for i in rows:
            below = sum(1 for j in rows if rewards[j] < rewards[i])
            equal = sum(1 for j in rows if rewards[j] == rewards[i])
            out[i] = nd.inv_cdf((below + 0.5 * equal) / n)
    return out


def g2rpo_loss(logp, c: Case, eps: float = 0.2) -> torch.Tensor:
    adv = broadcast_rows(gaussian_rank_advantages(c.rewards, c.group_ids), c)
    return seq_mean_token_mean(ppo_clip_loss(logp, c.old_logp, adv, eps, eps), c)


def em_weights(rewards, group_ids, temperature: Optional[float] = None) -> list:
    """EM posterior weights per group: w_i / mean_group(w), w = r or exp(r/τ); 0 if the mean is 0."""
    out = [0.0] * len(rewards)
    for rows in _groups(group_ids).values():
        w = {i: (rewards[i] if temperature is None else math.exp(rewards[i] / temperature)) for i in rows}
        m = _mean(list(w.values()))
        for i in rows:
            out[i] = w[i] / m if m > 0 else 0.0
    return out


def em_pg_loss(logp, c: Case, temperature: Optional[float] = None) -> torch.Tensor:
    """M-step: −(1/Σ|o|) Σ_i w_i Σ_t log π_θ (reward-weighted NLL, no ratio, no clip)."""
    w = broadcast_rows(em_weights(c.rewards, c.group_ids, temperature), c)
    return token_mean(-w * logp, c)


def group_population_var(rewards, group_ids) -> list:
    out = [0.0] * len(rewards)
    for rows in _groups(group_ids).values():
        rs = [rewards[i] for i in rows]
        m = _mean(rs)
        v = sum((x - m) ** 2 for x in rs) / len(rs)
        for i in rows:
            out[i] = v
    return out


def etr_loss(logp, c: Case, eps: float = 0.2, alpha: float = 0.5, beta: float = 1.0, var_ref: float = 0.25,
             max_scale: float = 3.0, max_eps_low: float = 0.95) -> torch.Tensor:
    """ETR reading: per-token PPO bounds ε·s, s = min(max_scale, (1 + α|Â|)(1 + β Var_g/var_ref))."""
    a = grpo_advantages(c.rewards, c.group_ids)
    var = group_population_var(c.rewards, c.group_ids)
    L = torch.zeros(c.B, c.mask.shape[1], dtype=D)
    for i in range(c.B):
        for t in range(c.length(i)):
            s = min(max_scale, (1 + alpha * abs(a[i])) * (1 + beta * var[i] / var_ref))
            lo, hi = min(eps * s, max_eps_low), eps * s
            ratio = torch.exp(logp[i, t] - c.old_logp[i, t])
            L[i, t] = -torch.minimum(ratio * a[i], torch.clamp(ratio, 1 - lo, 1 + hi) * a[i])
    return seq_mean_token_mean(L, c)


# ------------------------------------------------------------------------------------------------
# D³S
# ------------------------------------------------------------------------------------------------

def pop_var(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / len(xs)


def brute_force_max_variance(values: Sequence[float], k: int) -> float:
    """Largest population variance over every size-k subset (exhaustive)."""
    return max(pop_var([values[i] for i in s]) for s in itertools.combinations(range(len(values)), k))


def quantile_linear(xs: Sequence[float], q: float) -> float:
    """numpy/torch 'linear' quantile: interpolate between order statistics at q·(n−1)."""
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def d3s_loss(logp, c: Case, adv_rows: Sequence[float], entropy: torch.Tensor, progress: float,
             keep_init: float = 0.2, keep_final: float = 1.0, eps: float = 0.2) -> torch.Tensor:
    """GRPO loss on the kept rows, tokens kept iff |Â|·H ≥ the (1 − K) quantile of the batch's
    valid-token scores, K = keep_init + (keep_final − keep_init)·progress."""
    K = keep_init + (keep_final - keep_init) * progress
    scores = [abs(adv_rows[i]) * float(entropy[i, t]) for i in range(c.B) for t in range(c.length(i))]
    thr = quantile_linear(scores, 1 - K)
    adv = broadcast_rows(adv_rows, c)
    keep = per_token(c, lambda i, t: 1.0 if abs(adv_rows[i]) * float(entropy[i, t]) >= thr else 0.0)
    return seq_mean_token_mean(keep * ppo_clip_loss(logp, c.old_logp, adv, eps, eps), c)


# ------------------------------------------------------------------------------------------------
# MDPO, R²VPO
# ------------------------------------------------------------------------------------------------

def mdpo_loss(logp, c: Case, progress: float, coef: float = 1.0) -> torch.Tensor:
    """MDPO: −E[ρÂ] + (1/t_k)·KL(π_θ‖π_old), t_k = 1 − progress, KL from π_old samples as
    ρ log ρ − ρ + 1 (token means)."""
    a = broadcast_rows(grpo_advantages(c.rewards, c.group_ids), c)
    ratio = torch.exp(logp - c.old_logp)
    kl = ratio * torch.log(ratio) - ratio + 1.0
    return token_mean(-ratio * a, c) + coef / (1.0 - progress) * token_mean(kl, c)


def r2vpo_loss(logp, c: Case, lam: float, delta: float) -> torch.Tensor:
    """R²VPO: −E[ρÂ] + λ(E[(ρ − 1)²] − δ) (token means)."""
    a = broadcast_rows(grpo_advantages(c.rewards, c.group_ids), c)
    ratio = torch.exp(logp - c.old_logp)
    return token_mean(-ratio * a, c) + lam * (token_mean((ratio - 1.0) ** 2, c) - delta)


def r2vpo_dual_step(lam: float, var_hat: float, lr: float, delta: float) -> float:
    return max(0.0, lam + lr * (var_hat - delta))


# ------------------------------------------------------------------------------------------------
# DCPO
# ------------------------------------------------------------------------------------------------

def dcpo_schedule(entropy: float, acc: float, h0: float = 0.5, alpha_max: float = 0.1) -> tuple:
    """597358816/DCPO fit(): T = 1.2 if H ≤ H0 else 0.8; α = min(|H0 − H|, 0.1)/acc; α/(1+α)."""
    T = 1.2 if entropy <= h0 else 0.8
    if acc == 0:
        return T, 0.0
    a = min(abs(h0 - entropy), alpha_max) / acc
    return T, a / (a + 1)


def dcpo_loss(logp, c: Case, old_logp_t: dict, entropy: float, eps: float = 0.2,
              dual: float = 3.0) -> torch.Tensor:
    correct = [1.0 if r > 0.05 else 0.0 for r in c.rewards]
    T, alpha = dcpo_schedule(entropy, sum(correct) / c.B)
    az = grpo_advantages(c.rewards, c.group_ids)
    lt = old_logp_t[T]
    adv = per_token(c, lambda i, t: (1 - alpha) * az[i]
                    + alpha * correct[i] * math.exp(float(lt[i, t] - c.old_logp[i, t])))
    ratio = torch.exp(logp - c.old_logp)
    pg1, pg2 = -adv * ratio, -adv * torch.clamp(ratio, 1 - eps, 1 + eps)
    clip1 = torch.maximum(pg1, pg2)
    clip2 = torch.minimum(-adv * dual, clip1)  # verl/EasyR1 dual clip for A < 0
    return token_mean(torch.where(adv < 0, clip2, clip1), c)
