"""New presets (DPPO TV/KL, MinPRO, Reinforce-Rej, MiniRL, MHPO, BAPO, RiskPO, ADORA) and the
verl-faithful variants (dual clip c = 3, GSPO log-ratio clamp, DPPO IS cap) against the independent
float64 references of tests/upge/reference_methods.py.

Each preset is composed as ``ablate train method=<name>`` composes it and built like the trainer
builds it; its gradient w.r.t. the current log-probs on hand-made batches (G ∈ {2, 4, 8}; a mixed,
an all-equal and a random group; a singleton group where the method keeps one; right padding with a
zero-length and a full-length row) must equal the reference gradient.
"""

from __future__ import annotations

import math

import pytest
import torch

from ablate.config import compose_config
from ablate.errors import ConfigError
from ablate.train.components import build_algorithm
from tests.upge import reference_losses as rl
from tests.upge import reference_methods as ref
from tests.upge.reference_losses import D, Case
from tests.upge.test_presets_reference import (GS, TOL, ablate_grad, assert_same, case_where, make_case,
                                               preset_cfg, ref_grad, to_batch)

REFERENCED = {"dppo_tv", "dppo_kl", "minpro", "reinforce_rej", "minirl", "mhpo", "bapo", "riskpo", "adora"}


# ------------------------------------------------------------------------------------------------
# batches
# ------------------------------------------------------------------------------------------------

def with_singleton(c: Case, reward: float = 1.0, length: int = 3, seed: int = 7) -> Case:
    """``c`` plus one more prompt with a single response (its own group id)."""
    g = torch.Generator().manual_seed(seed)
    T = c.mask.shape[1]
    m = (torch.arange(T) < length).to(D)[None, :]
    lp = -(0.05 + 2.9 * torch.rand(1, T, generator=g, dtype=D))
    u = (2 * torch.rand(1, T, generator=g, dtype=D) - 1) * 0.45
    old = torch.where(m > 0, lp - u, torch.zeros_like(lp))
    refl = torch.where(m > 0, lp + (torch.rand(1, T, generator=g, dtype=D) - 0.5), torch.zeros_like(lp))
    return Case(logp=torch.cat([c.logp, lp]), old_logp=torch.cat([c.old_logp, old]),
                ref_logp=torch.cat([c.ref_logp, refl]), mask=torch.cat([c.mask, m]),
                rewards=c.rewards + [reward], group_ids=c.group_ids + [max(c.group_ids) + 1],
                is_demo=c.is_demo + [False], loss_weights=c.loss_weights + [1.0])


def full_case(G: int, seed: int = 0, **kw) -> Case:
    return with_singleton(make_case(G, seed, **kw))


def grpo_adv(c: Case) -> torch.Tensor:
    return rl.broadcast(rl.grpo_advantages(c.rewards, c.group_ids), c.mask)


# ------------------------------------------------------------------------------------------------
# DPPO
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,delta", [("tv", 0.15), ("kl", 0.05)])
@pytest.mark.parametrize("G", GS)
def test_dppo_gradient_matches_verl_dppo_example(G, kind, delta):
    """DPPO (verl compute_policy_loss_dppo_{tv,kl} with examples/dppo_trainer): −Â·sg(min(ρ, 10⁴))·log π
    on divergence-kept tokens, Â = r − mean_G, Σ_tokens/(G·L_max)."""
    def masks_some(c):
        adv = rl.broadcast(rl.centered_advantages(c.rewards, c.group_ids), c.mask)
        dropped = (c.mask > 0) & (adv != 0) & ~ref.dppo_valid(c, adv, kind, delta)
        return int(dropped.sum()) > 0

    c = with_singleton(case_where(masks_some, G, spread=0.8))
    constant = float(preset_cfg(f"dppo_{kind}").aggregation.constant)
    assert constant == float(preset_cfg(f"dppo_{kind}").rollout.max_new_tokens)  # pinned: the budget
    assert_same(ablate_grad(c, f"dppo_{kind}"),
                ref_grad(ref.dppo_loss, c, kind=kind, delta=delta, cap=10000.0, constant=constant))


