"""The estimator's fused diagnostics equal the straightforward formulas (DESIGN §4 names).

``UPGE._diagnostics`` computes its values with counts, dots and scratch buffers for speed
(bench/README.md, estimator section); here each value is recomputed the plain way (boolean
indexing, ``where``, float64) from the same mask result, on random batches with empty rows, a
fully masked row and an empty microbatch, for masks with and without peer bounds.
"""

import dataclasses

import pytest
import torch

from ablate import registry
from ablate.upge.aggregation import Aggregation, Normalizer
from ablate.upge.batch import RolloutBatch
from ablate.upge.estimator import UPGE
from ablate.upge.slots.base import LOG_RATIO_CLAMP, TokenContext
from ablate.upge.slots.denominator import Behaviour, ClippedRatio, GSPOSequence
from ablate.upge.slots.elastic import ElasticClip
from ablate.upge.slots.likelihood import Identity, SequenceMean
from ablate.upge.slots.mask import AdaptiveClip, ClipCov, NoMask, PPOClip, SequenceClip, TopEntropy

COMBOS = {
    "ppo_dual": lambda: UPGE(PPOClip(0.2, 0.28, dual_clip=3.0), Behaviour(), Identity(),
                             Aggregation("seq-mean-token-mean")),
    "clip_higher": lambda: UPGE(registry.build("mask", "clip_higher"), Behaviour(), Identity(),
                                Aggregation("token-mean")),
    "gspo": lambda: UPGE(SequenceClip(), GSPOSequence(), SequenceMean(), Aggregation("seq-mean-token-mean")),
    "clip_cov": lambda: UPGE(ClipCov(clip_ratio=0.1), Behaviour(), Identity(), Aggregation("token-sum")),
    "top_entropy": lambda: UPGE(TopEntropy(0.5), Behaviour(), Identity(), Aggregation("seq-mean-token-sum")),
    "cispo": lambda: UPGE(NoMask(), ClippedRatio(None, 0.28), Identity(), Aggregation("token-mean")),
    "elastic": lambda: UPGE(ElasticClip(),
                            Behaviour(), Identity(), Aggregation("token-mean")),
}


def case(dtype, seed, empty: bool, with_extras: bool):
    B, T = 6, 9
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    lr = (torch.rand(B, T, generator=g, dtype=torch.float64) * 2 - 1) * 0.6
    lr[1, :] = 1.5  # a row far out of every clip range
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0], lengths[-1] = T, 0  # a full row and an empty one
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(torch.float64)
    if empty:
        mask.zero_()
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    adv[torch.rand(B, T, generator=g) < 0.15] = 0.0
    logp = (old + lr) * mask - 7.0 * (1 - mask)  # garbage on padding
    old = old * mask
    kw = {}
    if with_extras:
        kw = dict(ref_logp=(logp + 0.2 * torch.randn(B, T, generator=g, dtype=torch.float64)).to(dtype),
                  loss_weights=torch.rand(B, generator=g, dtype=torch.float64).to(dtype),
                  rows={"is_weight": torch.rand(B, T, generator=g, dtype=torch.float64).to(dtype)})
    rows = kw.pop("rows", {})
    rows["group_reward_var"] = torch.rand(B, generator=g, dtype=torch.float64).to(dtype)  # ElasticClip
    batch = RolloutBatch(input_ids=torch.zeros(B, T + 2, dtype=torch.long),
                         attention_mask=torch.ones(B, T + 2, dtype=torch.long), response_mask=mask.to(dtype),
                         old_logp=old.to(dtype), rewards=torch.zeros(B), group_ids=torch.arange(B) // 2,
                         prompt_len=2, advantages=adv.to(dtype), rows=rows, **kw)
    ent = torch.rand(B, T, generator=g, dtype=torch.float64).to(dtype)
    return batch, logp.to(dtype).requires_grad_(True), ent


