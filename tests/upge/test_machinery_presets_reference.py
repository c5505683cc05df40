"""The presets that need machinery outside the loss (critic, greedy baseline, per-prompt budgets,
rephrasing, filtering) against independent float64 references (tests/upge/reference_machinery.py).

Each preset is composed as ``ablate train method=<name>`` composes it and built with
``build_algorithm``; the batch is what the trainer hands the advantage slot: the critic's values
in ``rows["values"]`` (random here), ``rows["truncated"]``, the ReMax stage's greedy rewards in
``rows["meta"]``. Group sizes vary within a batch (the budget stages make them so): sizes
(1, 3, 5, 2) with a singleton, a mixed, an all-equal and a two-row group, right padding with one
zero-length and one full-length row. The stages themselves are tested in tests/test_machinery.py.
"""

from __future__ import annotations

import pytest
import torch

from tests.upge import reference_machinery as refm
from tests.upge.reference_losses import D, Case, token_case
from tests.upge.test_presets_reference import T, algorithm, assert_same, make_case, to_batch

SIZES = ((1, 3, 5, 2), (4, 4, 4), (2, 6, 1, 1, 3))
REFERENCED = {"ppo", "pf_ppo", "apa", "t_ppo", "knapsack", "mmr1_vas", "remax", "repo"}


def var_case(sizes, seed: int = 0, spread: float = 0.45) -> Case:
    g = torch.Generator().manual_seed(77 + seed + 100 * len(sizes))
    rewards, gids = [], []
    for k, n in enumerate(sizes):
        if k == 2 % len(sizes) and n > 1:
            r = [1.0] * n  # all-equal group
        elif n > 1:
            r = [1.0, 0.0] + [float(x) for x in torch.randint(0, 2, (n - 2,), generator=g)]
        else:
            r = [float(torch.randint(0, 2, (1,), generator=g))]
        rewards += r
        gids += [k] * n
    B = len(rewards)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0], lengths[min(2, B - 1)] = T, 0
    return token_case(lengths, T, g, spread, rewards, gids, [False] * B, [1.0] * B)


def side_data(c: Case, seed: int = 0):
    g = torch.Generator().manual_seed(5 + seed)
    values = (torch.rand(c.B, T, generator=g, dtype=D) - 0.3) * c.mask
    truncated = [bool(int(c.mask[i].sum()) == T) for i in range(c.B)]
    baselines_by_group = {k: float(torch.randint(0, 2, (1,), generator=g)) for k in set(c.group_ids)}
    baselines = [baselines_by_group[k] for k in c.group_ids]
    return values, truncated, baselines


def grad_of(method: str, c: Case, values=None, truncated=None, baselines=None, *overrides) -> torch.Tensor:
    algo = algorithm(method, *overrides)
    batch = to_batch(c)
    if values is not None:
        batch.rows["values"] = values.to(torch.float32)
    if truncated is not None:
        batch.rows["truncated"] = torch.tensor(truncated)
    if baselines is not None:
        batch.rows["meta"] = [{"remax_baseline": b} for b in baselines]
    logp = c.logp.detach().clone().requires_grad_(True)
    out = algo.objective.batch_loss(batch, logp)
    assert torch.isfinite(out.loss)
    (gr,) = torch.autograd.grad(out.loss, logp)
    return gr


def ref_grad(fn, c: Case, **kw) -> torch.Tensor:
    logp = c.logp.detach().clone().requires_grad_(True)
    (gr,) = torch.autograd.grad(fn(logp, c, **kw), logp)
    assert gr.abs().sum() > 0
    return gr


# the critic's values travel as float32 (the value model's dtype): compare at float32 precision
TOL32 = dict(rtol=1e-5, atol=1e-6)


def as_f32(v: torch.Tensor) -> torch.Tensor:
    return v.to(torch.float32).to(D)


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("method", ["ppo", "pf_ppo"])
def test_ppo_gradient_matches_verl_gae_with_critic(method, sizes):
    """PPO (and PF-PPO's loss, its filter being a stage): whitened GAE(γ=1, λ=0.95) on V, clip 0.2,
    token-mean — verl compute_gae_advantage_return + masked_whiten + vanilla policy loss."""
    c = var_case(sizes)
    values, _, _ = side_data(c)
    got = grad_of(method, c, values=values)
    torch.testing.assert_close(got, ref_grad(refm.ppo_critic_loss, c, values=as_f32(values)), **TOL32)


def test_ppo_gradient_on_the_shared_fixed_group_cases():
    for G in (2, 4, 8):
        c = make_case(G)
        values, _, _ = side_data(c, seed=G)
        torch.testing.assert_close(grad_of("ppo", c, values=values),
                                   ref_grad(refm.ppo_critic_loss, c, values=as_f32(values)), **TOL32)