def _with_large_ratios(c: Case, rho: float = 50.0) -> Case:
    """Tokens with p small enough that p − q stays within δ get ρ = rho (kept by the TV mask)."""
    adv = rl.broadcast(rl.centered_advantages(c.rewards, c.group_ids), c.mask)
    pick = (c.mask > 0) & (adv != 0) & (c.logp < -2.2)
    assert int(pick.sum()) >= 2
    c.old_logp = torch.where(pick, c.logp - math.log(rho), c.old_logp)
    return c


@pytest.mark.parametrize("G", GS)
def test_dppo_is_cap_follows_verl_example_c10000_not_fallback_20(G):
    """verl's DPPO example sets clip_ratio_c = 10000 (truncation effectively off): the dppo_tv preset
    keeps ρ = 50 as the weight; denominator=dppo_truncated gives verl's fallback C = 20."""
    c = _with_large_ratios(full_case(G))
    constant = float(preset_cfg("dppo_tv").aggregation.constant)
    kw = dict(kind="tv", delta=0.15, constant=constant)
    got = ablate_grad(c, "dppo_tv")
    assert_same(got, ref_grad(ref.dppo_loss, c, cap=10000.0, **kw))
    capped = ablate_grad(c, "dppo_tv", "denominator=dppo_truncated")
    assert_same(capped, ref_grad(ref.dppo_loss, c, cap=20.0, **kw))
    assert (got - capped).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------------
# MinPRO, MiniRL, MHPO
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("G", GS)
def test_minpro_gradient_matches_prefix_min_weight_inside_ppo_clip(G):
    """MinPRO (abstract reading): −M·sg(min_{j≤t} ρ_j)·Â·∇log π, M = PPO clip ε 0.2 on the token ratio,
    group z-score, seq-mean-token-mean."""
    c = full_case(G)
    assert_same(ablate_grad(c, "minpro"), ref_grad(ref.minpro_loss, c))


@pytest.mark.parametrize("G", GS)
def test_minirl_gradient_matches_token_sum_ppo_clip(G):
    """MiniRL (digest reading): PPO clip ε 0.2, group z-score, 1/G Σ_i Σ_t (no length normalisation)."""
    c = full_case(G)
    assert_same(ablate_grad(c, "minirl"), ref_grad(ref.minirl_loss, c))


@pytest.mark.parametrize("G", GS)
def test_mhpo_gradient_matches_paper_exp_psi_minus_sg_zeta(G):
    """MHPO: −(1/K)Σ_i (1/T_i)Σ_t exp(ψ − sg ζ)·Â, ψ = 1.5·tanh(log r/1.5), ζ the Weibull hazards
    (1.5, 1.0) / (2.0, 0.8) of sg ψ; large ratios included (tanh saturation)."""
    c = full_case(G, spread=2.0)
    assert_same(ablate_grad(c, "mhpo"), ref_grad(ref.mhpo_loss, c))


def test_mhpo_denominator_follows_the_likelihood_c():
    c = full_case(4, spread=2.0)
    assert float(preset_cfg("mhpo", ("likelihood.c=0.5",)).denominator.c) == 0.5
    assert_same(ablate_grad(c, "mhpo", "likelihood.c=0.5"), ref_grad(ref.mhpo_loss, c, cc=0.5))


# ------------------------------------------------------------------------------------------------
# Reinforce-Rej
# ------------------------------------------------------------------------------------------------

def entropy_like(logp: torch.Tensor) -> torch.Tensor:
    """A differentiable per-token stand-in for the policy entropy (same function on both sides)."""
    return -logp * torch.exp(logp)


