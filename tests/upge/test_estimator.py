"""UPGE estimator: autograd proofs that slot choices reproduce the peers' objectives, metrics, edge cases.

Each proof builds a RolloutBatch by hand, computes the peer's loss directly with autograd (the
formula as verl/TRL write it) and compares gradients with UPGE(mask, denominator, likelihood, agg).
"""

import math

import pytest
import torch

from ablate import registry
from ablate.upge.aggregation import Aggregation
from ablate.upge.batch import RolloutBatch
from ablate.upge.estimator import UPGE
from ablate.upge.slots.base import TokenContext
from ablate.upge.slots.denominator import Behaviour, ClippedRatio, CurrentPolicy, GSPOSequence, PrefixMin, Unit
from ablate.upge.slots.likelihood import Identity, SequenceMean
from ablate.upge.slots.mask import ClipCov, DivergenceMask, NoMask, PPOClip, SequenceClip, TopEntropy

D = torch.float64
SHAPES = [(3, 5), (4, 7), (8, 16)]


def make_batch(old_logp, adv, mask, is_demo=None, ref_logp=None):
    B, T = old_logp.shape
    return RolloutBatch(input_ids=torch.zeros(B, T + 2, dtype=torch.long),
                        attention_mask=torch.ones(B, T + 2, dtype=torch.long), response_mask=mask,
                        old_logp=old_logp, rewards=torch.zeros(B), group_ids=torch.arange(B) // 2,
                        prompt_len=2, advantages=adv, is_demo=is_demo, ref_logp=ref_logp)


def random_case(shape, seed, seq_adv=False, spread=0.45, dual_frac=0.0):
    """Right-padded batch (one zero-length row), mixed-sign advantages (some exactly 0), ratios
    spread around the clip bounds; ``dual_frac`` of tokens get ρ ≈ 3.3–4.5 (beyond dual clip c = 3)."""
    B, T = shape
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=D) * 3 - 0.05
    lr = (torch.rand(B, T, generator=g, dtype=D) * 2 - 1) * spread
    if dual_frac:
        far = torch.rand(B, T, generator=g) < dual_frac
        lr = torch.where(far, 1.2 + 0.3 * torch.rand(B, T, generator=g, dtype=D), lr)
        lr[0, 0] = 1.3  # at least one ρ > 3 on a valid token (row 0 is full length) with A < 0
    logp = (old + lr).detach().requires_grad_(True)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    lengths[-1] = 0
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(D)
    if seq_adv:
        adv = torch.randn(B, 1, generator=g, dtype=D).expand(B, T).clone()
    else:
        adv = torch.randn(B, T, generator=g, dtype=D)
        adv[torch.rand(B, T, generator=g) < 0.1] = 0.0
    if dual_frac:
        adv[0, 0] = -1.0
    return logp, old, adv, mask


def grad_of(loss, logp):
    (g,) = torch.autograd.grad(loss, logp)
    return g


def token_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def verl_vanilla(logp, old, adv, mask, eps_l, eps_h, c=None):
    """verl compute_policy_loss_vanilla + agg_loss(token-mean)."""
    ratio = torch.exp((logp - old).clamp(-20.0, 20.0))
    l1, l2 = -adv * ratio, -adv * torch.clamp(ratio, 1 - eps_l, 1 + eps_h)
    loss = torch.maximum(l1, l2)
    if c is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * c), loss)
    return token_mean(loss, mask)


def upge_grad(est, logp, old, adv, mask, **kw):
    out = est(make_batch(old, adv, mask, **{k: v for k, v in kw.items() if k in ("is_demo", "ref_logp")}),
              logp, **{k: v for k, v in kw.items() if k == "entropy"})
    assert torch.isfinite(out.loss)
    return grad_of(out.loss, logp), out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [(0.2, 0.2), (0.2, 0.28)])