def test_ppo_kl_in_reward_option_changes_the_gradient_as_the_reference():
    """advantage.kl_coef=β: token reward r_t − β(log π_old − log π_ref) (verl use_kl_in_reward, k1)."""
    c = var_case(SIZES[0])
    values, _, _ = side_data(c)
    beta = 0.1
    algo = algorithm("ppo", f"advantage.kl_coef={beta}")
    assert algo.needs().ref_model and algo.needs().logp_before_advantage
    got = grad_of("ppo", c, values, None, None, f"advantage.kl_coef={beta}")

    def ref_loss(logp, c):
        from tests.upge.reference_losses import ppo_clip_loss, token_mean, whiten_tokens
        B = c.B
        A = torch.zeros(B, T, dtype=D)
        for i in range(B):
            L = int(c.mask[i].sum())
            v_next, a_next = 0.0, 0.0
            for t in reversed(range(L)):
                r_t = (c.rewards[i] if t == L - 1 else 0.0) - beta * float(c.old_logp[i, t] - c.ref_logp[i, t])
                v_t = float(as_f32(values)[i, t])
                a_next = r_t + v_next - v_t + 0.95 * a_next
                A[i, t] = a_next
                v_next = v_t
        return token_mean(ppo_clip_loss(logp, c.old_logp, whiten_tokens(A, c.mask), 0.2, 0.2), c)

    torch.testing.assert_close(got, ref_grad(ref_loss, c), **TOL32)
    assert not torch.allclose(got, grad_of("ppo", c, values=values))


@pytest.mark.parametrize("sizes", SIZES)
def test_t_ppo_gradient_matches_extended_gae_on_truncated_rows(sizes):
    c = var_case(sizes)
    values, truncated, _ = side_data(c)
    assert any(truncated)
    got = grad_of("t_ppo", c, values=values, truncated=truncated)
    want = ref_grad(refm.ppo_critic_loss, c, values=as_f32(values), bootstrap=truncated)
    torch.testing.assert_close(got, want, **TOL32)
    plain = ref_grad(refm.ppo_critic_loss, c, values=as_f32(values))
    assert not torch.allclose(want, plain)  # the bootstrap matters on this batch


@pytest.mark.parametrize("sizes", SIZES)
def test_apa_gradient_matches_squared_error_to_advantage_induced_target(sizes):
    c = var_case(sizes)
    values, _, _ = side_data(c)
    got = grad_of("apa", c, values=values)
    torch.testing.assert_close(got, ref_grad(refm.apa_loss, c, values=as_f32(values)), **TOL32)


@pytest.mark.parametrize("sizes", SIZES)
def test_remax_gradient_matches_reinforce_with_greedy_baseline(sizes):
    c = var_case(sizes)
    _, _, baselines = side_data(c)
    got = grad_of("remax", c, baselines=baselines)
    assert_same(got, ref_grad(refm.remax_loss, c, baselines=baselines))


@pytest.mark.parametrize("sizes", SIZES)
def test_knapsack_gradient_matches_grpo_with_dual_clip_on_variable_groups(sizes):
    from tests.upge.reference_losses import broadcast, grpo_advantages

    def dual_active(c):
        adv = broadcast(grpo_advantages(c.rewards, c.group_ids), c.mask)
        return int(((adv < 0) & (torch.exp(c.logp - c.old_logp) > 10) & (c.mask > 0)).sum()) > 0

    # |log ρ| up to 3: the first seed where the dual clip (ρ > 10, Â < 0) is active somewhere
    c = next(c for c in (var_case(sizes, seed=s, spread=3.0) for s in range(100)) if dual_active(c))
    got = grad_of("knapsack", c)
    assert_same(got, ref_grad(refm.knapsack_loss, c))
    assert not torch.allclose(got, grad_of("knapsack", c, None, None, None, "mask=clip_higher"))


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("method", ["mmr1_vas", "repo"])
def test_grpo_family_presets_match_grpo_without_kl_on_variable_groups(method, sizes):
    c = var_case(sizes)
    assert_same(grad_of(method, c), ref_grad(refm.grpo_nokl_loss, c))


def test_value_presets_need_a_critic_and_others_do_not():
    for m in ("ppo", "pf_ppo", "apa", "t_ppo"):
        a = algorithm(m)
        assert a.needs().values and a.critic is not None
    for m in ("grpo", "knapsack", "mmr1_vas", "remax", "repo"):
        a = algorithm(m)
        assert not a.needs().values and a.critic is None
    assert algorithm("remax").needs().generation and algorithm("repo").needs().generation
    assert algorithm("apa").needs().ref_model