@pytest.mark.parametrize("G", GS)
def test_reinforce_rej_gradient_matches_minimal_rl_plusplus_with_kl_and_entropy(G):
    """Reinforce-Rej (Minimal-RL fork): Â = ±1, 0 for all-equal groups (they stay in the batch and
    count in every token-mean; a singleton keeps its sign), verl plusplus loss (clip 0.2, dual clip
    3), token-mean, + 0.001 k3 KL − 0.001 entropy."""
    c = case_where(_dual_active, G, spread=1.6)
    c = with_singleton(c)
    algo = algorithm_of("reinforce_rej")
    logp = c.logp.detach().clone().requires_grad_(True)
    h = entropy_like(logp)
    out = algo.objective.batch_loss(to_batch(c), logp, entropy=h.detach(), entropy_grad=h)
    (got,) = torch.autograd.grad(out.loss, logp)
    assert_same(got, ref_grad(ref.reinforce_rej_loss, c, entropy_fn=entropy_like))


def algorithm_of(method: str, *overrides: str):
    return build_algorithm(preset_cfg(method, tuple(overrides)))


# ------------------------------------------------------------------------------------------------
# BAPO
# ------------------------------------------------------------------------------------------------

def bapo_case(G: int) -> Case:
    def has_negatives(c):  # the search needs negative-advantage tokens (else Σpos/Σneg = inf)
        return int(((grpo_adv(c) < 0) & (c.mask > 0)).sum()) >= 3

    return with_singleton(case_where(has_negatives, G, spread=1.0))


@pytest.mark.parametrize("target", [0.5, 2.0, 50.0])
@pytest.mark.parametrize("G", GS)
def test_bapo_gradient_matches_released_bound_search_and_loss(G, target):
    """BAPO (recipe/bapo/policy_loss.py): bounds searched from (0.8, 1.2) until Σpos/Σneg ≥ target,
    then verl's clip on those ratio bounds plus dual clip 3, token-mean. Target 50 forces the search
    to move (checked)."""
    c = bapo_case(G)
    bounds = ref.bapo_bounds(c, grpo_adv(c), target=target)
    if target == 50.0:
        assert bounds != (0.8, 1.2)
    got = ablate_grad(c, "bapo", f"mask.target={target}")
    assert_same(got, ref_grad(ref.bapo_loss, c, target=target))


def test_bapo_bounds_reach_both_maxima_when_the_target_is_out_of_reach():
    from ablate.registry import build
    from ablate.upge.slots.base import TokenContext

    c = bapo_case(4)
    batch = to_batch(c)
    batch.advantages = grpo_adv(c)
    mask = build("mask", {"_target_": "ablate.upge.slots.mask.AdaptiveClip", "target": 1e9})
    lo, hi = mask.bounds(TokenContext.from_batch(batch, c.logp))
    assert (lo, hi) == ref.bapo_bounds(c, grpo_adv(c), target=1e9)
    assert math.isclose(lo, 0.95) and math.isclose(hi, 2.0)


# ------------------------------------------------------------------------------------------------
# RiskPO
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("G", GS)
def test_riskpo_gradient_matches_released_bundle_mixed_var(G):
    """RiskPO as released: one bundle of the batch's 3 prompts, Mixed-VaR (α 0.2, β 0.8, w 1.5) of
    the papers' summed rewards, std-normalised, sum-mean credit; verl vanilla loss (clip 0.2, dual
    clip 3), token-mean."""
    c = make_case(G, spread=1.5)
    assert any(a != 0 for a in ref.riskpo_advantages(c.rewards, c.group_ids))
    assert_same(ablate_grad(c, "riskpo"), ref_grad(ref.riskpo_loss, c))


@pytest.mark.parametrize("G", GS)
def test_riskpo_bundles_of_two_with_a_singleton_prompt(G):
    """bundle_size 2 over 4 prompts: bundles (mixed, all-equal) and (random, singleton); the second
    has one paper, so (as in the code) its quantiles equal its score and its advantage is 0;
    responses past the smallest group of a bundle get 0."""
    c = full_case(G, spread=1.5)
    adv = ref.riskpo_advantages(c.rewards, c.group_ids, bundle_size=2)
    assert all(adv[i] == 0 for i in range(2 * G, c.B))
    assert_same(ablate_grad(c, "riskpo", "advantage.bundle_size=2"), ref_grad(ref.riskpo_loss, c, bundle_size=2))


