"""Mask slot variants: the clip table of peer_semantics §8.4, peer reference re-implementations
(verl vanilla / clip_cov / dppo_*, TRL top_entropy_quantile), composition, routing, errors, YAMLs."""

import math

import pytest
import torch

from ablate import registry
from ablate.errors import ConfigError
from ablate.upge.slots.base import TokenContext
from ablate.upge.slots.mask import (AdaptiveClip, AllOf, ClipCov, DemoSplit, DivergenceMask, NoMask,
                                    PPOClip, SequenceClip, TopEntropy)

D = torch.float64


def make_ctx(logp, old, adv, mask=None, entropy=None, is_demo=None):
    logp = torch.as_tensor(logp, dtype=D)
    old = torch.as_tensor(old, dtype=D)
    adv = torch.as_tensor(adv, dtype=D)
    mask = torch.ones_like(logp) if mask is None else torch.as_tensor(mask, dtype=D)
    is_demo = torch.zeros(logp.shape[0], dtype=torch.bool) if is_demo is None else torch.as_tensor(is_demo)
    return TokenContext(logp=logp, old_logp=old, advantages=adv, response_mask=mask, is_demo=is_demo,
                        entropy=None if entropy is None else torch.as_tensor(entropy, dtype=D))


# §8.4: ε_l = 0.2, ε_h = 0.28, c = 3; rows (A, ρ)
TABLE_A = [1.0, 1.0, -1.0, -1.0, -1.0]
TABLE_RHO = [1.5, 0.7, 0.5, 1.5, 4.0]


def table_ctx():
    logp = torch.log(torch.tensor(TABLE_RHO, dtype=D))[:, None]
    return make_ctx(logp, torch.zeros(5, 1), torch.tensor(TABLE_A)[:, None])


def ppo_loss_ref(rho, adv, eps_l, eps_h, c=None):
    """verl compute_policy_loss_vanilla per token (before aggregation)."""
    l1, l2 = -adv * rho, -adv * rho.clamp(1 - eps_l, 1 + eps_h)
    loss = torch.maximum(l1, l2)
    if c is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * c), loss)
    return loss


def test_clip_table_loss_values_and_zero_grad_rows_match_peer_semantics_8_4():
    rho = torch.tensor(TABLE_RHO, dtype=D, requires_grad=True)
    adv = torch.tensor(TABLE_A, dtype=D)
    plain = ppo_loss_ref(rho, adv, 0.2, 0.28)
    dual = ppo_loss_ref(rho, adv, 0.2, 0.28, c=3.0)
    assert torch.allclose(plain, torch.tensor([-1.28, -0.7, 0.8, 1.5, 4.0], dtype=D))
    assert torch.allclose(dual, torch.tensor([-1.28, -0.7, 0.8, 1.5, 3.0], dtype=D))
    (g,) = torch.autograd.grad(dual.sum(), rho)
    has_grad = (g != 0).tolist()
    assert has_grad == [False, True, False, True, False]
    keep = PPOClip(0.2, 0.28, dual_clip=3.0)(table_ctx()).keep[:, 0].tolist()
    assert keep == has_grad
    keep_nodual = PPOClip(0.2, 0.28)(table_ctx()).keep[:, 0].tolist()
    assert keep_nodual == [False, True, False, True, True]


def test_clip_events_match_verl_pg_clipfrac_and_trl_low_high_split_2026_08():
    ev = PPOClip(0.2, 0.28, dual_clip=3.0)(table_ctx()).events
    # verl pg_clipfrac = rows 1 and 3 (both PPO sides lumped); pg_clipfrac_lower = dual clip, row 5
    verl_clipfrac = (ev["clip_low"] | ev["clip_high"])[:, 0].nonzero().flatten().tolist()
    assert verl_clipfrac == [0, 2]
    assert ev["clip_dual"][:, 0].nonzero().flatten().tolist() == [4]
    # TRL clip_ratio/high_mean counts row 1, clip_ratio/low_mean row 3
    assert ev["clip_high"][:, 0].nonzero().flatten().tolist() == [0]
    assert ev["clip_low"][:, 0].nonzero().flatten().tolist() == [2]


def test_eps_high_none_means_symmetric_like_verl_clip_ratio():
    m = PPOClip(eps_low=0.25)
    assert m.eps_high == 0.25 and m.dual_clip is None
    # ρ = 1.27: clipped with ε_h = 0.25, kept with DAPO's 0.28
    ctx = make_ctx([[math.log(1.27)]], [[0.0]], [[1.0]])
    assert not m(ctx).keep.item()
    assert PPOClip(0.2, 0.28)(ctx).keep.item()


