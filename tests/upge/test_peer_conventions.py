"""Peer conventions as named options (issue 18), each test naming the peer behaviour it reproduces:
TRL 1.16 GRPOTrainer's use_bias_correction_kl, off_policy_mask_threshold and loss_type="sapo";
verl's pg_loss value for gpg, cispo and gspo."""

from __future__ import annotations

import pytest
import torch

from ablate.upge.estimator import UPGE
from ablate.upge.aggregation import Aggregation
from ablate.upge.regularizers import KLPenalty
from ablate.upge.slots import denominator as Dn
from ablate.upge.slots import likelihood as Lk
from ablate.upge.slots import mask as Mk
from ablate.upge.slots.base import TokenContext
from tests.upge.test_estimator import SHAPES, grad_of, make_batch, random_case, token_mean


def _ctx(logp, old, adv, mask, ref=None):
    return TokenContext.from_batch(make_batch(old, adv, mask, ref_logp=ref), logp)


@pytest.mark.parametrize("shape", SHAPES)
def test_kl_bias_correction_matches_trl_use_bias_correction_kl(shape):
    """TRL: per_token_kl = (exp(ref − logp) − (ref − logp) − 1) * coef_1, coef_1 = exp(logp − old)."""
    logp, old, adv, mask = random_case(shape, 3, spread=0.6)
    ref = old + 0.3 * torch.randn(shape, generator=torch.Generator().manual_seed(4), dtype=old.dtype)
    for corrected in (True, False):
        reg = KLPenalty(coef=0.04, estimator="k3", clamp="none", bias_correction=corrected)
        got = token_mean(reg(_ctx(logp, old, adv, mask, ref)), mask)
        kl = torch.exp(ref - logp) - (ref - logp) - 1
        if corrected:
            kl = kl * torch.exp(logp - old)
        want = token_mean(kl, mask)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(grad_of(got, logp), grad_of(want, logp))
    from ablate.config import compose_config
    from ablate.train.components import build_algorithm
    regs = build_algorithm(compose_config(["regularizers=kl_trl_bias"])).objective.regularizers
    assert regs["kl"].bias_correction is True  # the conf variant composes


def trl_off_policy_mask(adv, logp, old, mask, threshold):
    """TRL GRPOTrainer.get_off_policy_mask (with sampling log-probs = old log-probs)."""
    kl_div = old - logp.detach()
    seq_kl = (kl_div * mask).sum(dim=1, keepdim=True) / mask.sum(dim=1, keepdim=True).clamp(min=1.0)
    return ((adv >= 0) | (seq_kl <= threshold)).to(mask.dtype)


@pytest.mark.parametrize("shape", SHAPES)
def test_off_policy_sequence_mask_matches_trl_off_policy_mask_threshold(shape):
    logp, old, adv, mask = random_case(shape, 5, seq_adv=True, spread=0.02)
    B = shape[0]
    old = old + torch.linspace(0.4, -0.2, B, dtype=old.dtype)[:, None]  # mean KL per row on both sides of δ
    adv = torch.tensor([(-1.0) ** i for i in range(B)], dtype=old.dtype)[:, None].expand(shape).clone()
    th = 0.05
    keep = Mk.OffPolicySequenceMask(threshold=th)(_ctx(logp, old, adv, mask)).keep
    want = trl_off_policy_mask(adv, logp, old, mask, th).bool()
    valid = mask > 0
    assert torch.equal(keep[valid], want[valid]) and bool((~want[valid]).any()) and bool(want[valid].any())


def trl_sapo(logp, old, adv, mask, tau_pos=1.0, tau_neg=1.05):
    """TRL loss_type="sapo": −σ(τ(ρ − 1))·4/τ·Â, token mean (loss_type-independent here)."""
    coef_1 = torch.exp(logp - old)
    temperatures = torch.where(adv > 0, torch.full_like(adv, tau_pos), torch.full_like(adv, tau_neg))
    soft_coef_1 = torch.sigmoid(temperatures * (coef_1 - 1)) * 4 / temperatures
    return token_mean(-soft_coef_1 * adv, mask)


@pytest.mark.parametrize("shape", SHAPES)
def test_sapo_likelihood_matches_trl_sapo_loss_and_gradient(shape):
    logp, old, adv, mask = random_case(shape, 7, spread=0.8)
    est = UPGE(Mk.NoMask(), Dn.Behaviour(), Lk.SoftGate(), Aggregation("token-mean"))
    out = est(make_batch(old, adv, mask), logp)
    want = trl_sapo(logp, old, adv, mask)
    torch.testing.assert_close(out.loss, want)
    torch.testing.assert_close(grad_of(out.loss, logp), grad_of(want, logp))


def _peer(est, logp, old, adv, mask) -> torch.Tensor:
    return est(make_batch(old, adv, mask), logp).diags["pg_loss_peer"].value