# ------------------------------------------------------------------------------------------------
# ADORA
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("G", GS)
def test_adora_gradient_matches_2025_code_length_advantage(G):
    """ADORA (compute_grpo_outcome_advantage_ADORA): z-score (singleton: raw reward), groups without
    the length advantage × 0.1; PPO clip 0.2, token-mean, + 0.001 k3 KL. Some groups are scaled,
    some not (checked)."""
    def both_kinds(c):
        lengths = [c.length(i) for i in range(c.B)]
        _, flags = ref.adora_advantages(c.rewards, c.group_ids, lengths)
        return True in flags[:-1] and False in flags

    c = case_where(lambda c: both_kinds(with_singleton(c)), G, n_groups=4)
    c = with_singleton(c)
    assert_same(ablate_grad(c, "adora"), ref_grad(ref.adora_loss, c))


# ------------------------------------------------------------------------------------------------
# verl-faithful variants (issue 9 item 9)
# ------------------------------------------------------------------------------------------------

def _verl_grpo(logp, c: Case) -> torch.Tensor:
    L = ref.verl_vanilla_tokens(logp, c.old_logp, grpo_adv(c), 0.2, 0.2, 3.0) + 0.04 * rl.k3_kl(logp, c.ref_logp)
    return rl.seq_mean_token_mean(L, c)


def _verl_dapo(logp, c: Case) -> torch.Tensor:
    return rl.token_mean(ref.verl_vanilla_tokens(logp, c.old_logp, grpo_adv(c), 0.2, 0.28, 3.0), c)


def _dual_active(c: Case) -> bool:
    ratio = torch.exp(c.logp - c.old_logp)
    return int(((c.mask > 0) & (grpo_adv(c) < 0) & (ratio > 3.0)).sum()) > 0


@pytest.mark.parametrize("G", GS)
def test_verl_vanilla_always_applies_dual_clip_3_grpo_and_dapo_presets_do_not(G):
    """verl compute_policy_loss_vanilla applies dual clip c = clip_ratio_c = 3 whenever A < 0: the
    grpo/dapo presets keep the papers' plain clip (gradient differs where A<0 ∧ ρ>3), and
    mask=ppo_clip_verl / clip_higher_verl reproduce verl exactly."""
    c = case_where(_dual_active, G, spread=1.6)
    for method, mask, fn, paper in (("grpo", "ppo_clip_verl", _verl_grpo, rl.grpo_loss),
                                    ("dapo", "clip_higher_verl", _verl_dapo, rl.dapo_loss)):
        want = ref_grad(fn, c)
        assert_same(ablate_grad(c, method, f"mask={mask}"), want)
        plain = ablate_grad(c, method)
        assert_same(plain, ref_grad(paper, c))
        assert (plain - want).abs().max() > 1e-6


def _free_negative_rows(c: Case) -> list:
    adv = rl.grpo_advantages(c.rewards, c.group_ids)
    out = []
    for k in c.nonempty_rows():
        L = c.length(k)
        s = math.exp(float((c.logp[k, :L] - c.old_logp[k, :L]).mean()))
        if adv[k] < 0 and s >= 1 - 3e-4:
            out.append(k)
    return out


def _gspo_case(G: int) -> tuple[Case, int]:
    """A GSPO batch where one A < 0 row has log s = 12 > 10 (verl's cap)."""
    def clipped_and_free(c):  # ≥ 1 clipped row, ≥ 1 free A<0 row and ≥ 1 other free row
        clipped, free = rl.gspo_clipped_rows(c)
        return clipped > 0 and free >= 2 and len(_free_negative_rows(c)) > 0

    c = case_where(clipped_and_free, G, gspo=True)
    i = _free_negative_rows(c)[0]
    c.old_logp[i] = torch.where(c.mask[i] > 0, c.logp[i] - 12.0, c.old_logp[i])
    return c, i