def test_ppo_clip_gradient_matches_verl_vanilla_2026_08(shape, eps):
    for seed in range(3):
        logp, old, adv, mask = random_case(shape, seed)
        ref = grad_of(verl_vanilla(logp, old, adv, mask, *eps), logp)
        est = UPGE(PPOClip(*eps), Behaviour(), Identity(), Aggregation("token-mean"))
        got, out = upge_grad(est, logp, old, adv, mask)
        assert torch.allclose(got, ref, atol=1e-12, rtol=1e-10)
        assert out.metrics["clip_frac_low"] > 0 or out.metrics["clip_frac_high"] > 0


@pytest.mark.parametrize("shape", SHAPES)
def test_dual_clip_gradient_matches_verl_vanilla_2026_08(shape):
    for seed in range(3):
        logp, old, adv, mask = random_case(shape, 100 + seed, dual_frac=0.25)
        ref = grad_of(verl_vanilla(logp, old, adv, mask, 0.2, 0.28, c=3.0), logp)
        est = UPGE(PPOClip(0.2, 0.28, dual_clip=3.0), Behaviour(), Identity(), Aggregation("token-mean"))
        got, out = upge_grad(est, logp, old, adv, mask)
        assert torch.allclose(got, ref, atol=1e-12, rtol=1e-10)
        assert out.metrics["clip_frac_dual"] > 0
        # without the dual clip the two objectives differ exactly on those tokens
        no_dual = grad_of(verl_vanilla(logp, old, adv, mask, 0.2, 0.28), logp)
        assert not torch.allclose(no_dual, ref)


def test_dual_clip_matches_trl_delta_two_sided_clip():
    """TRL: coef_1 ← min(coef_1, δ), loss −min(coef_1·A, clamp(coef_1)·A); δ = c reproduces verl."""
    logp, old, adv, mask = random_case((6, 9), 7, dual_frac=0.3)
    coef_1 = torch.exp(logp - old)
    coef_2 = torch.clamp(coef_1, 0.8, 1.28)
    coef_1 = torch.clamp(coef_1, max=3.0)
    trl = token_mean(-torch.min(coef_1 * adv, coef_2 * adv), mask)
    est = UPGE(PPOClip(0.2, 0.28, dual_clip=3.0), Behaviour(), Identity(), Aggregation("token-mean"))
    got, _ = upge_grad(est, logp, old, adv, mask)
    assert torch.allclose(got, grad_of(trl, logp), atol=1e-12)


def gspo_objective(logp, old, adv_seq, mask, eps_l, eps_h):
    """GSPO paper: −mean_i min(s_i A_i, clip(s_i) A_i), s_i = exp(mean_t (logp − old)), autograd through s."""
    lengths = mask.sum(-1)
    nonempty = lengths > 0
    s = torch.exp(((logp - old) * mask).sum(-1) / lengths.clamp_min(1.0))
    per_seq = -torch.min(s * adv_seq, torch.clamp(s, 1 - eps_l, 1 + eps_h) * adv_seq)
    return per_seq[nonempty].sum() / nonempty.sum()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("likelihood", [Identity(), SequenceMean()])
def test_gspo_gradient_matches_gspo_objective_with_autograd_through_s(shape, likelihood):
    fracs = []
    for seed in range(3):
        # spread chosen so some sequences fall outside [1−ε, 1+ε] and some inside
        logp, old, adv, mask = random_case(shape, 200 + seed, seq_adv=True, spread=0.03)
        eps = (3e-3, 4e-3)
        ref = grad_of(gspo_objective(logp, old, adv[:, 0], mask, *eps), logp)
        est = UPGE(SequenceClip(*eps), GSPOSequence(), likelihood, Aggregation("seq-mean-token-mean"))
        got, out = upge_grad(est, logp, old, adv, mask)
        assert torch.allclose(got, ref, atol=1e-12, rtol=1e-10)
        fracs.append(out.metrics["mask_frac"].item())
    assert max(fracs) > 0  # the sequence clip is exercised


