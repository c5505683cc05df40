"""Section 2: overhead of the composed UPGE estimator against a hand-fused loss.

For GRPO, DAPO and GSPO the estimator is built exactly as the trainer builds it
(the UPGE estimator of the primary objective term of
``build_algorithm(compose_config(["method=...", "regularizers=none"]))``) and called on
a ``RolloutBatch`` (it returns the loss and ~12 detached diagnostics). The reference is one
hand-written function per method that computes the same loss the way a peer library would
(``-min(ρA, clip(ρ)A)`` then the aggregation), with no diagnostics. Both run forward + backward of
the loss only, on the same tensors; the gradients are checked to agree.

Variants: from log-probs ([B, T] leaf tensors; the loss is all there is) at B=256, T=512 and
B=64, T=2048; and from logits ([B, T, V] leaf, V = 32768) through log_softmax + gather, which
both paths share and which dominates, at B=4, T=512.

Rows: ``estimator <method> <shape>`` = median(composed) / median(fused) (target ≤ 1.05). Details
also hold "loss only" (the composed slots + aggregation without the diagnostics), so the cost of
the diagnostics is visible separately.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bench.common import Section, interleaved, log, median, row

LOG_RATIO_CLAMP = 20.0


# --------------------------------------------------------------------------------------------
# the hand-fused losses (one function each, what a peer library writes)
# --------------------------------------------------------------------------------------------

def fused_grpo(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.2):
    """GRPO: PPO clip, seq-mean-token-mean (TRL loss_type='grpo', verl seq-mean-token-mean)."""
    ratio = torch.exp((logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    tok = -torch.min(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    seq = (tok * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
    return seq.sum() / (mask.sum(-1) > 0).sum().clamp_min(1)


def fused_dapo(logp, old_logp, adv, mask, eps_low=0.2, eps_high=0.28):
    """DAPO: clip-higher, token-mean."""
    ratio = torch.exp((logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    tok = -torch.min(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    return (tok * mask).sum() / mask.sum().clamp_min(1.0)


def fused_gspo(logp, old_logp, adv, mask, eps_low=3e-4, eps_high=4e-4):
    """GSPO (sequence-level ratio s_i = exp(mean_t log ρ), sequence clip; TRL
    importance_sampling_level='sequence'), seq-mean-token-mean."""
    n = mask.sum(-1).clamp_min(1.0)
    log_s = ((logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP) * mask).sum(-1) / n
    s = torch.exp(log_s)[:, None]
    tok = -torch.min(s * adv, s.clamp(1 - eps_low, 1 + eps_high) * adv)
    seq = (tok * mask).sum(-1) / n
    return seq.sum() / (mask.sum(-1) > 0).sum().clamp_min(1)


FUSED = {"grpo": fused_grpo, "dapo": fused_dapo, "gspo": fused_gspo}


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

def make_batch(B: int, T: int, G: int = 8, seed: int = 0, P: int = 8):
    """A RolloutBatch with realistic structure: random lengths in [T/4, T], groups of G, binary
    rewards, group z-scored advantages, and old log-probs a little off the current ones (so some
    tokens clip)."""
    from ablate.upge.batch import RolloutBatch

    G = min(G, B)
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(max(1, T // 4), T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] < lens[:, None]).float()
    logp = -torch.rand(B, T, generator=g) * 3.0
    old = logp + 0.1 * torch.randn(B, T, generator=g)
    rewards = (torch.rand(B, generator=g) < 0.4).float()
    groups = torch.arange(B) // G
    r = rewards.view(-1, G)
    a = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)).reshape(-1)
    adv = a[:, None] * mask
    batch = RolloutBatch(input_ids=torch.zeros(B, P + T, dtype=torch.long),
                         attention_mask=torch.ones(B, P + T, dtype=torch.long), response_mask=mask,
                         old_logp=old * mask, rewards=rewards, group_ids=groups, prompt_len=P,
                         advantages=adv)
    return batch, logp


def estimators(methods) -> dict:
    from ablate.config import compose_config
    from ablate.train.components import build_algorithm
    return {m: build_algorithm(compose_config([f"method={m}", "regularizers=none"])).objective.primary.estimator
            for m in methods}


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------

def _loss_only(est, batch, logp, norm):
    """The composed loss without the estimator's diagnostics (slots + aggregation)."""
    from ablate.upge.slots.base import TokenContext
    return est.surrogate_loss(TokenContext.from_batch(batch, logp), norm)[0]