def test_events_exclude_padding_and_zero_advantage():
    ctx = make_ctx([[math.log(2.0), math.log(2.0), math.log(0.1)]], [[0.0, 0.0, 0.0]],
                   [[0.0, 1.0, -1.0]], mask=[[1.0, 0.0, 1.0]])
    r = PPOClip(0.2)(ctx)
    assert r.keep.tolist() == [[True, True, False]]
    assert r.events["clip_high"].sum() == 0 and r.events["clip_low"].tolist() == [[False, False, True]]


ADAPTIVE = [{}, dict(dual_clip=None), dict(target=1e9, high_max=3.0),
            dict(low_start=1.0, low_max=1.0, high_start=1.0, high_max=1.0, dual_clip=1.0 + 1e-9)]


@pytest.mark.parametrize("empty", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kw", ADAPTIVE)
def test_adaptive_clip_events_are_the_plain_formula_on_its_bounds(kw, seed, empty):
    """BAPO's events on the bounds it picks: valid ∧ A<0 ∧ ρ<c_low, valid ∧ A>0 ∧ ρ>c_high, valid ∧
    A<0 ∧ ρ>dual_clip, even at c_low = c_high = 1 with garbage log-probs on padding; its float flags
    are the same events."""
    g = torch.Generator().manual_seed(seed)
    B, T = 5, 7
    mask = (torch.rand(B, T, generator=g) < 0.7).to(D)
    mask[0] = 1.0
    if empty:
        mask.zero_()
    old = -torch.rand(B, T, generator=g, dtype=D) * 3
    lr = (torch.rand(B, T, generator=g, dtype=D) * 2 - 1) * 0.8
    lr[1, ::2] = 0.0  # ρ = 1 exactly on some valid tokens
    logp = torch.where(mask > 0, old + lr, torch.full_like(old, -9.0))
    adv = torch.randn(B, T, generator=g, dtype=D)
    adv[:, -1] = 0.0
    m = AdaptiveClip(**kw)
    ctx = make_ctx(logp, old, adv, mask=mask)
    low, high = m.bounds(ctx)
    r = m(ctx)
    valid, rho = mask > 0, torch.exp(logp - old)
    want = {"clip_low": valid & (adv < 0) & (rho < low), "clip_high": valid & (adv > 0) & (rho > high)}
    if m.dual_clip is not None:
        want["clip_dual"] = valid & (adv < 0) & (rho > m.dual_clip)
    assert list(r.events) == list(want)
    for name, ev in want.items():
        assert torch.equal(r.events[name], ev), name
        assert torch.equal(r.flags_of(r.events[name], D), ev.to(D))
    dropped = torch.zeros_like(valid)
    for ev in want.values():
        dropped |= ev
    assert torch.equal(r.keep, ~dropped)
    assert r.events_partition and [v for _, v in r.clipped_bounds][:2] == [high, low]


def test_no_mask_keeps_everything():
    r = NoMask()(table_ctx())
    assert r.keep.all() and r.events == {}


def test_gspo_sequence_clip_matches_verl_gspo_seq_ratio():
    # §8.6: s = 1.0689391 > 1 + 4e-4, so an A>0 row is clipped high, an A<0 row is kept
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -2.0, -0.5]], dtype=D)
    old = torch.tensor([[-1.1, -1.9, -0.7], [-1.1, -1.9, -0.7]], dtype=D)
    adv = torch.tensor([[1.0] * 3, [-1.0] * 3], dtype=D)
    ctx = make_ctx(logp, old, adv)
    assert math.isclose(math.exp(ctx.seq_log_ratio[0].item()), 1.0689391, abs_tol=1e-7)
    r = SequenceClip()(ctx)
    assert r.keep.tolist() == [[False] * 3, [True] * 3]
    assert torch.equal(r.events["seq_clip_high"], r.events["clip_high"])
    assert torch.equal(r.events["seq_clip_low"], r.events["clip_low"])
    # whole row decided by the sequence ratio, even where the token ratio is inside [1−ε, 1+ε]
    ctx2 = make_ctx(old, logp, -adv)  # s = 1/1.0689 < 1 − 3e-4, A row 0 = −1 → clipped low
    r2 = SequenceClip()(ctx2)
    assert r2.events["clip_low"][0].all() and r2.keep[1].all()


