"""Advantage slot: peer equivalence (peer_semantics §8.1, §8.2), edge cases, config building.

Each test is named after the peer behaviour it reproduces. Batches are float32 (as in training);
references are float64 literals / numpy, compared at atol 1e-6.
"""

import math

import numpy as np
import pytest
import torch

from ablate.errors import ConfigError
from ablate.registry import build, load_variant, variant_names
from ablate.upge import functional as F
from ablate.upge.batch import RolloutBatch
from ablate.upge.slots import advantage as A

ATOL = 1e-6


def make_batch(rewards, lengths=None, group_ids=None, T=None, is_demo=None, components=None,
               dtype=torch.float32):
    B = len(rewards)
    lengths = [3] * B if lengths is None else lengths
    T = max(max(lengths), 1) if T is None else T
    m = torch.zeros(B, T, dtype=dtype)
    for i, L in enumerate(lengths):
        m[i, :L] = 1
    return RolloutBatch(
        input_ids=torch.zeros(B, 1, dtype=torch.long), attention_mask=torch.ones(B, 1), response_mask=m,
        old_logp=torch.zeros(B, T), rewards=torch.tensor(rewards, dtype=dtype),
        group_ids=torch.tensor([0] * B if group_ids is None else group_ids),
        is_demo=None if is_demo is None else torch.tensor(is_demo, dtype=torch.bool),
        reward_components=None if components is None else torch.tensor(components, dtype=dtype))


def seq(adv, batch):
    """Per-response value of a [B, T] advantage that must be constant over valid tokens, 0 on padding."""
    m = batch.response_mask.bool()
    assert adv.shape == batch.response_mask.shape
    assert torch.all(adv[~m] == 0), "advantage must be zero on padding"
    first = adv[:, :1].expand_as(adv)
    assert torch.allclose(adv[m], first[m]), "outcome advantage must be constant over a response"
    return adv[:, 0].double().numpy()


def close(actual, expected, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               atol=atol, rtol=0)


G1 = make_batch([1, 0, 0, 0], lengths=[2, 4, 3, 1])  # §8.1
G2 = make_batch([1, 0, 0, 0, 1, 1, 1, 0], lengths=[2, 4, 3, 1, 5, 2, 2, 4],
                group_ids=[0, 0, 0, 0, 1, 1, 1, 1])  # §8.2


# ------------------------------------------------------------------------------------------------
# §8.1 one group r = [1, 0, 0, 0]
# ------------------------------------------------------------------------------------------------

def test_grpo_matches_verl_2026_08():
    close(seq(A.GroupZScore()(G1), G1), [1.499997, -0.499999, -0.499999, -0.499999])


def test_grpo_matches_trl_1_10_scale_rewards_group():
    adv = build("advantage", load_variant("advantage", "group_zscore_trl"))(G1)
    close(seq(adv, G1), [1.4997001, -0.4999, -0.4999, -0.4999])


def test_grpo_matches_openrlhf_0_11_group_norm():
    adv = build("advantage", load_variant("advantage", "group_zscore_openrlhf"))(G1)
    close(seq(adv, G1), [1.5, -0.5, -0.5, -0.5])


def test_grpo_population_std_variant_matches_naive_np_std():
    close(seq(A.GroupZScore(unbiased=False)(G1), G1), [1.7320468, -0.5773489, -0.5773489, -0.5773489])


def test_grpo_var_eps_placement_divides_by_sqrt_var_plus_eps():
    adv = A.GroupZScore(eps=1e-2, eps_placement="var")(G1)
    close(seq(adv, G1), np.array([0.75, -0.25, -0.25, -0.25]) / math.sqrt(0.25 + 1e-2))


def test_dr_grpo_matches_verl_trl_openrlhf():
    close(seq(A.GroupCentered()(G1), G1), [0.75, -0.25, -0.25, -0.25])