def bench_case(method: str, est, B: int, T: int, V: int | None, repeats: int, check: bool = True) -> dict:
    from ablate.upge.aggregation import Normalizer

    batch, logp0 = make_batch(B, T)
    norm = Normalizer.of(batch.response_mask)
    fused = FUSED[method]
    if V is None:
        leaf = logp0.clone().requires_grad_(True)

        def logp_of():
            return leaf
    else:
        g = torch.Generator().manual_seed(1)
        leaf = torch.randn(B, T, V, generator=g).requires_grad_(True)
        targets = torch.randint(0, V, (B, T), generator=g)

        def logp_of():
            return F.log_softmax(leaf.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():  # old log-probs near the current ones, as after a rollout
            batch.old_logp = (logp_of() + 0.1 * torch.randn(B, T, generator=g)) * batch.response_mask

    def composed():
        out = est(batch, logp_of(), norm=norm)
        out.loss.backward()
        leaf.grad = None

    def loss_only():
        _loss_only(est, batch, logp_of(), norm).backward()
        leaf.grad = None

    def hand():
        fused(logp_of(), batch.old_logp, batch.advantages, batch.response_mask).backward()
        leaf.grad = None

    grad_diff = None
    if check:
        est(batch, logp_of(), norm=norm).loss.backward()
        g1 = leaf.grad.clone()
        leaf.grad = None
        fused(logp_of(), batch.old_logp, batch.advantages, batch.response_mask).backward()
        g2 = leaf.grad.clone()
        leaf.grad = None
        grad_diff = float((g1 - g2).abs().max() / g2.abs().max().clamp_min(1e-30))
    t = interleaved({"composed": composed, "loss_only": loss_only, "fused": hand}, repeats, warmup=2)
    out = {k: median(v) for k, v in t.items()}
    out["times"] = t
    out["grad_rel_diff"] = grad_diff
    return out


def run(quick: bool = False) -> Section:
    sec = Section("estimator")
    t0 = time.perf_counter()
    methods = ["grpo", "dapo", "gspo"]
    ests = estimators(methods)
    if quick:
        cases = [(32, 128, None, 3)]
    else:
        cases = [(256, 512, None, 21), (64, 2048, None, 21), (4, 512, 32768, 7)]
    for B, T, V, reps in cases:
        shape = f"B={B},T={T}" + (f",V={V // 1024}k logits" if V else "")
        for m in methods:
            log(f"[bench] estimator {m} {shape}")
            r = bench_case(m, ests[m], B, T, V, reps)
            ratio = r["composed"] / r["fused"]
            # issue 21's goals: diagnostics add at most 10 %, the loss alone at most 5 %
            sec.rows.append(row(f"estimator {m} {shape}", ratio, target="<= 1.10",
                                note=f"{r['composed'] * 1e3:.2f} vs {r['fused'] * 1e3:.2f} ms "
                                     f"(loss and diagnostics vs hand-fused loss)"))
            sec.rows.append(row(f"estimator {m} {shape}: loss only", r["loss_only"] / r["fused"],
                                target="<= 1.05", note=f"{r['loss_only'] * 1e3:.2f} ms"))
            sec.details[f"{m} {shape}"] = {
                "composed_ms": r["composed"] * 1e3, "loss_only_ms": r["loss_only"] * 1e3,
                "fused_ms": r["fused"] * 1e3, "ratio": ratio,
                "ratio_loss_only": r["loss_only"] / r["fused"],
                "grad_rel_diff": r["grad_rel_diff"], "repeats": reps}
    sec.seconds = time.perf_counter() - t0
    return sec