def verl_clip_cov_candidates(logp, old, adv, mask, eps_l, eps_h, lb, ub):
    """verl compute_policy_loss_clip_cov, up to the random draw: (candidates, clip_num)."""
    ratio = torch.exp(logp - old)
    l1, l2 = -adv * ratio, -adv * torch.clamp(ratio, 1 - eps_l, 1 + eps_h)
    clip_by_origin = (l2 > l1) & (mask > 0)
    mm = lambda x: (x * mask).sum() / mask.sum()  # noqa: E731
    cov = (adv - mm(adv)) * (logp - mm(logp))
    cov[mask == 0] = -torch.inf
    cov[clip_by_origin] = -torch.inf
    cand = (cov < ub) & (cov > lb) & (mask > 0)
    return cand, max(int(0.05 * mask.sum().item()), 1)


def _cov_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T = 4, 50
    logp = -torch.rand(B, T, generator=g, dtype=D) * 4
    old = logp + 0.3 * torch.randn(B, T, generator=g, dtype=D)
    adv = torch.tensor([2.0, -2.0, 1.5, -1.0], dtype=D)[:, None].expand(B, T).clone()
    mask = torch.ones(B, T, dtype=D)
    mask[0, 40:] = 0
    mask[3, 10:] = 0
    return logp, old, adv, mask


def test_clip_cov_drops_verl_candidates_and_count_matches_verl_clip_cov():
    logp, old, adv, mask = _cov_batch()
    cand, clip_num = verl_clip_cov_candidates(logp, old, adv, mask, 0.2, 0.2, 1.0, 5.0)
    assert cand.sum() > clip_num  # the draw really chooses
    r = ClipCov(eps_low=0.2, clip_ratio=0.05, seed=0)(make_ctx(logp, old, adv, mask))
    cov = r.events["cov"]
    assert int(cov.sum()) == clip_num
    assert not (cov & ~cand).any()  # only candidates (valid, not PPO-clipped, lb < cov < ub)
    ppo = PPOClip(0.2)(make_ctx(logp, old, adv, mask))
    assert torch.equal(r.events["clip_low"], ppo.events["clip_low"])
    assert torch.equal(r.keep, ppo.keep & ~cov)


def test_clip_cov_is_deterministic_given_seed():
    logp, old, adv, mask = _cov_batch()
    ctx = lambda: make_ctx(logp, old, adv, mask)  # noqa: E731
    a, b, c = ClipCov(clip_ratio=0.05, seed=7), ClipCov(clip_ratio=0.05, seed=7), ClipCov(clip_ratio=0.05, seed=8)
    seq_a = [a(ctx()).events["cov"] for _ in range(3)]
    seq_b = [b(ctx()).events["cov"] for _ in range(3)]
    seq_c = [c(ctx()).events["cov"] for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(seq_a, seq_b))
    assert not all(torch.equal(x, y) for x, y in zip(seq_a, seq_c))
    assert not torch.equal(seq_a[0], seq_a[1])  # the generator advances between steps


def test_clip_cov_at_least_one_token_like_verl_and_none_without_candidates():
    logp, old, adv, mask = _cov_batch()
    r = ClipCov(clip_ratio=1e-6)(make_ctx(logp, old, adv, mask))
    assert int(r.events["cov"].sum()) == 1  # max(int(1e-6·N), 1)
    r0 = ClipCov()(make_ctx(logp, old, torch.zeros_like(adv), mask))  # cov ≡ 0 ∉ (1, 5)
    assert r0.events["cov"].sum() == 0 and r0.keep.all()


def trl_high_entropy_mask(entropies, mask, threshold):
    """TRL GRPOTrainer.get_high_entropy_mask (single process)."""
    non_pad = entropies[mask.bool()].float()
    thr = torch.quantile(non_pad, threshold)
    return ((entropies * mask.float()) >= thr) & mask.bool()


@pytest.mark.parametrize("q", [0.2, 0.5, 1.0])
def test_top_entropy_matches_trl_top_entropy_quantile_2026_08(q):
    g = torch.Generator().manual_seed(3)
    ent = torch.rand(5, 9, generator=g, dtype=torch.float32) * 3
    mask = (torch.rand(5, 9, generator=g) > 0.3).float()
    ctx = make_ctx(torch.zeros(5, 9), torch.zeros(5, 9), torch.ones(5, 9), mask, entropy=ent.double())
    r = TopEntropy(q)(ctx)
    ref = trl_high_entropy_mask(ent, mask, 1 - q)
    valid = mask > 0
    assert torch.equal(r.keep & valid, ref)
    assert torch.equal(r.events["entropy"], valid & ~ref)


