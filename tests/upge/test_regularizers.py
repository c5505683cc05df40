"""Regularizers: KL estimators and clamp conventions (peer_semantics §8.5), entropy bonus, YAML mappings."""

import math

import pytest
import torch

from ablate import registry
from ablate.errors import ConfigError
from ablate.upge.aggregation import Aggregation
from ablate.upge.batch import RolloutBatch
from ablate.upge.estimator import UPGE
from ablate.upge.regularizers import EntropyBonus, KLPenalty
from ablate.upge.slots.base import TokenContext
from ablate.upge.slots.denominator import Behaviour
from ablate.upge.slots.likelihood import Identity
from ablate.upge.slots.mask import NoMask

D = torch.float64
PI, PI_REF = 0.3, 0.5  # §8.5: d = log π − log π_ref = −0.5108256


def kl_ctx(logp, ref, mask=None):
    logp = torch.as_tensor(logp, dtype=D).clone().requires_grad_(True)
    ref = torch.as_tensor(ref, dtype=D)
    mask = torch.ones_like(ref) if mask is None else torch.as_tensor(mask, dtype=D)
    return TokenContext(logp=logp, old_logp=logp.detach(), advantages=torch.zeros_like(ref),
                        response_mask=mask, is_demo=torch.zeros(ref.shape[0], dtype=torch.bool), ref_logp=ref)


def pi_ctx():
    return kl_ctx([[math.log(PI)]], [[math.log(PI_REF)]])


@pytest.mark.parametrize("clamp", ["verl", "openrlhf", "none"])
@pytest.mark.parametrize("estimator,expected", [
    ("k1", -0.5108256), ("kl", -0.5108256), ("k2", 0.1304714), ("mse", 0.1304714),
    ("k3", 0.1558410), ("low_var_kl", 0.1558410), ("abs", 0.5108256),
])
def test_kl_estimator_values_match_peer_semantics_8_5(estimator, expected, clamp):
    v = KLPenalty(estimator=estimator, clamp=clamp)(pi_ctx())
    assert math.isclose(v.item(), expected, abs_tol=1e-7)


def test_k3_plus_has_k3_value_and_k2_gradient_like_verl_straight_through():
    ctx = pi_ctx()
    v = KLPenalty(estimator="k3+")(ctx)
    assert math.isclose(v.item(), 0.1558410, abs_tol=1e-7)
    (g_plus,) = torch.autograd.grad(v.sum(), ctx.logp)
    ctx2 = pi_ctx()
    (g_k2,) = torch.autograd.grad(KLPenalty(estimator="k2")(ctx2).sum(), ctx2.logp)
    assert math.isclose(g_plus.item(), g_k2.item(), rel_tol=1e-12)
    assert math.isclose(g_k2.item(), math.log(PI / PI_REF), rel_tol=1e-12)  # ∂½d²/∂logp = d
    ctx3 = pi_ctx()
    (g_k3,) = torch.autograd.grad(KLPenalty(estimator="k3")(ctx3).sum(), ctx3.logp)
    assert math.isclose(g_k3.item(), 1 - PI_REF / PI, rel_tol=1e-12)  # ∂(e^{−d}+d−1)/∂d = 1 − e^{−d}
    assert not math.isclose(g_k3.item(), g_plus.item())