@pytest.mark.parametrize("G", GS)
def test_gspo_verl_clamp_caps_the_weight_and_zeroes_the_gradient(G):
    """verl compute_policy_loss_gspo: exp(clamp(sg(log s) + logp − sg(logp), max=10)) — beyond the
    cap the row has no gradient. mask=gspo_seq_clip_verl + denominator=gspo_sequence_verl reproduce
    it; the denominator alone (max_log_ratio = 10) caps only the weight: e^10·∇ stays."""
    c, i = _gspo_case(G)
    verl = ablate_grad(c, "gspo", "mask=gspo_seq_clip_verl", "denominator=gspo_sequence_verl")
    assert_same(verl, ref_grad(ref.gspo_verl_loss, c, zero_grad=True))
    assert float(verl[i].abs().max()) == 0.0
    weight_only = ablate_grad(c, "gspo", "denominator=gspo_sequence_verl")
    assert_same(weight_only, ref_grad(ref.gspo_verl_loss, c, zero_grad=False))
    assert float(weight_only[i].abs().max()) > 0.0
    trl = ablate_grad(c, "gspo")  # TRL: no cap at all (weight e^12)
    assert_same(trl, ref_grad(ref.gspo_verl_loss, c, cap=None))


# ------------------------------------------------------------------------------------------------
# bad input, and the comparison can fail
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override,field", [
    ("mask.low_max=0.5", "low_max"), ("advantage.alpha=0.9", "alpha"), ("likelihood.c=0", "c"),
    ("advantage.credit=mean", "credit")])
def test_bad_parameters_fail_with_one_line(override, field):
    method = {"mask": "bapo", "advantage": "riskpo", "likelihood": "mhpo"}[override.split(".")[0]]
    with pytest.raises(ConfigError) as e:
        build_algorithm(compose_config([f"method={method}", override]))
    assert field in str(e.value) and "\n" not in str(e.value)


def _adora_case() -> Case:
    def both_kinds(c):
        lengths = [c.length(i) for i in range(c.B)]
        adv, flags = ref.adora_advantages(c.rewards, c.group_ids, lengths)
        scaled = [i for i, a in enumerate(adv) if a != 0 and c.length(i) > 0]
        return True in flags and False in flags and len(scaled) > 0 and any(
            not f for f, rows in zip(flags, rl._groups(c.group_ids).values())
            if any(adv[i] != 0 and c.length(i) > 0 for i in rows))

    return case_where(both_kinds, 4, n_groups=4)


def _dppo_kl_case() -> Case:
    def kl_between(c):  # tokens the KL mask drops at δ 0.05 but keeps at 0.15
        adv = rl.broadcast(rl.centered_advantages(c.rewards, c.group_ids), c.mask)
        a = ref.dppo_valid(c, adv, "kl", 0.05)
        b = ref.dppo_valid(c, adv, "kl", 0.15)
        return int(((c.mask > 0) & (adv != 0) & (a != b)).sum()) > 0

    return case_where(kl_between, 4, spread=0.8)


PERTURBED = [  # (preset, overrides, reference, kwargs, case)
    ("mhpo", (), ref.mhpo_loss, {"k_neg": 1.5}, lambda: full_case(4, spread=2.0)),  # symmetric hazard
    ("riskpo", ("advantage.credit=uniform",), ref.riskpo_loss, {}, lambda: make_case(4, spread=1.5)),
    ("adora", ("advantage.lam=1.0",), ref.adora_loss, {}, _adora_case),
    ("bapo", ("mask.target=50.0",), ref.bapo_loss, {"target": 0.5}, lambda: bapo_case(4)),
    ("dppo_kl", ("mask.delta_low=0.15", "mask.delta_high=0.15"), ref.dppo_loss,
     {"kind": "kl", "delta": 0.05, "cap": 10000.0}, _dppo_kl_case),
]


@pytest.mark.parametrize("method,overrides,fn,kw,make", PERTURBED,
                         ids=[p[0] + "-" + ("+".join(p[1]) or "ref") for p in PERTURBED])
def test_perturbed_new_preset_differs_from_reference(method, overrides, fn, kw, make):
    c = make()
    if method.startswith("dppo"):
        kw = {**kw, "constant": float(preset_cfg(method).aggregation.constant)}
    got = ablate_grad(c, method, *overrides)
    want = ref_grad(fn, c, **kw)
    assert not torch.allclose(got, want, **TOL)
    assert (got - want).abs().max() > 1e-6
