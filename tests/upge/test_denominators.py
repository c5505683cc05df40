"""Denominator slot variants: the applied weight w = exp(log g − log π_ref) and its gradient w·∇log π."""

import math

import pytest
import torch

from ablate import registry
from ablate.errors import ConfigError
from ablate.upge.slots.base import TokenContext
from ablate.upge.slots.denominator import (Behaviour, ClippedRatio, CurrentPolicy, DemoSplit, GSPOSequence,
                                           PrefixMin, Unit)

D = torch.float64


def make_ctx(logp, old, mask=None, is_demo=None):
    logp = torch.as_tensor(logp, dtype=D).clone().requires_grad_(True)
    old = torch.as_tensor(old, dtype=D)
    mask = torch.ones_like(old) if mask is None else torch.as_tensor(mask, dtype=D)
    is_demo = torch.zeros(old.shape[0], dtype=torch.bool) if is_demo is None else torch.as_tensor(is_demo)
    return TokenContext(logp=logp, old_logp=old, advantages=torch.ones_like(old), response_mask=mask,
                        is_demo=is_demo)


def weight_and_grad(denom, ctx):
    """Value of the applied weight π_θ/π_ref and d(Σ weight)/d logp (identity likelihood)."""
    log_ref = denom(ctx)
    assert not log_ref.requires_grad
    w = torch.exp(ctx.logp - log_ref)
    (g,) = torch.autograd.grad(w.sum(), ctx.logp)
    return w.detach(), g


def rand_ctx(seed=0, B=3, T=6):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=D) * 3
    old = logp + 0.5 * torch.randn(B, T, generator=g, dtype=D)
    mask = torch.ones(B, T, dtype=D)
    mask[1, 4:] = 0
    return make_ctx(logp, old, mask)


def test_current_policy_gives_weight_one_and_score_gradient_like_reinforce():
    w, g = weight_and_grad(CurrentPolicy(), rand_ctx())
    assert torch.allclose(w, torch.ones_like(w)) and torch.allclose(g, torch.ones_like(g))


def test_behaviour_gives_ppo_ratio():
    ctx = rand_ctx()
    w, g = weight_and_grad(Behaviour(), ctx)
    rho = torch.exp(ctx.logp.detach() - ctx.old_logp)
    assert torch.allclose(w, rho) and torch.allclose(g, rho)


def test_unit_gives_weight_pi_and_gradient_of_pi_like_luffy_offline():
    ctx = rand_ctx()
    w, g = weight_and_grad(Unit(), ctx)
    p = ctx.logp.detach().exp()
    assert torch.allclose(w, p) and torch.allclose(g, p)  # d π / d log π = π


def test_gspo_sequence_ratio_and_gradient_match_peer_semantics_8_6():
    ctx = make_ctx([[-1.0, -2.0, -0.5]], [[-1.1, -1.9, -0.7]])
    assert torch.allclose(ctx.ratio, torch.tensor([[1.1051709, 0.9048374, 1.2214028]], dtype=D), atol=1e-7)
    log_ref = GSPOSequence()(ctx)
    w = torch.exp(ctx.logp - log_ref)
    assert torch.allclose(w, torch.full_like(w, 1.0689391), atol=1e-7)
    # verl gspo under seq-mean-token-mean: the row's loss is mean_t w = s, and ∂s/∂logp_t = s/T
    (g,) = torch.autograd.grad(w.mean(), ctx.logp)
    assert torch.allclose(g, torch.full_like(g, 1.0689391 / 3), atol=1e-7)
    # TRL RLOO / VESPO product ratio differs: exp(Σ log ρ)
    assert math.isclose(math.exp(ctx.log_ratio.sum().item()), 1.2214028, abs_tol=1e-7)


def test_gspo_sequence_ignores_padding_and_caps_log_ratio_like_verl():
    ctx = make_ctx([[-1.0, -2.0, -0.5, 5.0]], [[-1.1, -1.9, -0.7, -9.0]], mask=[[1, 1, 1, 0]])
    w, _ = weight_and_grad(GSPOSequence(), ctx)
    assert torch.allclose(w[0, :3], torch.full((3,), 1.0689391, dtype=D), atol=1e-7)
    big = make_ctx([[0.0, 0.0]], [[-30.0, -30.0]])  # token log-ratio clamped to 20 first, then capped at 10
    w2, _ = weight_and_grad(GSPOSequence(max_log_ratio=10.0), big)
    assert torch.allclose(w2, torch.full_like(w2, math.exp(10.0)))


def test_clipped_ratio_matches_verl_cispo_weight_2026_08():
    ctx = rand_ctx(1)
    w, g = weight_and_grad(ClippedRatio(0.2, 0.28), ctx)
    rho = torch.exp((ctx.logp.detach() - ctx.old_logp).clamp(-20, 20))
    ref = rho.clamp(0.8, 1.28)
    valid = ctx.response_mask > 0
    assert torch.allclose(w[valid], ref[valid]) and torch.allclose(g[valid], ref[valid])
    assert (ref != rho)[valid].any() and (ref == rho)[valid].any()