def test_gspo_preset_yamls_compose_to_the_gspo_gradient():
    logp, old, adv, mask = random_case((6, 10), 5, seq_adv=True, spread=3e-3)
    est = UPGE(registry.build("mask", "gspo_seq_clip"), registry.build("denominator", "gspo_sequence"),
               registry.build("likelihood", "gspo_sequence"), registry.build("aggregation", "seq_mean_token_mean"))
    got, out = upge_grad(est, logp, old, adv, mask)
    ref = grad_of(gspo_objective(logp, old, adv[:, 0], mask, 3e-4, 4e-4), logp)
    assert torch.allclose(got, ref, atol=1e-12, rtol=1e-10)
    assert out.metrics["mask/seq_clip_high_frac"] == out.metrics["clip_frac_high"]
    assert 0 < out.metrics["mask_frac"] < 1  # some sequences clipped, some not


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("denom,weight", [
    (ClippedRatio(0.2, 0.28), lambda r: r.clamp(0.8, 1.28)),  # verl cispo
    (ClippedRatio(None, None, max_ratio=5.0), lambda r: r.clamp(max=5.0)),  # TRL cispo, epsilon_high=5
])
def test_cispo_gradient_matches_sg_clipped_weight_times_logp(shape, denom, weight):
    for seed in range(2):
        logp, old, adv, mask = random_case(shape, 300 + seed, spread=2.0)
        rho = torch.exp((logp - old).clamp(-20, 20))
        ref = token_mean(-weight(rho).detach() * adv * logp, mask)
        est = UPGE(NoMask(), denom, Identity(), Aggregation("token-mean"))
        got, _ = upge_grad(est, logp, old, adv, mask)
        assert torch.allclose(got, grad_of(ref, logp), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("kind", ["tv", "kl"])
def test_dppo_gradient_matches_verl_dppo_2026_08(kind):
    logp0, old0, adv, mask = random_case((6, 12), 400, spread=1.0)
    old = old0.clamp(max=-0.02)
    logp = logp0.detach().clamp(max=-0.01).requires_grad_(True)
    rho = torch.exp((logp - old).clamp(-20, 20))
    p, q = logp.detach().exp(), old.exp()
    if kind == "tv":
        pos, neg = (p - q) <= 0.1, (p - q) >= -0.1
    else:
        b = q * (old - logp.detach()) + (1 - q) * torch.log((1 - q + 1e-8) / (1 - p + 1e-8))
        pos, neg = (b <= 0.1) | (p <= q), (b <= 0.1) | (p >= q)
    valid = torch.where(adv > 0, pos, neg).to(D)
    ref = token_mean(-adv * torch.clamp(rho, max=20.0).detach() * logp * valid, mask)
    est = UPGE(DivergenceMask(kind, 0.1, 0.1), registry.build("denominator", "dppo_truncated"), Identity(),
               Aggregation("token-mean"))
    got, out = upge_grad(est, logp, old, adv, mask)
    assert torch.allclose(got, grad_of(ref, logp), atol=1e-12, rtol=1e-10)
    assert out.metrics["mask/divergence_frac"] > 0


def test_luffy_gradient_matches_ppo_on_policy_plus_shaped_demos():
    logp, old, adv, mask = random_case((6, 8), 500)
    is_demo = torch.tensor([False, True, False, True, False, False])
    gamma = 0.1
    on = ~is_demo[:, None]
    ratio = torch.exp((logp - old).clamp(-20, 20))
    ppo = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.2))
    p = logp.exp()
    shaped = -adv * p / (p + gamma)
    ref = token_mean(torch.where(on, ppo, shaped), mask)
    est = UPGE(registry.build("mask", "luffy"), registry.build("denominator", "luffy"),
               registry.build("likelihood", "luffy"), registry.build("aggregation", "token_mean"))
    got, out = upge_grad(est, logp, old, adv, mask, is_demo=is_demo)
    assert torch.allclose(got, grad_of(ref, logp), atol=1e-12, rtol=1e-10)
    # demo tokens never clip: the clip fraction counts on-policy rows only (over all valid tokens)
    ev = PPOClip(0.2)(TokenContext.from_batch(make_batch(old, adv, mask * on.to(D)), logp)).events
    assert ev["clip_high"].sum() > 0
    assert out.metrics["clip_frac_high"].item() == pytest.approx(ev["clip_high"].sum().item() / mask.sum().item())