def straightforward(est: UPGE, ctx: TokenContext, m, weight, norm) -> dict[str, float]:
    """Each diagnostic by its definition, in float64."""
    f = torch.float64
    rm = ctx.response_mask.to(f)
    valid = rm > 0
    n = max(float(rm.sum()), 1.0)
    adv, logp, old = ctx.advantages.to(f), ctx.logp.detach().to(f), ctx.old_logp.to(f)
    out = {"mask_frac": float((rm * (~m.keep).to(f)).sum()) / n}
    for ev in ("clip_low", "clip_high", "clip_dual"):
        t = m.events.get(ev)
        out[f"clip_frac_{ev.split('_')[1]}"] = 0.0 if t is None else float((rm * t.to(f)).sum()) / n
    for ev, t in m.events.items():
        if ev not in ("clip_low", "clip_high", "clip_dual"):
            out[f"mask/{ev}_frac"] = float((rm * t.to(f)).sum()) / n
    clipped = torch.zeros_like(rm)
    if m.clipped_weight is not None:
        clipped = m.clipped_weight.to(f)
    for event, value in m.clipped_bounds or ():
        clipped = torch.where(event, torch.full_like(rm, value), clipped)
    peer_w = torch.where(m.keep, weight.to(f), clipped)
    if est.denominator.PEER_LOGP_VALUE:
        peer_w = peer_w * logp
    peer = -adv * peer_w
    if ctx.loss_weights is not None:
        peer = peer * ctx.loss_weights.to(f)[:, None]
    out["pg_loss_peer"] = float(est.aggregation(peer, rm, norm))
    lr = (logp - old).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(lr)
    out["ratio_mean"] = float((rm * ratio).sum()) / n
    big = torch.finfo(ctx.logp.dtype).max
    out["ratio_max"] = float(ratio[valid].max()) if valid.any() else -big
    out["ratio_min"] = float(ratio[valid].min()) if valid.any() else big
    out["kl_old"] = float((rm * (torch.expm1(lr) - lr)).sum()) / n
    if ctx.ref_logp is not None:
        lref = (ctx.ref_logp.to(f) - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        out["kl_ref"] = float((rm * (torch.expm1(lref) - lref)).sum()) / n
    if "is_weight" in ctx.rows:
        out["is_weight_mean"] = float((rm * ctx.rows["is_weight"].to(f)).sum()) / n
    out["adv_mean"] = float((rm * adv).sum()) / n
    out["adv_abs_mean"] = float((rm * adv.abs()).sum()) / n
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("empty", [False, True])
@pytest.mark.parametrize("with_extras", [False, True])
@pytest.mark.parametrize("name", list(COMBOS))
def test_fused_diagnostics_equal_the_straightforward_formulas(name, dtype, empty, with_extras):
    est = COMBOS[name]()
    batch, logp, ent = case(dtype, seed=len(name), empty=empty, with_extras=with_extras)
    ctx = TokenContext.from_batch(batch, logp, entropy=ent)
    norm = Normalizer.of(batch.response_mask)
    _, m, weight = est.per_token(ctx)
    with torch.no_grad():
        got = {k: float(d.value) for k, d in est._diagnostics(ctx, m, weight, norm).items()}
    want = straightforward(est, ctx, m, weight, norm)
    assert set(got) == set(want)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for k, v in want.items():
        if k in ("ratio_max", "ratio_min"):  # extremes are exact, the empty sentinel included
            assert got[k] == pytest.approx(v, rel=tol, abs=0), k
        else:
            assert got[k] == pytest.approx(v, rel=tol, abs=tol), k
    if not empty:
        assert want["mask_frac"] > 0 or name in ("cispo",)  # the far row makes clips act


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("empty", [False, True])
@pytest.mark.parametrize("with_extras", [False, True])
@pytest.mark.parametrize("name", list(COMBOS))
def test_peer_loss_from_the_aggregated_loss_equals_the_straightforward_formula(name, dtype, empty, with_extras):
    """``policy_loss`` passes the aggregated loss (without an IS weight), and the peer value is
    then that plus a correction over the clipped tokens: the same value as the plain formula."""
    est = COMBOS[name]()
    batch, logp, ent = case(dtype, seed=len(name), empty=empty, with_extras=with_extras)
    ctx = TokenContext.from_batch(batch, logp, entropy=ent)
    norm = Normalizer.of(batch.response_mask)
    loss_mat, m, weight = est.per_token(ctx)
    if ctx.loss_weights is not None:
        loss_mat = loss_mat * ctx.loss_weights[:, None]
    with torch.no_grad():
        pg_loss = est.aggregation(loss_mat, ctx.response_mask, norm)
        got = float(est._diagnostics(ctx, m, weight, norm, pg_loss=pg_loss)["pg_loss_peer"].value)
    want = straightforward(est, ctx, m, weight, norm)["pg_loss_peer"]
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert got == pytest.approx(want, rel=tol, abs=tol)
    if not empty and m.clipped_bounds:  # the correction acts: the peer value is not the loss
        assert got != pytest.approx(float(pg_loss), rel=1e-3, abs=1e-6)


PARTITION_MASKS = {
    "ppo": lambda: PPOClip(0.2),
    "ppo_zero_eps_dual": lambda: PPOClip(0.0, 0.0, dual_clip=1.5),
    "clip_higher": lambda: registry.build("mask", "clip_higher"),
    "seq_clip": lambda: SequenceClip(),
    "seq_clip_cap": lambda: SequenceClip(max_log_ratio=0.1),
    "adaptive": lambda: AdaptiveClip(dual_clip=1.2),
}


@pytest.mark.parametrize("empty", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(PARTITION_MASKS))
def test_masks_declaring_events_partition_keep_it(name, seed, empty):
    """``events_partition`` lets the diagnostics skip the valid mask and read ``mask_frac`` off the
    event counts: each declaring mask's events are disjoint valid tokens whose union is ~keep."""
    batch, logp, ent = case(torch.float32, seed=seed, empty=empty, with_extras=False)
    ctx = TokenContext.from_batch(batch, logp, entropy=ent)
    m = PARTITION_MASKS[name]()(ctx)
    assert m.events_partition
    valid = batch.response_mask > 0
    union = torch.zeros_like(valid)
    for t in {id(t): t for t in m.events.values()}.values():
        assert not (t & ~valid).any()
        assert not (t & union).any()
        union |= t
    assert torch.equal(~m.keep & valid, union)
    assert torch.equal(m.keep | valid, torch.ones_like(valid))  # padding is kept


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("with_extras", [False, True])
@pytest.mark.parametrize("name", ["ppo_dual", "clip_higher", "gspo"])
def test_events_partition_path_equals_the_general_one(name, dtype, with_extras):
    """The same diagnostics with the declared partition used and with it ignored."""
    est = COMBOS[name]()
    batch, logp, ent = case(dtype, seed=3, empty=False, with_extras=with_extras)
    ctx = TokenContext.from_batch(batch, logp, entropy=ent)
    norm = Normalizer.of(batch.response_mask)
    pg_loss, m, weight = est.surrogate_loss(ctx, norm)
    assert m.events_partition
    general = dataclasses.replace(m, events_partition=False)
    with torch.no_grad():
        got = {k: float(d.value) for k, d in est._diagnostics(ctx, m, weight, norm, pg_loss).items()}
        want = {k: float(d.value) for k, d in est._diagnostics(ctx, general, weight, norm, pg_loss).items()}
    assert list(got) == list(want)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=tol, abs=tol), k


def test_flags_of_returns_the_registered_flags_or_a_conversion():
    from ablate.upge.slots.base import MaskResult
    ev = torch.tensor([[True, False, True]])
    other = torch.tensor([[False, True, False]])
    fl = torch.tensor([[1.0, 0.0, 1.0]])
    m = MaskResult(keep=~(ev | other), events={"a": ev, "b": other}).with_flags([(ev, fl)])
    assert m.flags_of(ev, torch.float32) is fl  # the mask's own flags, no conversion
    got = m.flags_of(other, torch.float64)
    assert got.dtype == torch.float64 and torch.equal(got, other.to(torch.float64))
    assert m.flags_of(other, torch.float64) is got  # converted once
    stale = MaskResult(keep=~ev, events={"a": ev})
    stale._flags[(id(other), torch.float32)] = (ev, fl)  # an id reused by another tensor
    assert torch.equal(stale.flags_of(other, torch.float32), other.float())