def test_top_entropy_keeps_ties_at_threshold():
    ent = torch.tensor([[1.0, 1.0, 1.0, 2.0]], dtype=D)
    ctx = make_ctx(torch.zeros(1, 4), torch.zeros(1, 4), torch.ones(1, 4), entropy=ent)
    assert TopEntropy(0.5)(ctx).keep.all()  # quantile(., 0.5) = 1: all ties kept
    assert TopEntropy(0.25)(ctx).keep.tolist() == [[False, False, False, True]]  # threshold 1.25


def test_top_entropy_large_input_uses_same_linear_quantile():
    vals = torch.rand(1000, dtype=D, generator=torch.Generator().manual_seed(0))
    for q in (0.0, 0.3, 0.8, 1.0):
        old = TopEntropy._QUANTILE_MAX_NUMEL
        try:
            TopEntropy._QUANTILE_MAX_NUMEL = 10
            manual = TopEntropy._threshold(vals, q)
        finally:
            TopEntropy._QUANTILE_MAX_NUMEL = old
        assert torch.allclose(manual, torch.quantile(vals, q))


def test_top_entropy_without_entropy_raises_one_line():
    with pytest.raises(ValueError, match="ctx.entropy") as e:
        TopEntropy()(make_ctx([[0.0]], [[0.0]], [[1.0]]))
    assert "\n" not in str(e.value)


def test_top_entropy_no_valid_tokens_keeps_all():
    ctx = make_ctx(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 3), torch.zeros(2, 3),
                   entropy=torch.rand(2, 3))
    r = TopEntropy()(ctx)
    assert r.keep.all() and r.events["entropy"].sum() == 0


def verl_dppo_valid(kind, logp, old, adv, dl, dh):
    prob, old_prob = torch.exp(logp), torch.exp(old)
    if kind == "tv":
        pos, neg = (prob - old_prob) <= dh, (prob - old_prob) >= -dl
    else:
        bkl = old_prob * (old - logp) + (1 - old_prob) * torch.log((1.0 - old_prob + 1e-8) / (1.0 - prob + 1e-8))
        pos = (bkl <= dh) | (prob <= old_prob)
        neg = (bkl <= dl) | (prob >= old_prob)
    return torch.where(adv > 0, pos, neg)


@pytest.mark.parametrize("kind", ["tv", "kl"])
def test_divergence_mask_matches_verl_dppo_2026_08(kind):
    g = torch.Generator().manual_seed(11)
    old = torch.log(torch.rand(6, 12, generator=g, dtype=D) * 0.98 + 0.01)
    logp = torch.log((old.exp() + 0.3 * torch.randn(6, 12, generator=g, dtype=D)).clamp(0.005, 0.995))
    adv = torch.randn(6, 12, generator=g, dtype=D)
    adv[0, :4] = 0.0
    mask = torch.ones(6, 12, dtype=D)
    mask[2, 7:] = 0
    r = DivergenceMask(kind, delta_low=0.05, delta_high=0.15)(make_ctx(logp, old, adv, mask))
    ref = verl_dppo_valid(kind, logp, old, adv, 0.05, 0.15)
    nz = (adv != 0) & (mask > 0)  # A = 0 kept here (no gradient either way); verl uses the A<0 branch
    assert torch.equal(r.keep[nz], ref[nz])
    assert r.keep[adv == 0].all()
    assert torch.equal(r.events["divergence"], ~r.keep & (mask > 0))
    assert 0 < int(r.events["divergence"].sum()) < int(nz.sum())


def test_all_of_ands_keeps_and_ors_events():
    ctx = table_ctx()
    ctx.entropy = torch.tensor([[0.1], [0.2], [3.0], [0.05], [2.0]], dtype=D)
    r = AllOf([PPOClip(0.2, 0.28), TopEntropy(0.4)])(ctx)
    # PPO keeps rows 2, 4, 5; top-40% entropy keeps rows 3, 5
    assert r.keep[:, 0].tolist() == [False, False, False, False, True]
    assert set(r.events) == {"clip_low", "clip_high", "entropy"}
    both = AllOf([PPOClip(0.2, 0.28), PPOClip(0.2, 0.28, dual_clip=3.0)])(ctx)
    assert both.events["clip_high"][:, 0].tolist() == [True, False, False, False, False]
    assert AllOf([TopEntropy()]).needs().entropy and not PPOClip().needs().entropy