def test_luffy_demo_only_loss_value_is_minus_adv_times_shaped_pi():
    logp, old, adv, mask = random_case((4, 5), 501)
    is_demo = torch.ones(4, dtype=torch.bool)
    est = UPGE(NoMask(), Unit(), registry.build("likelihood", "policy_shaping"), Aggregation("token-mean"))
    out = est(make_batch(old, adv, mask, is_demo=is_demo), logp)
    p = logp.detach().exp()
    assert out.loss.item() == pytest.approx(token_mean(-adv * p / (p + 0.1), mask).item(), abs=1e-12)


def test_reinforce_and_sft_have_plain_score_gradient_like_verl_gpg():
    logp, old, adv, mask = random_case((5, 6), 600, spread=1.5)
    ref = token_mean(-logp * adv, mask)  # verl compute_policy_loss_gpg
    est = UPGE(NoMask(), CurrentPolicy(), Identity(), Aggregation("token-mean"))
    got, out = upge_grad(est, logp, old, adv, mask)
    assert torch.allclose(got, grad_of(ref, logp), atol=1e-12)
    assert out.loss.item() == pytest.approx(token_mean(-adv, mask).item())


def test_prefix_min_gradient_is_sg_cummin_ratio_times_score_minpro():
    logp, old, adv, mask = random_case((5, 9), 700, spread=0.5)
    rho = torch.exp(logp - old).detach()
    w = torch.cummin(torch.where(mask > 0, rho, torch.full_like(rho, 1e300)), dim=-1).values
    ref = token_mean(-(w * mask) * adv * logp, mask)
    est = UPGE(NoMask(), PrefixMin(), Identity(), Aggregation("token-mean"))
    got, _ = upge_grad(est, logp, old, adv, mask)
    assert torch.allclose(got, grad_of(ref, logp), atol=1e-12)


def test_clip_metrics_match_hand_counts_on_peer_semantics_8_4_rows():
    # 2 rows × 4: row 0 = §8.4 rows 1–4, row 1 = §8.4 row 5 + a kept token + 2 padding tokens
    rho = torch.tensor([[1.5, 0.7, 0.5, 1.5], [4.0, 1.0, 9.0, 9.0]], dtype=D)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0], [-1.0, 1.0, 1.0, -1.0]], dtype=D)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=D)
    old = torch.full((2, 4), -1.0, dtype=D)
    logp = (old + torch.log(rho)).requires_grad_(True)
    est = UPGE(registry.build("mask", "clip_higher"), Behaviour(), Identity(), Aggregation("token-mean"))
    m = est(make_batch(old, adv, mask), logp).metrics
    assert m["clip_frac_high"].item() == pytest.approx(1 / 6)
    assert m["clip_frac_low"].item() == pytest.approx(1 / 6)
    assert m["clip_frac_dual"].item() == 0.0
    assert m["mask_frac"].item() == pytest.approx(2 / 6)
    dual = UPGE(PPOClip(0.2, 0.28, dual_clip=3.0), Behaviour(), Identity(), Aggregation("token-mean"))
    m2 = dual(make_batch(old, adv, mask), logp).metrics
    assert m2["clip_frac_dual"].item() == pytest.approx(1 / 6)
    assert m2["mask_frac"].item() == pytest.approx(3 / 6)
    assert m2["ratio_max"].item() == pytest.approx(4.0) and m2["ratio_min"].item() == pytest.approx(0.5)


ALL_COMBOS = [
    (PPOClip(0.2, 0.28, dual_clip=3.0), Behaviour(), Identity()),
    (SequenceClip(), GSPOSequence(), SequenceMean()),
    (ClipCov(clip_ratio=0.1), Behaviour(), Identity()),
    (TopEntropy(0.5), PrefixMin(), Identity()),
    (DivergenceMask("kl"), ClippedRatio(None, None, 20.0), Identity()),
    (NoMask(), Unit(), registry.build("likelihood", "policy_shaping")),
]


