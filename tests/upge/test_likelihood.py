"""Likelihood slot variants: log g(π_θ) value and gradient."""

import pytest
import torch

from ablate import registry
from ablate.errors import ConfigError
from ablate.upge.slots.base import TokenContext
from ablate.upge.slots.likelihood import DemoSplit, Identity, PolicyShaping, SequenceMean

D = torch.float64


def make_ctx(logp, mask=None, is_demo=None):
    logp = torch.as_tensor(logp, dtype=D).clone().requires_grad_(True)
    mask = torch.ones_like(logp) if mask is None else torch.as_tensor(mask, dtype=D)
    is_demo = torch.zeros(logp.shape[0], dtype=torch.bool) if is_demo is None else torch.as_tensor(is_demo)
    return TokenContext(logp=logp, old_logp=logp.detach().clone(), advantages=torch.ones_like(mask),
                        response_mask=mask, is_demo=is_demo)


def rand_logp(seed=0, B=3, T=5):
    return -torch.rand(B, T, generator=torch.Generator().manual_seed(seed), dtype=D) * 4


def test_identity_is_logp_with_its_gradient():
    ctx = make_ctx(rand_logp())
    assert Identity()(ctx) is ctx.logp


@pytest.mark.parametrize("gamma", [0.1, 1.0])
def test_policy_shaping_value_and_gradient_match_luffy_f_pi(gamma):
    ctx = make_ctx(rand_logp(1))
    g = torch.exp(PolicyShaping(gamma)(ctx))
    p_ref = ctx.logp.exp()
    f_ref = p_ref / (p_ref + gamma)
    assert torch.allclose(g, f_ref)
    (ga,) = torch.autograd.grad(g.sum(), ctx.logp)
    (gb,) = torch.autograd.grad(f_ref.sum(), ctx.logp)
    assert torch.allclose(ga, gb)
    # f'(π)·π = γπ/(π+γ)²: low-probability tokens get relatively more weight than under ∇π
    p = p_ref.detach()
    assert torch.allclose(ga, gamma * p / (p + gamma) ** 2)


def test_policy_shaping_is_stable_for_very_unlikely_tokens():
    ctx = make_ctx([[-200.0, -1e-9]])
    out = PolicyShaping(0.1)(ctx)
    assert torch.isfinite(out).all()
    (g,) = torch.autograd.grad(out.sum(), ctx.logp)
    assert torch.isfinite(g).all()


def test_sequence_mean_value_is_token_logp_and_gradient_is_length_average_gspo():
    logp = rand_logp(2, B=2, T=4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=D)
    ctx = make_ctx(logp, mask)
    out = SequenceMean()(ctx)
    assert torch.allclose(out.detach(), logp)
    (g,) = torch.autograd.grad(out[0, 0] + out[1, 3], ctx.logp)  # one token of each row
    assert torch.allclose(g, torch.tensor([[0.25] * 4, [0.5, 0.5, 0, 0]], dtype=D))


def test_sequence_mean_zero_length_row_has_zero_gradient():
    ctx = make_ctx(rand_logp(3, B=2, T=3), [[1, 1, 1], [0, 0, 0]])
    (g,) = torch.autograd.grad(SequenceMean()(ctx).sum(), ctx.logp)
    assert torch.isfinite(g).all() and (g[1] == 0).all()


def test_demo_split_likelihood_identity_on_policy_shaping_on_demos_like_luffy():
    ctx = make_ctx(rand_logp(4), is_demo=torch.tensor([True, False, False]))
    out = registry.build("likelihood", "luffy")(ctx)
    p = ctx.logp.detach().exp()
    assert torch.allclose(out[1:].detach(), ctx.logp.detach()[1:])
    assert torch.allclose(out[0].exp().detach(), p[0] / (p[0] + 0.1))
    (g,) = torch.autograd.grad(out.sum(), ctx.logp)
    assert torch.allclose(g[1:], torch.ones_like(g[1:]))
    assert torch.allclose(g[0], 0.1 / (p[0] + 0.1))


def test_demo_split_shares_one_routing_implementation_across_families():
    from ablate.upge.slots import denominator, mask
    for cls in (mask.DemoSplit, denominator.DemoSplit, DemoSplit):
        assert issubclass(cls, mask.DemoRouting)
        assert cls.route is mask.DemoRouting.route


@pytest.mark.parametrize("kwargs", [{"gamma": 0.0}, {"gamma": -1}, {"gamma": None}])
def test_bad_policy_shaping_gamma_raises_one_line(kwargs):
    with pytest.raises(ValueError) as e:
        PolicyShaping(**kwargs)
    assert "gamma" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", registry.variant_names("likelihood"))
def test_every_likelihood_yaml_builds(name):
    lk = registry.build("likelihood", registry.load_variant("likelihood", name))
    ctx = make_ctx(rand_logp(), is_demo=torch.tensor([False, True, False]))
    out = lk(ctx)
    assert out.shape == (3, 5) and out.requires_grad


def test_expected_likelihood_variants_exist_and_unknown_parameter_errors():
    assert {"identity", "policy_shaping", "gspo_sequence", "luffy"} <= set(registry.variant_names("likelihood"))
    with pytest.raises(ConfigError) as e:
        registry.build("likelihood", {"_target_": "ablate.upge.slots.likelihood.PolicyShaping", "gama": 0.1})
    assert "gama" in str(e.value) and "gamma" in str(e.value) and "\n" not in str(e.value)