@pytest.mark.parametrize("shape", SHAPES)
def test_pg_loss_peer_equals_verl_value_for_cispo_and_gpg(shape):
    """verl compute_policy_loss_cispo / _gpg write −Â·sg(w)·log π: their pg_loss carries log π."""
    logp, old, adv, mask = random_case(shape, 9, spread=0.8)
    cispo = UPGE(Mk.NoMask(), Dn.ClippedRatio(0.2, 0.28), Lk.Identity(), Aggregation("token-mean"))
    w = torch.clamp(torch.exp(logp - old), 0.8, 1.28).detach()
    torch.testing.assert_close(_peer(cispo, logp, old, adv, mask), token_mean(-adv * w * logp, mask).detach())
    gpg = UPGE(Mk.NoMask(), Dn.CurrentPolicy(), Lk.Identity(), Aggregation("token-mean"))
    torch.testing.assert_close(_peer(gpg, logp, old, adv, mask), token_mean(-adv * logp, mask).detach())


@pytest.mark.parametrize("shape", SHAPES)
def test_pg_loss_peer_equals_verl_gspo_min_clip_value(shape):
    """verl compute_policy_loss_gspo: −min(s·Â, clip(s, 1 − ε_l, 1 + ε_h)·Â), seq-mean-token-mean."""
    logp, old, adv, mask = random_case(shape, 11, seq_adv=True, spread=0.002)
    el, eh = 3e-4, 4e-4
    est = UPGE(Mk.SequenceClip(el, eh), Dn.GSPOSequence(), Lk.Identity(), Aggregation("seq-mean-token-mean"))
    n = mask.sum(-1).clamp_min(1.0)
    s = torch.exp(((logp - old) * mask).sum(-1) / n)[:, None].detach()
    per_tok = -torch.minimum(s * adv, s.clamp(1 - el, 1 + eh) * adv)
    rows = mask.sum(-1) > 0
    want = ((per_tok * mask).sum(-1)[rows] / n[rows]).mean()
    assert bool(((s < 1 - el) | (s > 1 + eh)).any())  # some rows clipped
    torch.testing.assert_close(_peer(est, logp, old, adv, mask), want)


def test_sapo_gate_declared_inert_on_policy_gives_the_plain_gradient():
    logp, old, adv, mask = random_case((4, 7), 13)
    old = logp.detach().clone()  # π_θ = π_old
    sapo = UPGE(Mk.NoMask(), Dn.Behaviour(), Lk.SoftGate(), Aggregation("token-mean"))
    plain = UPGE(Mk.NoMask(), Dn.CurrentPolicy(), Lk.Identity(), Aggregation("token-mean"))
    assert Lk.SoftGate().acts().policy_drift
    torch.testing.assert_close(grad_of(sapo(make_batch(old, adv, mask), logp).loss, logp),
                               grad_of(plain(make_batch(old, adv, mask), logp).loss, logp))


def trl_rloo_loss(logp, c, G: int, beta: float = 0.05, eps: float = 0.2):
    """TRL RLOOTrainer (huggingface/trl@13b4eb95 trl/trainer/rloo_trainer.py): KL in the reward
    (Σ_t old − ref), leave-one-out advantages, −min(s·A, clip(s, 1 ± ε)·A) on the sequence ratio
    s = exp(Σ_t log π_θ − Σ_t log π_old), mean over sequences."""
    m = c.mask
    rewards = torch.tensor(c.rewards, dtype=logp.dtype)
    kl = ((c.old_logp - c.ref_logp) * m).sum(-1)
    rewards = rewards - beta * kl
    grouped = rewards.view(-1, G)
    baselines = ((grouped.sum(dim=1, keepdim=True) - grouped) / (G - 1)).view(-1)
    advantages = rewards - baselines
    coef_1 = torch.exp((logp * m).sum(1) - (c.old_logp * m).sum(1))
    coef_2 = torch.clamp(coef_1, 1 - eps, 1 + eps)
    return (-torch.min(coef_1 * advantages, coef_2 * advantages)).mean()


@pytest.mark.parametrize("G", [2, 4])
def test_rloo_sequence_ratio_clip_and_kl_in_reward_match_trl_rloo_trainer(G):
    from tests.upge.test_presets_reference import ablate_grad, make_case, ref_grad
    c = make_case(G, spread=0.15)
    c.mask[1, 0] = 1.0  # TRL averages over every row: no empty response here
    s = torch.exp(((c.logp - c.old_logp) * c.mask).sum(1))
    assert bool(((s > 1.2) | (s < 0.8)).any())  # some sequence ratios reach the clip
    got = ablate_grad(c, "rloo", "advantage=rloo_trl_kl", "denominator=trajectory", "mask=trajectory_clip")
    torch.testing.assert_close(got, ref_grad(trl_rloo_loss, c, G=G))