@pytest.mark.parametrize("mode", ["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum",
                                  "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("combo", range(len(ALL_COMBOS)))
def test_zero_length_and_fully_masked_rows_give_finite_loss_and_zero_row_gradient(mode, combo):
    mask_slot, denom, lik = ALL_COMBOS[combo]
    logp, old, adv, mask = random_case((4, 6), 800 + combo, spread=0.5)
    logp_pad = logp.detach().clone()
    logp_pad[mask == 0] = -1e4  # garbage on padding must not leak
    logp_pad.requires_grad_(True)
    est = UPGE(mask_slot, denom, lik, Aggregation(mode))
    ent = torch.rand(4, 6, dtype=D)
    got, out = upge_grad(est, logp_pad, old, adv, mask, entropy=ent)
    assert torch.isfinite(got).all() and (got[mask == 0] == 0).all()
    assert all(torch.isfinite(v).all() for v in out.metrics.values())
    # the whole batch empty
    z = torch.zeros_like(mask)
    got0, out0 = upge_grad(est, logp_pad, old, adv, z, entropy=ent)
    assert out0.loss.item() == 0.0 and (got0 == 0).all()
    assert all(torch.isfinite(v).all() for v in out0.metrics.values())


def test_all_zero_advantages_give_zero_loss_and_gradient():
    logp, old, adv, mask = random_case((4, 6), 900)
    for mask_slot in (PPOClip(0.2, 0.28, dual_clip=3.0), ClipCov(), SequenceClip(), DivergenceMask()):
        est = UPGE(mask_slot, Behaviour(), Identity(), Aggregation("token-mean"))
        got, out = upge_grad(est, logp, old, torch.zeros_like(adv), mask)
        assert out.loss.item() == 0.0 and (got == 0).all()
        assert out.metrics["mask_frac"].item() == 0.0  # A = 0 tokens are never masked


def test_fully_clipped_row_has_zero_gradient_other_rows_unchanged():
    logp, old, adv, mask = random_case((3, 5), 901, spread=0.1)
    logp2 = logp.detach().clone()
    logp2[1] = old[1] + 1.0  # ρ = e > 1.28 everywhere in row 1
    logp2.requires_grad_(True)
    adv2 = adv.clone()
    adv2[1] = 1.0
    est = UPGE(PPOClip(0.2, 0.28), Behaviour(), Identity(), Aggregation("seq-mean-token-mean"))
    got, _ = upge_grad(est, logp2, old, adv2, mask)
    assert (got[1] == 0).all() and (got[0] != 0).any()


def test_regularizer_entropy_and_ref_flags_reach_the_estimator():
    regs = {k: registry.build("regularizer", v)
            for k, v in registry.load_variant("regularizers", "kl_k3_entropy").items()}
    est = UPGE(NoMask(), Behaviour(), Identity(), Aggregation("token-mean"), regs)
    needs = est.needs()
    assert needs.entropy_grad and needs.ref_model and not needs.entropy
    logp, old, adv, mask = random_case((3, 4), 902)
    ent = torch.rand(3, 4, dtype=D, requires_grad=True)
    out = est(make_batch(old, adv, mask, ref_logp=old.clone()), logp, entropy_grad=ent)
    assert {"reg/kl", "reg/entropy"} <= set(out.metrics)
    assert math.isfinite(out.loss.item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_clamped_exp_has_the_gradient_of_exp_of_clamp(dtype):
    """The surrogate's exp(clamp(·)) with a one-kernel backward: the values and gradients of the
    plain expression, at the clamp bounds (inclusive, as torch.clamp) and beyond them."""
    from ablate.upge.estimator import clamped_exp
    from ablate.upge.slots.base import LOG_RATIO_CLAMP as C
    x0 = torch.tensor([-25.0, -C, -19.5, -0.3, 0.0, 0.7, 19.5, C, 25.0], dtype=dtype)
    w = torch.linspace(-1.0, 2.0, x0.numel(), dtype=dtype)
    a, b = x0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
    ya, yb = clamped_exp(a), torch.exp(b.clamp(-C, C))
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert torch.equal(ya.detach(), yb.detach())
    assert torch.equal(a.grad, b.grad)
    assert a.grad[1] != 0 and a.grad[-2] != 0 and a.grad[0] == 0 and a.grad[-1] == 0
