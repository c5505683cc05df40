"""Hand-written float64 references of the objective-term presets (used by test_terms.py).

Written from the papers / authors' code as the preset notes cite them, with plain Python loops over
prompts, pairs and rows; nothing here imports ablate (only tests/upge/reference_losses, which does not
either). Conventions the references share with the presets (stated, so a reader can check them):

* a row takes part in a group-coupled loss when it has at least one valid token (zero-length
  responses carry no log-probability, so they are left out of pairs, groups and V̂*);
* "mean over prompts" divides by the number of prompts with at least one such row in the batch
  (a prompt with a single response counts, with a zero pairwise loss);
* sequence log-ratios are sums over the valid tokens only (padding holds garbage on purpose).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Optional

import torch

from tests.upge.reference_losses import Case, centered_advantages, grpo_advantages


def _groups(c: Case, rows=None) -> dict:
    """{group id: [rows with ≥ 1 valid token, in row order]} (optionally only ``rows``)."""
    keep = set(range(c.B) if rows is None else rows)
    out: dict = {}
    for i, g in enumerate(c.group_ids):
        if i in keep and c.length(i) > 0:
            out.setdefault(int(g), []).append(i)
    return out


def seq_sum(x: torch.Tensor, c: Case, i: int) -> torch.Tensor:
    return x[i, : c.length(i)].sum()


def seq_log_ratio(logp, base, c: Case, i: int) -> torch.Tensor:
    return seq_sum(logp - base, c, i)


# ------------------------------------------------------------------------------------------------
# regression family
# ------------------------------------------------------------------------------------------------

def rebel_loss(logp, c: Case, eta: float = 1.0, kl_coef: float = 0.05, convention: str = "code",
               pairs: str = "adjacent") -> torch.Tensor:
    """REBEL (ZhaolinGao/REBEL rebel.py): per prompt, pairs (y, y′); reg = (s_y − s_y′) − η(r_y − r_y′)
    (code) or (1/η)(s_y − s_y′) − (r_y − r_y′) (paper); mean of reg² over the prompt's pairs, then over
    prompts. s = Σ_t log π_θ − log π_old; r = reward − kl_coef·Σ_t(log π_old − log π_ref)."""
    groups = _groups(c)
    total = 0.0
    for rows in groups.values():
        r = {i: c.rewards[i] - kl_coef * float(seq_sum(c.old_logp - c.ref_logp, c, i)) for i in rows}
        s = {i: seq_log_ratio(logp, c.old_logp, c, i) for i in rows}
        if pairs == "adjacent":
            prs = [(rows[k], rows[k + 1]) for k in range(0, len(rows) - 1, 2)]
        else:
            prs = [(rows[a], rows[b]) for a in range(len(rows)) for b in range(a + 1, len(rows))]
        if not prs:
            continue
        acc = 0.0
        for i, j in prs:
            if convention == "code":
                reg = (s[i] - s[j]) - eta * (r[i] - r[j])
            else:
                reg = (s[i] - s[j]) / eta - (r[i] - r[j])
            acc = acc + reg ** 2
        total = total + acc / len(prs)
    return total / len(groups)


def copg_loss(logp, c: Case, beta: float = 0.1) -> torch.Tensor:
    """CoPG: per prompt 1/(k−1)·Σ_{i>j} (R_i − R_j − β(s_i − s_j))², s = Σ_t log π_θ − log π_ref;
    mean over prompts."""
    groups = _groups(c)
    total = 0.0
    for rows in groups.values():
        k = len(rows)
        if k < 2:
            continue
        s = {i: seq_log_ratio(logp, c.ref_logp, c, i) for i in rows}
        acc = 0.0
        for a in range(k):
            for b in range(a):
                i, j = rows[a], rows[b]
                acc = acc + (c.rewards[i] - c.rewards[j] - beta * (s[i] - s[j])) ** 2
        total = total + acc / (k - 1)
    return total / len(groups)


def oapl_optimal_advantages(c: Case, beta1: float) -> dict:
    out = {}
    for rows in _groups(c).values():
        v = beta1 * math.log(sum(math.exp(c.rewards[i] / beta1) for i in rows) / len(rows))
        for i in rows:
            out[i] = c.rewards[i] - v
    return out


def oapl_loss(logp, c: Case, beta1: float = 1.0, beta2: float = 1e-3) -> torch.Tensor:
    """OAPL Eq. 2–3 (NeMo-RL doc), on-policy: mean_i (β2·(log π(y_i) − log π_old(y_i)) − Â*_i)²."""
    adv = oapl_optimal_advantages(c, beta1)
    total = 0.0
    for i, a in adv.items():
        total = total + (beta2 * seq_log_ratio(logp, c.old_logp, c, i) - a) ** 2
    return total / len(adv)


# ------------------------------------------------------------------------------------------------
# group classification
# ------------------------------------------------------------------------------------------------

def real_loss(logp, c: Case, tau: float = 0.5, threshold: float = 0.5) -> torch.Tensor:
    """REAL: per prompt log(1 + Σ_pos e^{−s̄/τ}) + log(1 + Σ_neg e^{s̄/τ}), s̄ = mean_t log π_θ/π_old;
    mean over prompts (written naively: the test batches keep |s̄/τ| small)."""
    groups = _groups(c)
    total = 0.0
    for rows in groups.values():
        pos, neg = 0.0, 0.0
        for i in rows:
            sbar = seq_log_ratio(logp, c.old_logp, c, i) / c.length(i)
            if c.rewards[i] > threshold:
                pos = pos + torch.exp(-sbar / tau)
            else:
                neg = neg + torch.exp(sbar / tau)
        total = total + torch.log(1 + pos * torch.ones((), dtype=logp.dtype)) + \
            torch.log(1 + neg * torch.ones((), dtype=logp.dtype))
    return total / len(groups)


# ------------------------------------------------------------------------------------------------
# multi-term objectives
# ------------------------------------------------------------------------------------------------

def ppo_token_loss(logp, old_logp, adv, eps: float = 0.2, dual: Optional[float] = None) -> torch.Tensor:
    """verl compute_policy_loss per token: max(−Aρ, −A·clip(ρ)), and for A < 0 min(that, −A·c)."""
    ratio = torch.exp(logp - old_logp)
    l1 = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - eps, 1 + eps))
    if dual is None:
        return l1
    return torch.where(adv < 0, torch.minimum(l1, -adv * dual), l1)


def chord_loss(logp, c: Case, mu: float = 0.1, eps: float = 0.2) -> torch.Tensor:
    """CHORD (Trinity-RFT mix_chord defaults): (1−μ)·token-mean PPO-clip over rollout tokens with the
    GRPO Â of the rollouts only + μ·token-mean over expert tokens of −sg(p(1−p))·log p."""
    on = [i for i in range(c.B) if not c.is_demo[i]]
    adv = grpo_advantages([c.rewards[i] for i in on], [c.group_ids[i] for i in on])
    a = {i: adv[k] for k, i in enumerate(on)}
    rl, n_rl = 0.0, 0
    sft, n_sft = 0.0, 0
    for i in range(c.B):
        L = c.length(i)
        if L == 0:
            continue
        if c.is_demo[i]:
            p = torch.exp(logp[i, :L].detach())
            sft = sft + (-(p * (1 - p)) * logp[i, :L]).sum()
            n_sft += L
        else:
            A = torch.full((L,), a[i], dtype=logp.dtype)
            rl = rl + ppo_token_loss(logp[i, :L], c.old_logp[i, :L], A, eps).sum()
            n_rl += L
    return (1 - mu) * rl / max(n_rl, 1) + mu * sft / max(n_sft, 1)


def hpt_loss(logp, c: Case, constant: float, entropy: torch.Tensor, entropy_coef: float = 0.001) -> torch.Tensor:
    """HPT official code (mix_actor.py, offline_loss_type=sft): L_RL + L_SFT − c_H·mean token entropy.
    L_RL = Σ_{rollout tokens} −(R − mean_G)·ρ / L_max (no clip, loss_remove_token_mean); L_SFT =
    token-mean over demo tokens of −sft_coef·log π (the gate's sft_coef as each demo row's weight);
    entropy: mean over every valid token of the batch."""
    adv = centered_advantages(c.rewards, c.group_ids)
    rl, sft, n_sft, ent, n_all = 0.0, 0.0, 0, 0.0, 0
    for i in range(c.B):
        L = c.length(i)
        if L == 0:
            continue
        ent = ent + entropy[i, :L].sum()
        n_all += L
        if c.is_demo[i]:
            sft = sft + (-c.loss_weights[i] * logp[i, :L]).sum()
            n_sft += L
        else:
            rl = rl + (-adv[i] * torch.exp(logp[i, :L] - c.old_logp[i, :L])).sum()
    return rl / constant + sft / max(n_sft, 1) - entropy_coef * ent / n_all


def answer_entropy_bits(answers) -> float:
    counts = Counter(answers)
    n = len(answers)
    return -sum((k / n) * math.log2(k / n) for k in counts.values())


def copo_weights(c: Case, answers, k: float = 20.0, b: float = 0.5, eps: float = 1e-6):
    """(Â_local, Â_global, w) per row as copo-code computes them (reward_coef_flg off)."""
    groups: dict = {}
    for i, g in enumerate(c.group_ids):
        groups.setdefault(int(g), []).append(i)
    local = grpo_advantages(c.rewards, c.group_ids, eps=eps)
    score = {g: sum(c.rewards[i] for i in rows) / len(rows) for g, rows in groups.items()}
    vals = list(score.values())
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
    glob = [(score[int(g)] - m) / (sd + eps) for g in c.group_ids]
    H = {g: answer_entropy_bits([answers[i] for i in rows]) for g, rows in groups.items()}
    w = [(1.0 / (1.0 + math.exp(-k * (H[int(g)] - b)))) * (1.0 if local[i] != 0 else 0.0)
         for i, g in enumerate(c.group_ids)]
    return local, glob, w


def copo_loss(logp, c: Case, answers, eps: float = 0.2, dual: float = 3.0) -> torch.Tensor:
    """COPO (copo-code, soft-with-forced): per token (1 − w)·PPO(Â_global) + w·PPO(Â_local), verl
    dual-clip PPO, seq-mean-token-mean over non-empty rows."""
    local, glob, w = copo_weights(c, answers)
    total, n = 0.0, 0
    for i in range(c.B):
        L = c.length(i)
        if L == 0:
            continue
        lp, old = logp[i, :L], c.old_logp[i, :L]
        al = torch.full((L,), local[i], dtype=logp.dtype)
        ag = torch.full((L,), glob[i], dtype=logp.dtype)
        tok = (1 - w[i]) * ppo_token_loss(lp, old, ag, eps, dual) + w[i] * ppo_token_loss(lp, old, al, eps, dual)
        total = total + tok.mean()
        n += 1
    return total / n


def srft_loss(logp, c: Case, entropy: torch.Tensor) -> torch.Tensor:
    """SRFT as the HPT authors re-implemented it (srft_type "paper"), each part a token-mean over its
    own rows: rollouts −c_i·log π (c_i = 0.1·exp(H̄_i) if correct else −1); demos −Â_i·π_θ (Â GRPO
    z-score over on ∪ off) and 0.5·exp(−H̄_i)·NLL; H̄_i = mean token entropy of row i (detached)."""
    adv = grpo_advantages(c.rewards, c.group_ids)
    on, n_on, off, sft, n_demo = 0.0, 0, 0.0, 0.0, 0
    for i in range(c.B):
        L = c.length(i)
        if L == 0:
            continue
        h = float(entropy[i, :L].mean())
        if c.is_demo[i]:
            off = off + (-adv[i] * torch.exp(logp[i, :L])).sum()
            sft = sft + (-0.5 * math.exp(-h) * logp[i, :L]).sum()
            n_demo += L
        else:
            coef = 0.1 * math.exp(h) if c.rewards[i] > 0.5 else -1.0
            on = on + (-coef * logp[i, :L]).sum()
            n_on += L
    return on / max(n_on, 1) + off / max(n_demo, 1) + sft / max(n_demo, 1)
