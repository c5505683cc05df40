"""Hand-written float64 references for DPPO, MinPRO, Reinforce-Rej, MiniRL, MHPO, BAPO, RiskPO, ADORA
and the verl-faithful mask variants (used by test_new_presets_slots.py).

Written from the papers' formulas or the authors' released code (named per function), with plain
Python loops over groups, bundles and rows. Nothing here imports ablate; the shared helpers
(``Case``, group z-scores, explicit aggregations, verl's k3 KL) come from reference_losses.py, which
does not import ablate either.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from tests.upge.reference_losses import (D, Case, broadcast, centered_advantages, grpo_advantages, k3_kl,
                                         seq_mean_token_mean, seq_mean_token_sum, seq_mean_token_sum_norm,
                                         token_mean, _groups)


def _ratio(logp, old_logp) -> torch.Tensor:
    return torch.exp(torch.clamp(logp - old_logp, -20.0, 20.0))


def _groups_in_order(group_ids, rewards=None) -> list:
    """[[rows of group]] in order of first appearance (Python dicts keep insertion order)."""
    return [rows for rows in _groups(group_ids).values()]


# ------------------------------------------------------------------------------------------------
# verl vanilla PPO loss (verl core_algos.compute_policy_loss_vanilla): clip + dual clip c
# ------------------------------------------------------------------------------------------------

def verl_vanilla_tokens(logp, old_logp, adv, lo: float, hi: float, c: Optional[float] = 3.0,
                        ratio_bounds: bool = False) -> torch.Tensor:
    """Per-token verl vanilla loss. ``lo``/``hi`` are ε's (bounds 1−lo, 1+hi) or, with
    ``ratio_bounds``, the ratio bounds themselves (BAPO). L1 = −Aρ, L2 = −A·clip(ρ), Lc = max(L1, L2);
    for A < 0: min(Lc, −A·c)."""
    ratio = _ratio(logp, old_logp)
    low, high = (lo, hi) if ratio_bounds else (1.0 - lo, 1.0 + hi)
    l1 = -adv * ratio
    l2 = -adv * torch.clamp(ratio, low, high)
    lc = torch.maximum(l1, l2)
    if c is None:
        return lc
    return torch.where(adv < 0, torch.minimum(-adv * c, lc), lc)


# ------------------------------------------------------------------------------------------------
# DPPO (verl compute_policy_loss_dppo_tv / _kl; examples/dppo_trainer)
# ------------------------------------------------------------------------------------------------

def dppo_valid(c: Case, adv: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    p, q = torch.exp(c.logp.detach()), torch.exp(c.old_logp)
    if kind == "tv":
        pos, neg = (p - q) <= delta, (p - q) >= -delta
    else:
        b = q * (c.old_logp - c.logp.detach()) + (1 - q) * torch.log((1 - q + 1e-8) / (1 - p + 1e-8))
        pos, neg = (b <= delta) | (p <= q), (b <= delta) | (p >= q)
    return torch.where(adv > 0, pos, neg)


def dppo_loss(logp, c: Case, kind: str, delta: float, cap: float, constant: float) -> torch.Tensor:
    """−Â·sg(min(ρ, C))·log π·valid, Â = r − mean_G, Σ_tokens / (G · L_max)."""
    adv = broadcast(centered_advantages(c.rewards, c.group_ids), c.mask)
    valid = dppo_valid(c, adv, kind, delta).to(D)
    w = torch.clamp(_ratio(logp, c.old_logp), max=cap).detach()
    return seq_mean_token_sum_norm(-adv * w * logp * valid, c, constant)


# ------------------------------------------------------------------------------------------------
# MinPRO (abstract reading): weight sg(min_{j≤t} ρ_j) inside the PPO clip mask
# ------------------------------------------------------------------------------------------------

def minpro_loss(logp, c: Case, eps: float = 0.2) -> torch.Tensor:
    adv = broadcast(grpo_advantages(c.rewards, c.group_ids), c.mask)
    ratio = _ratio(logp.detach(), c.old_logp)
    w = torch.ones_like(ratio)
    for i in range(c.B):
        m = math.inf
        for t in range(c.length(i)):
            m = min(m, float(ratio[i, t]))
            w[i, t] = m
    clipped = ((adv > 0) & (ratio > 1 + eps)) | ((adv < 0) & (ratio < 1 - eps))
    keep = (~clipped).to(D)
    return seq_mean_token_mean(-keep * w * adv * logp, c)


# ------------------------------------------------------------------------------------------------
# Reinforce-Rej (vatsal-kr/Minimal-RL: plusplus loss, k3 KL 0.001, entropy 0.001; ±1 reward reading)
# ------------------------------------------------------------------------------------------------

def reinforce_rej_advantages(rewards, group_ids) -> list:
    """Â = ±1 (r > 0.5), 0 where a group of ≥ 2 responses has one reward value (std = 0)."""
    out = [1.0 if r > 0.5 else -1.0 for r in rewards]
    for rows in _groups(group_ids).values():
        if len(rows) > 1 and len({rewards[i] for i in rows}) == 1:
            for i in rows:
                out[i] = 0.0
    return out


def reinforce_rej_loss(logp, c: Case, entropy_fn, kl_coef: float = 0.001, ent_coef: float = 0.001) -> torch.Tensor:
    """verl plusplus (clip 0.2, dual 3) with the Reinforce-Rej advantage, token-mean over every row,
    + kl_coef·k3 KL − ent_coef·H (both token-mean)."""
    adv = broadcast(reinforce_rej_advantages(c.rewards, c.group_ids), c.mask)
    pg = token_mean(verl_vanilla_tokens(logp, c.old_logp, adv, 0.2, 0.2, 3.0), c)
    return pg + kl_coef * token_mean(k3_kl(logp, c.ref_logp), c) - ent_coef * token_mean(entropy_fn(logp), c)


# ------------------------------------------------------------------------------------------------
# MiniRL (abstract/digest reading): z-score, PPO clip, 1/G Σ_i Σ_t
# ------------------------------------------------------------------------------------------------

def minirl_loss(logp, c: Case, eps: float = 0.2) -> torch.Tensor:
    adv = broadcast(grpo_advantages(c.rewards, c.group_ids), c.mask)
    return seq_mean_token_sum(verl_vanilla_tokens(logp, c.old_logp, adv, eps, eps, None), c)


# ------------------------------------------------------------------------------------------------
# MHPO (paper formula as quoted): −(1/K)Σ_i (1/T_i)Σ_t exp(ψ − sg ζ)·Â
# ------------------------------------------------------------------------------------------------

def mhpo_loss(logp, c: Case, cc: float = 1.5, k_pos: float = 1.5, lam_pos: float = 1.0,
              k_neg: float = 2.0, lam_neg: float = 0.8) -> torch.Tensor:
    adv = broadcast(grpo_advantages(c.rewards, c.group_ids), c.mask)
    psi = cc * torch.tanh((logp - c.old_logp) / cc)
    sp = lambda x: torch.log1p(torch.exp(x))  # noqa: E731  softplus
    p0 = psi.detach()
    zeta = (sp(p0) / lam_pos) ** k_pos + (sp(-p0) / lam_neg) ** k_neg
    return seq_mean_token_mean(-torch.exp(psi - zeta) * adv, c)


# ------------------------------------------------------------------------------------------------
# BAPO (WooooDyy/BAPO recipe/bapo/policy_loss.py::compute_policy_loss_bapo)
# ------------------------------------------------------------------------------------------------

def bapo_bounds(c: Case, adv: torch.Tensor, low=0.8, low_max=0.95, low_step=0.05, high=1.2, high_max=2.0,
                high_step=0.1, target=0.5, eps=1e-8) -> tuple:
    ratio = _ratio(c.logp.detach(), c.old_logp)

    def pos_neg(lo, hi):
        pos = neg = 0.0
        for i in range(c.B):
            for t in range(c.length(i)):
                a, r = float(adv[i, t]), float(ratio[i, t])
                e = (min(r, hi) if a >= 0 else max(r, lo)) * a
                pos += max(e, 0.0)
                neg += max(-e, 0.0)
        return math.inf if neg <= 0 else pos / (neg + eps)

    v = pos_neg(low, high)
    while v < target and low < low_max and low_step > 0:
        low = min(low + low_step, low_max)
        v = pos_neg(low, high)
        if v >= target:
            break
    while v < target and high < high_max and high_step > 0:
        high = min(high + high_step, high_max)
        v = pos_neg(low, high)
        if v >= target:
            break
    return low, high


def bapo_loss(logp, c: Case, target: float = 0.5) -> torch.Tensor:
    adv = broadcast(grpo_advantages(c.rewards, c.group_ids), c.mask)
    lo, hi = bapo_bounds(c, adv, target=target)
    return token_mean(verl_vanilla_tokens(logp, c.old_logp, adv, lo, hi, 3.0, ratio_bounds=True), c)


# ------------------------------------------------------------------------------------------------
# RiskPO (RTkenny/RiskPO core_algos.compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking)
# ------------------------------------------------------------------------------------------------

def _quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def riskpo_advantages(rewards, group_ids, bundle_size=5, alpha=0.2, beta=0.8, w=1.5, eps=1e-6) -> list:
    """Mixed-VaR per paper (j-th response of each prompt of a bundle), sum-mean credit."""
    out = [0.0] * len(rewards)
    groups = _groups_in_order(group_ids)
    for b in range(0, len(groups), bundle_size):
        bundle = groups[b:b + bundle_size]
        n = min(len(g) for g in bundle)
        papers = [[g[j] for g in bundle] for j in range(n)]
        z = [sum(rewards[i] for i in p) for p in papers]
        if n == 1:
            qd = qu = z[0]
            std = 1.0
        else:
            qd, qu = _quantile(z, alpha), _quantile(z, beta)
            m = sum(z) / n
            std = math.sqrt(sum((x - m) ** 2 for x in z) / (n - 1))
        mean_of = {}
        for g in bundle:
            mg = sum(rewards[i] for i in g) / len(g)
            for i in g:
                mean_of[i] = mg
        for p, zj in zip(papers, z):
            rvar = (max(zj - qd, 0.0) - max(zj - qu, 0.0)) / (beta - alpha + eps)
            cvar = -max(qd - zj, 0.0) / (alpha + eps)
            a = (w * cvar + rvar) / (w + 1) / (std + eps)
            d = [rewards[i] - mean_of[i] for i in p]
            tot = sum(d)
            for i, di in zip(p, d):
                out[i] = a * di / tot if abs(tot) > 1e-6 else a / len(p)
    return out


def riskpo_loss(logp, c: Case, bundle_size: int = 5) -> torch.Tensor:
    adv = broadcast(riskpo_advantages(c.rewards, c.group_ids, bundle_size), c.mask)
    return token_mean(verl_vanilla_tokens(logp, c.old_logp, adv, 0.2, 0.2, 3.0), c)


# ------------------------------------------------------------------------------------------------
# ADORA (ShadeCloak/ADORA core_algos.compute_grpo_outcome_advantage_ADORA, 2025)
# ------------------------------------------------------------------------------------------------

def adora_advantages(rewards, group_ids, lengths, lam=0.1, thr=0.5, max_len=None, eps=1e-6) -> tuple:
    """(Â per response, [group has the length advantage] in group order)."""
    out = list(rewards)
    flags = []
    for rows in _groups_in_order(group_ids):
        rs = [rewards[i] for i in rows]
        if len(rows) > 1:
            m = sum(rs) / len(rs)
            sd = math.sqrt(sum((x - m) ** 2 for x in rs) / (len(rs) - 1))
            for i in rows:
                out[i] = (rewards[i] - m) / (sd + eps)
        pos = [lengths[i] for i in rows if rewards[i] > thr]
        neg = [lengths[i] for i in rows if rewards[i] <= thr and (max_len is None or lengths[i] < max_len)]
        max_pos = max(pos) if pos else -math.inf
        mean_neg = sum(neg) / len(neg) if neg else -math.inf
        flags.append(max_pos > mean_neg)
        if not max_pos > mean_neg:
            for i in rows:
                out[i] *= lam
    return out, flags


def adora_loss(logp, c: Case, kl_coef: float = 0.001) -> torch.Tensor:
    lengths = [c.length(i) for i in range(c.B)]
    adv = broadcast(adora_advantages(c.rewards, c.group_ids, lengths)[0], c.mask)
    pg = token_mean(verl_vanilla_tokens(logp, c.old_logp, adv, 0.2, 0.2, None), c)
    return pg + kl_coef * token_mean(k3_kl(logp, c.ref_logp), c)


# ------------------------------------------------------------------------------------------------
# verl GSPO (compute_policy_loss_gspo): clamp(log s, max=10) caps the value and zeroes the gradient
# ------------------------------------------------------------------------------------------------

def gspo_verl_loss(logp, c: Case, eps_low=3e-4, eps_high=4e-4, cap: Optional[float] = 10.0,
                   zero_grad: bool = True) -> torch.Tensor:
    """Per row log s = mean_t (logp − old); token ratio s_t = exp(sg(log s) + logp_t − sg(logp_t)),
    with verl's clamp(·, max=cap) (``zero_grad``) or a weight-only cap exp(min(sg log s, cap) + ...);
    L = max(−A s, −A clip(s)), seq-mean-token-mean."""
    adv = grpo_advantages(c.rewards, c.group_ids)
    rows = c.nonempty_rows()
    total = 0.0
    for i in rows:
        L = c.length(i)
        log_s = (logp[i, :L] - c.old_logp[i, :L]).mean().detach()
        x = logp[i, :L] - logp[i, :L].detach()
        if cap is None:
            s = torch.exp(log_s + x)
        elif zero_grad:
            s = torch.exp(torch.clamp(log_s + x, max=cap))
        else:
            s = torch.exp(torch.clamp(log_s, max=cap) + x)
        li = torch.maximum(-adv[i] * s, -adv[i] * torch.clamp(s, 1 - eps_low, 1 + eps_high))
        total = total + li.mean()
    return total / len(rows)