def test_demo_split_mask_clips_only_on_policy_rows_like_luffy():
    logp = torch.log(torch.tensor([[1.5, 0.5], [1.5, 0.5]], dtype=D))
    adv = torch.tensor([[1.0, -1.0], [1.0, -1.0]], dtype=D)
    ctx = make_ctx(logp, torch.zeros(2, 2), adv, is_demo=torch.tensor([False, True]))
    r = DemoSplit(PPOClip(0.2), NoMask())(ctx)
    assert r.keep.tolist() == [[False, False], [True, True]]
    assert r.events["clip_high"].tolist() == [[True, False], [False, False]]
    # statistics of a part only see its own rows: top-entropy quantile over demo rows only
    ctx.entropy = torch.tensor([[9.0, 8.0], [1.0, 2.0]], dtype=D)
    r2 = DemoSplit("none", {"_target_": "ablate.upge.slots.mask.TopEntropy", "quantile": 0.5})(ctx)
    assert r2.keep.tolist() == [[True, True], [False, True]]


@pytest.mark.parametrize("cls,kwargs,param", [
    (PPOClip, {"eps_low": 1.0}, "eps_low"),
    (PPOClip, {"eps_low": -0.1}, "eps_low"),
    (PPOClip, {"eps_high": "big"}, "eps_high"),
    (PPOClip, {"dual_clip": 1.0}, "dual_clip"),
    (SequenceClip, {"eps_low": float("nan")}, "eps_low"),
    (ClipCov, {"clip_ratio": 0.0}, "clip_ratio"),
    (ClipCov, {"cov_lb": 5.0, "cov_ub": 1.0}, "cov_ub"),
    (ClipCov, {"seed": -1}, "seed"),
    (TopEntropy, {"quantile": 0.0}, "quantile"),
    (TopEntropy, {"quantile": 1.5}, "quantile"),
    (DivergenceMask, {"kind": "js"}, "kind"),
    (DivergenceMask, {"delta_low": 0}, "delta_low"),
    (AllOf, {"masks": []}, "masks"),
    (DemoSplit, {"on_policy": 3, "demo": NoMask()}, "on_policy"),
])
def test_bad_mask_parameters_raise_one_line(cls, kwargs, param):
    with pytest.raises(ValueError) as e:
        cls(**kwargs)
    msg = str(e.value)
    assert param in msg and "\n" not in msg


@pytest.mark.parametrize("name", registry.variant_names("mask"))
def test_every_mask_yaml_builds(name):
    from ablate.component import StepInfo

    m = registry.build("mask", registry.load_variant("mask", name))
    ctx = make_ctx([[0.0, -1.0]], [[0.0, -1.2]], [[1.0, -1.0]], entropy=[[0.5, 1.0]])
    ctx.rows = {"group_reward_var": torch.tensor([0.25], dtype=D)}  # per-row data the trainer fills
    ctx.info = StepInfo(step=1, total_steps=2) if m.needs().step_info else None
    if m.needs().full_logits:  # [B, T, V] logits over a 3-token vocabulary and the sampled tokens
        ctx.logits = torch.tensor([[[0.0, 1.0, -1.0], [0.5, 0.0, 0.2]]], dtype=D)
        ctx.response_ids = torch.tensor([[1, 0]])
    if m.needs().hidden_states:
        ctx.hidden, ctx.lr = torch.tensor([[[1.0, -0.5], [0.2, 0.3]]], dtype=D), 1e-3
    r = m(ctx)
    assert r.keep.dtype == torch.bool and r.keep.shape == (1, 2)


def test_expected_mask_variants_exist():
    names = set(registry.variant_names("mask"))
    assert {"none", "ppo_clip", "clip_higher", "dual_clip", "gspo_seq_clip", "clip_cov", "top_entropy",
            "dppo_tv", "dppo_kl", "clip_higher_top_entropy", "luffy"} <= names
    assert registry.build("mask", "clip_higher").eps_high == 0.28
    assert registry.build("mask", "dual_clip").dual_clip == 3.0


def test_unknown_mask_parameter_is_one_line_config_error_listing_valid_ones():
    with pytest.raises(ConfigError) as e:
        registry.build("mask", {"_target_": "ablate.upge.slots.mask.PPOClip", "epsilon": 0.2})
    msg = str(e.value)
    assert "epsilon" in msg and "eps_low" in msg and "eps_high" in msg and "dual_clip" in msg
    assert "\n" not in msg
    with pytest.raises(ConfigError, match="masks\\[1\\]"):
        registry.build("mask", {"_target_": "ablate.upge.slots.mask.AllOf", "masks": [
            {"_target_": "ablate.upge.slots.mask.NoMask"},
            {"_target_": "ablate.upge.slots.mask.TopEntropy", "q": 0.2}]})