def test_rloo_matches_verl_trl_openrlhf():
    for s in ("raw", "zero"):
        close(seq(A.LeaveOneOut(singleton=s)(G1), G1), [1.0, -1 / 3, -1 / 3, -1 / 3])


def test_opo_matches_verl_with_lengths_2_4_3_1():
    close(seq(A.LengthWeightedBaseline()(G1), G1), [0.8, -0.2, -0.2, -0.2])


# ------------------------------------------------------------------------------------------------
# §8.2 two groups r = [1,0,0,0 | 1,1,1,0], lengths [2,4,3,1 | 5,2,2,4]
# ------------------------------------------------------------------------------------------------

def test_batch_zscore_matches_trl_scale_rewards_batch():
    close(seq(A.BatchZScore()(G2), G2),
          [1.4028591, -0.4676197, -0.4676197, -0.4676197, 0.4676197, 0.4676197, 0.4676197, -1.4028591])


def test_reinforce_pp_baseline_matches_verl_2026_08():
    close(seq(A.ReinforcePlusPlusBaseline()(G2), G2),
          [1.8048292, -0.4390125, -0.4390125, -0.4390125, 0.6829083, 0.6829083, 0.6829083, -1.5609334])


def test_reinforce_baseline_matches_openrlhf_0_11_and_bessel_gap():
    ours = seq(build("advantage", load_variant("advantage", "reinforce_pp_baseline_openrlhf"))(G2), G2)
    close(ours, [1.8453923, -0.4488792, -0.4488792, -0.4488792, 0.6982565, 0.6982565, 0.6982565, -1.5960149])
    verl = seq(A.ReinforcePlusPlusBaseline()(G2), G2)
    close(ours / verl, np.full(8, math.sqrt(23 / 22)), atol=1e-5)


def test_reinforce_pp_matches_verl_2026_08():
    close(seq(A.ReinforcePlusPlus()(G2), G2),
          [1.0215078, -0.9363822, -0.9363822, -0.9363822, 1.0215078, 1.0215078, 1.0215078, -0.9363822])


def test_gpg_matches_verl_2026_08():
    """verl's port (alpha="verl"; the default became the authors' α in issue 18)."""
    close(seq(A.GPG(alpha="verl")(G2), G2), [1.5, -0.5, -0.5, -0.5, 0.5, 0.5, 0.5, -1.5])
    assert A.GPG(alpha="verl").alpha(G2) == 2.0
    close(seq(A.GPG(f_norm=2.0, alpha="verl")(G2), G2), [0.75, -0.25, -0.25, -0.25, 0.25, 0.25, 0.25, -0.75])