def test_kl_clamp_conventions_verl_openrlhf_trl():
    # d = logp − ref = −30: k3 exponent 30
    ctx = lambda: kl_ctx([[-31.0]], [[-1.0]])  # noqa: E731
    assert KLPenalty(estimator="k3", clamp="verl")(ctx()).item() == 10.0  # exponent ±20, result ±10
    assert KLPenalty(estimator="k3", clamp="openrlhf")(ctx()).item() == 10.0  # result ±10
    trl = KLPenalty(estimator="k3", clamp="none")(ctx()).item()
    assert math.isclose(trl, math.exp(30.0) - 30.0 - 1.0, rel_tol=1e-12)  # TRL: unclamped
    # OpenRLHF clamps every estimator's result, verl only k3
    assert KLPenalty(estimator="k1", clamp="openrlhf")(ctx()).item() == -10.0
    assert KLPenalty(estimator="k1", clamp="verl")(ctx()).item() == -30.0
    assert KLPenalty(estimator="k2", clamp="openrlhf")(ctx()).item() == 10.0
    # k3 exponent in the other direction (π_θ ≫ π_ref): e^x − x − 1 ≈ −x − 1, clamp still ±10
    ctx_hi = kl_ctx([[-0.1]], [[-40.0]])
    assert KLPenalty(estimator="k3", clamp="verl")(ctx_hi).item() == 10.0
    c = kl_ctx([[-0.1]], [[-40.0]])
    v = KLPenalty(estimator="k3", clamp="verl")(c)
    (g,) = torch.autograd.grad(v.sum(), c.logp)
    assert torch.isfinite(g).all() and g.item() == 0.0  # clamped region carries no gradient


def test_kl_padding_is_zero_and_finite_even_with_garbage_reference():
    ctx = kl_ctx([[math.log(PI), 0.0]], [[math.log(PI_REF), -1e30]], mask=[[1, 0]])
    for est in ("k1", "k2", "k3", "k3+"):
        for cl in ("verl", "openrlhf", "none"):
            c = kl_ctx(ctx.logp.detach(), ctx.ref_logp, ctx.response_mask)
            v = KLPenalty(estimator=est, clamp=cl)(c)
            (g,) = torch.autograd.grad(v.sum(), c.logp)
            assert v[0, 1].item() == 0.0 and torch.isfinite(g).all() and g[0, 1] == 0


def test_kl_without_reference_raises_one_line_and_flags_ref_model():
    ctx = pi_ctx()
    ctx.ref_logp = None
    with pytest.raises(ValueError, match="ref_logp") as e:
        KLPenalty()(ctx)
    assert "\n" not in str(e.value)
    assert KLPenalty().needs().ref_model and not KLPenalty(coef=0).needs().ref_model


def test_entropy_bonus_returns_minus_entropy_and_needs_entropy_grad():
    h = torch.tensor([[0.5, 1.5]], dtype=D, requires_grad=True)
    ctx = pi_ctx()
    ctx.entropy_grad = h
    out = EntropyBonus(coef=0.01)(ctx)
    assert torch.equal(out.detach(), -h.detach()) and out.requires_grad
    assert EntropyBonus().needs().entropy_grad and EntropyBonus().aggregation == "token-mean"
    ctx.entropy_grad = None
    with pytest.raises(ValueError, match="entropy_grad"):
        EntropyBonus()(ctx)


def _batch(mask):
    B, T = mask.shape
    return RolloutBatch(input_ids=torch.zeros(B, T + 1, dtype=torch.long),
                        attention_mask=torch.ones(B, T + 1, dtype=torch.long), response_mask=mask,
                        old_logp=torch.full((B, T), -1.0, dtype=D), rewards=torch.zeros(B),
                        group_ids=torch.arange(B), prompt_len=1, advantages=torch.zeros(B, T, dtype=D),
                        ref_logp=torch.full((B, T), math.log(PI_REF), dtype=D))