def test_clipped_ratio_max_ratio_matches_trl_cispo_epsilon_high_cap():
    rho = torch.tensor([[0.1, 0.9, 3.0, 7.0]], dtype=D)
    ctx = make_ctx(torch.log(rho), torch.zeros(1, 4))
    w, _ = weight_and_grad(ClippedRatio(eps_low=None, eps_high=None, max_ratio=5.0), ctx)
    assert torch.allclose(w, torch.tensor([[0.1, 0.9, 3.0, 5.0]], dtype=D))  # min(ρ, 5): no lower bound
    w20, _ = weight_and_grad(registry.build("denominator", "dppo_truncated"), make_ctx([[4.0]], [[0.0]]))
    assert torch.allclose(w20, torch.tensor([[20.0]], dtype=D))  # DPPO sg(min(ρ, 20))
    w_both, _ = weight_and_grad(ClippedRatio(0.2, 0.28, max_ratio=1.1), ctx)
    assert torch.allclose(w_both, torch.tensor([[0.8, 0.9, 1.1, 1.1]], dtype=D))  # clip first, then min


def test_prefix_min_weight_is_cummin_of_token_ratios_minpro():
    rho = torch.tensor([[1.2, 0.9, 1.5, 0.7, 1.0], [0.5, 2.0, 2.0, 9.0, 9.0]], dtype=D)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=D)
    ctx = make_ctx(torch.log(rho), torch.zeros(2, 5), mask)
    w, g = weight_and_grad(PrefixMin(), ctx)
    exp = torch.tensor([[1.2, 0.9, 0.9, 0.7, 0.7], [0.5, 0.5, 0.5, 1.0, 1.0]], dtype=D)
    assert torch.allclose(w * mask, exp * mask) and torch.allclose(g * mask, exp * mask)
    # a masked token inside the response does not lower later weights
    ctx2 = make_ctx(torch.log(torch.tensor([[1.0, 0.1, 0.8]], dtype=D)), torch.zeros(1, 3), [[1, 0, 1]])
    w2, _ = weight_and_grad(PrefixMin(), ctx2)
    assert math.isclose(w2[0, 2].item(), 0.8)


def test_demo_split_denominator_routes_rows_like_luffy():
    ctx = rand_ctx(2)
    ctx.is_demo = torch.tensor([False, True, False])
    w, _ = weight_and_grad(registry.build("denominator", "luffy"), ctx)
    rho = torch.exp(ctx.logp.detach() - ctx.old_logp)
    assert torch.allclose(w[[0, 2]], rho[[0, 2]])
    assert torch.allclose(w[1], ctx.logp.detach()[1].exp())
    hpt = registry.build("denominator", "hpt")
    w_hpt, _ = weight_and_grad(hpt, ctx)
    assert torch.allclose(w_hpt[1], torch.ones(6, dtype=D))
    # all rows demonstrations: the demo slot alone
    ctx.is_demo = torch.tensor([True, True, True])
    w_all, _ = weight_and_grad(DemoSplit(Behaviour(), Unit()), ctx)
    assert torch.allclose(w_all, ctx.logp.detach().exp())


@pytest.mark.parametrize("cls,kwargs,param", [
    (ClippedRatio, {"eps_low": 1.0}, "eps_low"),
    (ClippedRatio, {"eps_high": -0.1}, "eps_high"),
    (ClippedRatio, {"max_ratio": 0}, "max_ratio"),
    (GSPOSequence, {"max_log_ratio": "ten"}, "max_log_ratio"),
    (DemoSplit, {"on_policy": Behaviour(), "demo": None}, "demo"),
])
def test_bad_denominator_parameters_raise_one_line(cls, kwargs, param):
    with pytest.raises(ValueError) as e:
        cls(**kwargs)
    assert param in str(e.value) and "\n" not in str(e.value)


def test_demo_split_rejects_a_slot_of_another_family():
    with pytest.raises(ConfigError, match="not a Denominator"):
        DemoSplit(Behaviour(), {"_target_": "ablate.upge.slots.mask.NoMask"})


@pytest.mark.parametrize("name", registry.variant_names("denominator"))
def test_every_denominator_yaml_builds(name):
    d = registry.build("denominator", registry.load_variant("denominator", name))
    out = d(rand_ctx())
    assert out.shape == (3, 6) and not out.requires_grad and torch.isfinite(out).all()


def test_expected_denominator_variants_exist():
    assert {"current_policy", "behaviour", "unit", "gspo_sequence", "cispo", "cispo_trl", "dppo_truncated",
            "prefix_min", "luffy"} <= set(registry.variant_names("denominator"))


def test_unknown_denominator_parameter_is_one_line_config_error():
    with pytest.raises(ConfigError) as e:
        registry.build("denominator", {"_target_": "ablate.upge.slots.denominator.ClippedRatio", "cap": 5})
    assert "cap" in str(e.value) and "max_ratio" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="takes no parameters"):
        registry.build("denominator", {"_target_": "ablate.upge.slots.denominator.Unit", "x": 1})