def test_gpg_authors_alpha_counts_samples_in_all_equal_groups():
    """AMAP-ML/GPG gpg_trainer.py: α = 1/inverse_alpha = B/(B − M), M = samples of std-0 groups."""
    assert A.GPG().alpha(G2) == 1.0  # no all-equal group
    b = make_batch([1, 0, 1, 1, 0, 0], group_ids=[0, 0, 1, 1, 2, 2])
    assert A.GPG().alpha(b) == 3.0 and A.GPG(alpha="verl").alpha(b) == 2.0
    close(seq(A.GPG()(b), b), [1.5, -1.5, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match="alpha"):
        A.GPG(alpha="paper")


def test_gpg_alpha_is_one_when_no_reward_is_nonzero():
    b = make_batch([0, 0, 0, 0], group_ids=[0, 0, 1, 1])
    for mode in ("authors", "verl"):
        assert A.GPG(alpha=mode).alpha(b) == 1.0
        assert A.GPG(alpha=mode)(b).abs().max().item() == 0.0


def test_reinforce_pp_discounted_returns_match_verl_loop_with_gamma():
    b = make_batch([1.0, 0.0, 2.0], lengths=[3, 2, 4], group_ids=[0, 0, 1])
    gamma = 0.9
    r = np.zeros((3, 4))
    for i, (R, L) in enumerate(zip([1.0, 0.0, 2.0], [3, 2, 4])):
        for t in range(L):
            r[i, t] = R * gamma ** (L - 1 - t)
    m = b.response_mask.double().numpy()
    v = r[m == 1]
    ref = np.where(m == 1, (r - v.mean()) / np.sqrt(v.var(ddof=1) + 1e-8), 0.0)
    close(A.ReinforcePlusPlus(gamma=gamma)(b).double().numpy(), ref)


# ------------------------------------------------------------------------------------------------
# GDPO, BNPO, Sign, Constant
# ------------------------------------------------------------------------------------------------

COMP = [[1, 0], [0, 1], [0, 0], [1, 1], [1, 0.5], [0, 0.5], [1, 1], [np.nan, 0.25]]
GIDS = [0, 0, 0, 0, 1, 1, 1, 1]
LENS = [2, 4, 3, 1, 5, 2, 2, 4]


def _np_group_z(x, ids, eps, ddof=1):
    out = np.zeros(len(x))
    for g in set(ids):
        idx = [i for i in range(len(x)) if ids[i] == g and not np.isnan(x[i])]
        v = x[idx]
        out[idx] = (v - v.mean()) / (v.std(ddof=ddof) + eps)
    return out


def test_gdpo_matches_verl_decoupled_zscore_then_token_whitening():
    b = make_batch([0.0] * 8, lengths=LENS, group_ids=GIDS, components=COMP)
    comp = np.array(COMP, dtype=np.float64)
    w = [1.0, 0.5]
    a = sum(wk * _np_group_z(comp[:, k], GIDS, 1e-6) for k, wk in enumerate(w))
    tok = np.repeat(a[:, None], 5, 1)
    m = b.response_mask.double().numpy()
    v = tok[m == 1]
    ref = (a - v.mean()) / np.sqrt(v.var(ddof=1) + 1e-8)
    close(seq(A.DecoupledMultiReward(weights=w)(b), b), ref)


def test_gdpo_matches_trl_1_10_normalize_then_sum():
    b = make_batch([0.0] * 8, lengths=LENS, group_ids=GIDS, components=COMP)
    comp = np.array(COMP, dtype=np.float64)
    a = _np_group_z(comp[:, 0], GIDS, 1e-4) + _np_group_z(comp[:, 1], GIDS, 1e-4)
    ref = (a - a.mean()) / (a.std(ddof=1) + 1e-4)
    close(seq(build("advantage", load_variant("advantage", "gdpo_trl"))(b), b), ref)


def test_gdpo_without_reward_components_names_the_field():
    with pytest.raises(ValueError, match=r"batch\.reward_components is None"):
        A.DecoupledMultiReward()(G2)
    b = make_batch([0.0] * 8, group_ids=GIDS, components=COMP)
    with pytest.raises(ConfigError, match=r"DecoupledMultiReward\.weights: 3 weights for 2 reward components"):
        A.DecoupledMultiReward(weights=[1, 1, 1])(b)


def _official_bnpo(r, ids):
    """Transcription of changyi7231/BNPO compute_bnpo_outcome_advantage (rewards already in [0, 1])."""
    from scipy.stats import beta as beta_dist
    groups = {}
    for i, g in enumerate(ids):
        groups.setdefault(g, []).append(r[i])
    mean = {g: (np.mean(v) if len(v) > 1 else 0.0) for g, v in groups.items()}
    p_all = np.array(list(mean.values()))
    m, v = p_all.mean(), p_all.var(ddof=1)
    a = (m * (1 - m) / v - 1) * m
    b = (m * (1 - m) / v - 1) * (1 - m)
    al, be = max(1 + a / 3, 1.0), max(1 + b / 3, 1.0)
    out = []
    for i, g in enumerate(ids):
        p = mean[g]
        wgt = min(1 / beta_dist.pdf(p, al, be), 1e6)
        out.append(wgt * (r[i] - p))
    return np.array(out), (al, be)


def test_bnpo_matches_official_code_with_method_of_moments_fit():
    r = [1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 0, 0, 0, 1]
    ids = [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    b = make_batch(r, group_ids=ids)
    ref, (al, be) = _official_bnpo(np.array(r, dtype=np.float64), ids)
    est = A.BetaNormalized()
    assert est.alpha_beta(b) == pytest.approx((al, be), abs=1e-12)
    close(seq(est(b), b), ref, atol=1e-5)


def test_bnpo_alpha_beta_one_is_reinforce_with_mean_baseline():
    close(seq(A.BetaNormalized(alpha=1.0, beta=1.0)(G2), G2), seq(A.GroupCentered()(G2), G2))


def test_bnpo_alpha_beta_three_halves_is_grpo_with_bernoulli_std():
    bnpo = seq(A.BetaNormalized(alpha=1.5, beta=1.5)(G2), G2)
    grpo_pop = seq(A.GroupZScore(unbiased=False, eps=0.0)(G2), G2)
    close(bnpo, grpo_pop * math.pi / 8)


def test_bnpo_fit_falls_back_to_reinforce_with_one_prompt_or_equal_rates():
    assert A.BetaNormalized().alpha_beta(G1) == (1.0, 1.0)
    b = make_batch([1, 0, 1, 0], group_ids=[0, 0, 1, 1])
    assert A.BetaNormalized().alpha_beta(b) == (1.0, 1.0)
    assert A.beta_params_from_success_rates(torch.tensor([0.25, 0.75])) == pytest.approx((7 / 6, 7 / 6))


def test_sign_is_reinforce_plus_minus_one_of_upge_table_1():
    b = make_batch([1.0, 0.0, 0.5, 0.7, float("nan")])
    assert seq(A.Sign()(b), b).tolist() == [1, -1, -1, 1, 0]


def test_constant_is_sft_one_on_valid_tokens():
    b = make_batch([float("nan"), 0.0], lengths=[2, 0], T=3)
    assert A.Constant()(b).tolist() == [[1, 1, 0], [0, 0, 0]]
    assert A.Constant(value=0.5)(b).sum().item() == 1.0


# ------------------------------------------------------------------------------------------------
# edge cases
# ------------------------------------------------------------------------------------------------

GROUP_BASELINES = [A.GroupZScore(), A.GroupZScore(singleton="zero"), A.GroupCentered(), A.LeaveOneOut(),
                   A.LeaveOneOut(singleton="zero"), A.LengthWeightedBaseline(), A.GPG(), A.BatchZScore(),
                   A.BetaNormalized(), A.BetaNormalized(alpha=1.5, beta=1.5)]


@pytest.mark.parametrize("est", GROUP_BASELINES, ids=repr)
def test_all_equal_groups_give_zero_everywhere_verl_trl_openrlhf(est):
    b = make_batch([0.1, 0.1, 0.1, 1, 1, 0.7, 0.3, 0.0], lengths=[3, 2, 1, 3, 3, 2, 2, 1],
                   group_ids=[4, 4, 4, 9, 9, 2, 2, 2])
    a = seq(est(b), b)
    assert np.all(a[:5] == 0.0), a
    assert np.any(a[5:] != 0.0)
    frac = F.zero_advantage_group_fraction(est(b), b.group_ids, b.response_mask)
    assert frac.item() == pytest.approx(2 / 3)


def test_reinforce_pp_baseline_all_equal_group_is_shifted_by_batch_mean_like_verl():
    b = make_batch([1, 1, 1, 0, 0], lengths=[3, 3, 3, 3, 1], group_ids=[0, 0, 0, 1, 1])
    a = seq(A.ReinforcePlusPlusBaseline()(b), b)
    assert a[0] == a[1] == a[2] == a[3] == a[4] == 0.0  # centred 0 everywhere ⇒ whitening of zeros
    b = make_batch([1, 1, 1, 0, 1], lengths=[3, 3, 3, 3, 1], group_ids=[0, 0, 0, 1, 1])
    a = seq(A.ReinforcePlusPlusBaseline()(b), b)
    centred = np.array([0, 0, 0, -0.5, 0.5])
    tok = np.repeat(centred, [3, 3, 3, 3, 1])
    close(a, (centred - tok.mean()) / np.sqrt(tok.var(ddof=1) + 1e-8))
    assert a[0] != 0.0


@pytest.mark.parametrize("cls,raw_expected", [
    (A.GroupZScore, 2.0 / (1 + 1e-6)),  # verl grpo: mean 0, std 1 ⇒ ≈ raw score
    (A.GroupCentered, 2.0),
    (A.LeaveOneOut, 2.0),  # verl rloo keeps the raw score (rloo_vectorized / TRL give 0)
    (A.LengthWeightedBaseline, 2.0),  # verl opo: baseline 0
    (A.GPG, 2.0 * 3 / 3),  # α = 3 rows / 3 nonzero
])
def test_singleton_group_raw_is_verl_and_zero_is_trl(cls, raw_expected):
    b = make_batch([2.0, 1.0, 3.0], group_ids=[5, 1, 1])
    raw = seq(cls(singleton="raw")(b), b)
    zero = seq(cls(singleton="zero")(b), b)
    assert raw[0] == pytest.approx(raw_expected, abs=ATOL)
    assert zero[0] == 0.0
    close(raw[1:], zero[1:])


def test_singleton_in_batch_zscore_and_bnpo():
    b = make_batch([2.0, 1.0, 3.0], group_ids=[5, 1, 1])
    assert seq(A.BatchZScore()(b), b)[0] == 0.0  # TRL: r − mean of itself
    std = np.std([2.0, 1.0, 3.0], ddof=1)
    assert seq(A.BatchZScore(singleton="raw")(b), b)[0] == pytest.approx(2.0 / (std + 1e-4), abs=ATOL)
    bb = make_batch([1.0, 1.0, 0.0], group_ids=[5, 1, 1])
    assert seq(A.BetaNormalized(singleton="zero")(bb), bb)[0] == 0.0
    assert seq(A.BetaNormalized(alpha=1, beta=1)(bb), bb)[0] == pytest.approx(1.0)  # official: p̂ = 0


ALL_ESTIMATORS = GROUP_BASELINES + [A.Sign(), A.ReinforcePlusPlus(), A.ReinforcePlusPlus(gamma=0.8),
                                    A.ReinforcePlusPlusBaseline(), A.DecoupledMultiReward()]


@pytest.mark.parametrize("est", ALL_ESTIMATORS, ids=repr)
def test_non_contiguous_group_ids_are_permutation_equivariant(est):
    gen = torch.Generator().manual_seed(0)
    B = 12
    r = (torch.rand(B, generator=gen) < 0.5).float().tolist()
    comps = torch.rand(B, 2, generator=gen).tolist()
    lens = torch.randint(1, 6, (B,), generator=gen).tolist()
    ids = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    b = make_batch(r, lengths=lens, group_ids=[i * 17 for i in ids], components=comps)
    perm = torch.randperm(B, generator=gen)
    bp = b.select(perm)  # groups interleaved in the batch
    assert bp.group_ids.tolist() != sorted(bp.group_ids.tolist())
    close(est(bp).double().numpy(), est(b)[perm].double().numpy())


def test_grpo_vectorised_equals_naive_per_group_loop_on_random_data():
    gen = torch.Generator().manual_seed(5)
    B = 64
    ids = torch.randint(0, 10, (B,), generator=gen)
    r = torch.randn(B, generator=gen, dtype=torch.float64)
    b = make_batch(r.tolist(), group_ids=ids.tolist(), dtype=torch.float64)
    out = A.GroupZScore().per_response(b).numpy()
    ref = np.zeros(B)
    for g in ids.unique().tolist():
        idx = (ids == g).nonzero().flatten().numpy()
        v = r.numpy()[idx]
        ref[idx] = v / (1 + 1e-6) if len(v) == 1 else (v - v.mean()) / (v.std(ddof=1) + 1e-6)
    close(out, ref, atol=1e-12)


@pytest.mark.parametrize("est", ALL_ESTIMATORS, ids=repr)
def test_zero_length_responses_get_no_tokens_and_no_nan(est):
    b = make_batch([1, 0, 0, 1, 0, 1], lengths=[0, 3, 2, 0, 4, 1], group_ids=[0, 0, 0, 1, 1, 1],
                   components=[[1, 0], [0, 1], [0, 0], [1, 1], [0, 0], [1, 0]])
    a = est(b)
    assert torch.isfinite(a).all()
    assert a[0].abs().sum() == 0 and a[3].abs().sum() == 0


def test_zero_length_responses_count_in_group_stats_like_verl():
    b = make_batch([1, 0, 0, 0], lengths=[0, 2, 2, 2])
    close(seq(A.GroupZScore()(b), b)[1:], [-0.499999] * 3)


@pytest.mark.parametrize("est", [e for e in ALL_ESTIMATORS if not isinstance(e, A.DecoupledMultiReward)], ids=repr)
def test_nan_rewards_are_excluded_from_statistics_and_get_zero_like_trl(est):
    r = [1, 0, float("nan"), 0, 1, 1, float("nan"), 0]
    lens = [2, 4, 3, 1, 5, 2, 2, 4]
    b = make_batch(r, lengths=lens, group_ids=GIDS)
    keep = [i for i in range(8) if not math.isnan(r[i])]
    ref = make_batch([r[i] for i in keep], lengths=[lens[i] for i in keep], group_ids=[GIDS[i] for i in keep],
                     T=5)
    a = est(b)
    assert torch.isfinite(a).all()
    assert a[2].abs().sum() == 0 and a[6].abs().sum() == 0
    close(a[keep].double().numpy(), est(ref).double().numpy())


def test_gdpo_nan_component_is_excluded_per_component_like_trl_nansum():
    b = make_batch([0.0] * 8, lengths=LENS, group_ids=GIDS, components=COMP)
    a_k = A.DecoupledMultiReward().per_component(b).numpy()
    assert a_k[7, 0] == 0.0 and a_k[7, 1] != 0.0
    close(a_k[4:7, 0], _np_group_z(np.array([1, 0, 1.0]), [1, 1, 1], 1e-6))


# demos: group [on, on, on, demo], rewards [0, 0, 1 | demo 1]
DEMO = make_batch([0, 0, 1, 1], group_ids=[3, 3, 3, 3], is_demo=[False, False, False, True])


def test_demos_in_statistics_like_luffy_srft_on_union_off():
    a = seq(A.GroupZScore(include_demos=True)(DEMO), DEMO)
    sd = np.std([0, 0, 1, 1], ddof=1)  # mean 0.5 over on ∪ off
    close(a, [-0.5 / (sd + 1e-6)] * 2 + [0.5 / (sd + 1e-6)] * 2)


def test_demos_out_of_statistics_like_hpt_split_on_policy_only():
    a = seq(A.GroupZScore(include_demos=False)(DEMO), DEMO)
    mu, sd = 1 / 3, np.std([0, 0, 1], ddof=1)
    close(a, [(0 - mu) / (sd + 1e-6)] * 2 + [(1 - mu) / (sd + 1e-6)] * 2)  # the demo uses on-policy stats
    c = seq(A.GroupCentered(include_demos=False)(DEMO), DEMO)
    close(c, [-1 / 3, -1 / 3, 2 / 3, 2 / 3])
    loo = seq(A.LeaveOneOut(include_demos=False)(DEMO), DEMO)
    close(loo, [-0.5, -0.5, 1.0, 2 / 3])  # the demo's baseline is the mean of all on-policy rows


def test_hpt_zero_std_one_when_all_on_policy_rollouts_fail():
    b = make_batch([0, 0, 0, 1], group_ids=[1, 1, 1, 1], is_demo=[False, False, False, True])
    a = seq(build("advantage", load_variant("advantage", "group_zscore_onpolicy"))(b), b)
    close(a, [0, 0, 0, 1.0 / (1 + 1e-6)])
    assert seq(A.GroupZScore(include_demos=False)(b), b)[3] == pytest.approx(1e6, rel=1e-6)  # verl ε


def test_output_dtype_follows_batch_and_values_broadcast_over_valid_tokens():
    b = make_batch([1, 0], lengths=[2, 3], T=4)
    a = A.GroupZScore()(b)
    assert a.dtype == torch.float32
    assert a.tolist()[0][2:] == [0, 0] and a[1, 3] == 0
    b64 = make_batch([1, 0], lengths=[2, 3], T=4, dtype=torch.float64)
    assert A.GroupZScore()(b64).dtype == torch.float64


# ------------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------------

EXPECTED_VARIANTS = {"constant", "sign", "group_zscore", "group_zscore_trl", "group_zscore_openrlhf",
                     "group_centered", "rloo", "reinforce_pp", "reinforce_pp_baseline", "opo", "gpg",
                     "batch_zscore", "bnpo", "gdpo"}


def test_every_advantage_yaml_builds_and_runs():
    names = variant_names("advantage")
    assert EXPECTED_VARIANTS <= set(names)
    b = make_batch([1, 0, 0, 1], group_ids=[0, 0, 1, 1], components=[[1, 0], [0, 1], [0, 0], [1, 1]])
    # side data the trainer supplies when a variant declares it (KL in the reward, DCPO, D³S,
    # a critic's values for GAE, ReMax's greedy reward)
    from ablate.component import StepInfo
    b.ref_logp = torch.full_like(b.old_logp, -0.1)
    b.rows = {"old_logp@0.8": torch.full_like(b.old_logp, -0.2), "old_logp@1.2": torch.full_like(b.old_logp, -0.3),
              "meta": [{"d3s_advantage": 0.5, "remax_baseline": 0.0} for _ in range(4)],
              "values": torch.zeros_like(b.response_mask)}
    b.info = StepInfo(step=1, total_steps=2)
    for name in names:
        cfg = load_variant("advantage", name)
        assert cfg["_target_"].startswith("ablate.upge.slots.")
        est = build("advantage", cfg)
        assert isinstance(est, A.Advantage)
        a = est(b)
        assert a.shape == b.response_mask.shape and torch.isfinite(a).all(), name


@pytest.mark.parametrize("cls,param,bad,allowed", [
    ("GroupZScore", "singleton", "verl", "raw, zero"),
    ("GroupZScore", "eps_placement", "inside", "max, std, var"),
    ("LeaveOneOut", "singleton", "keep", "raw, zero"),
    ("ReinforcePlusPlusBaseline", "eps_placement", "rsqrt", "max, std, var"),
    ("DecoupledMultiReward", "whiten", "global", "none, sequence, token"),
])
def test_bad_choice_raises_one_line_error_naming_parameter_and_allowed_values(cls, param, bad, allowed):
    cfg = {"_target_": f"ablate.upge.slots.advantage.{cls}", param: bad}
    with pytest.raises(ConfigError) as e:
        build("advantage", cfg)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"{cls}.{param}" in msg and repr(bad) in msg and f"allowed: {allowed}" in msg


def test_unknown_parameter_is_rejected_by_the_registry():
    with pytest.raises(ConfigError, match="epsilon"):
        build("advantage", {"_target_": "ablate.upge.slots.advantage.GroupZScore", "epsilon": 1e-6})