def test_entropy_bonus_is_mean_token_entropy_whatever_loss_type_like_trl():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=D)
    ent = torch.tensor([[1.0, 2.0, 9.0, 9.0], [3.0, 4.0, 5.0, 6.0]], dtype=D, requires_grad=True)
    est = UPGE(NoMask(), Behaviour(), Identity(), Aggregation("seq-mean-token-sum"),
               {"entropy": EntropyBonus(coef=0.5)})
    assert est.needs().entropy_grad
    out = est(_batch(mask), torch.full((2, 4), -1.0, dtype=D, requires_grad=True), entropy_grad=ent)
    assert math.isclose(out.metrics["reg/entropy"].item(), -21 / 6)  # token mean, not 10.5 (seq-mean-token-sum)
    assert math.isclose(out.loss.item(), 0.5 * -21 / 6)
    follow = UPGE(NoMask(), Behaviour(), Identity(), Aggregation("seq-mean-token-sum"),
                  {"entropy": EntropyBonus(coef=0.5, aggregation=None)})  # verl: same agg_loss mode
    out2 = follow(_batch(mask), torch.full((2, 4), -1.0, dtype=D), entropy_grad=ent)
    assert math.isclose(out2.metrics["reg/entropy"].item(), -10.5)


def test_kl_term_uses_policy_aggregation_and_coef_in_estimator_like_verl_use_kl_loss():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=D)
    logp = torch.full((2, 3), math.log(PI), dtype=D, requires_grad=True)
    est = UPGE(NoMask(), Behaviour(), Identity(), Aggregation("seq-mean-token-mean"),
               {"kl": KLPenalty(coef=0.04, estimator="k3"), "off": KLPenalty(coef=0.0)})
    out = est(_batch(mask), logp)
    assert math.isclose(out.metrics["reg/kl"].item(), 0.1558410, abs_tol=1e-7)
    assert "reg/off" not in out.metrics
    assert math.isclose(out.loss.item(), 0.04 * 0.1558410, abs_tol=1e-8)
    assert math.isclose(out.metrics["kl_ref"].item(), 0.1558410, abs_tol=1e-7)


@pytest.mark.parametrize("cls,kwargs,param", [
    (KLPenalty, {"estimator": "k4"}, "estimator"),
    (KLPenalty, {"clamp": "trl"}, "clamp"),
    (KLPenalty, {"coef": -1.0}, "coef"),
    (KLPenalty, {"aggregation": "mean"}, "aggregation"),
    (EntropyBonus, {"coef": "x"}, "coef"),
    (EntropyBonus, {"aggregation": "sum"}, "aggregation"),
])
def test_bad_regularizer_parameters_raise_one_line(cls, kwargs, param):
    with pytest.raises(ValueError) as e:
        cls(**kwargs)
    assert param in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", registry.variant_names("regularizers"))
def test_every_regularizers_yaml_is_a_mapping_of_buildable_terms(name):
    cfg = registry.load_variant("regularizers", name)
    assert isinstance(cfg, dict)
    for term, sub in cfg.items():
        reg = registry.build("regularizer", sub, field=f"regularizers.{term}")
        ctx = pi_ctx()
        ctx.entropy_grad = torch.ones(1, 1, dtype=D, requires_grad=True)
        if reg.needs().step_info:  # the step context, as the trainer supplies it when declared
            from ablate.component import StepInfo
            ctx.info = StepInfo(step=1, total_steps=2)
        assert reg(ctx).shape == (1, 1) and reg.coef > 0


def test_expected_regularizer_variants_exist():
    names = set(registry.variant_names("regularizers"))
    assert {"none", "kl_k3", "kl_low_var", "entropy", "kl_k3_entropy"} <= names
    assert registry.load_variant("regularizers", "none") == {}
    kl = registry.build("regularizer", registry.load_variant("regularizers", "kl_k3")["kl"])
    assert kl.coef == 0.04 and kl.estimator == "k3"


def test_unknown_regularizer_parameter_is_one_line_config_error():
    with pytest.raises(ConfigError) as e:
        registry.build("regularizer", {"_target_": "ablate.upge.regularizers.KLPenalty", "beta": 0.04})
    assert "beta" in str(e.value) and "coef" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError) as e2:
        registry.build("regularizer", {"_target_": "ablate.upge.regularizers.KLPenalty", "estimator": "k9"})
    assert "KLPenalty" in str(e2.value) and "k3+" in str(e2.value)
