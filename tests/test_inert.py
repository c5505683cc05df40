"""Inert-ablation detection: components declare when they can act (ablate.component.Acts), `ablate
train` says which chosen ones cannot under the run's schedule, and the sweep preflight refuses a
factor whose levels differ only in such components. The declarations themselves are checked
numerically: a part declared to act only where π_θ ≠ π_old gives exactly the neutral choice's
gradient on an on-policy batch."""

from __future__ import annotations

import pytest
import torch

from ablate.component import (ACTS_ON_DRIFT, Acts, Needs, Schedule, effective_signature, inert_note, inert_parts,
                              schedule_of)
from ablate.config import compose_config
from ablate.errors import ConfigError
from ablate.registry import build, variant_names
from ablate.train.components import build_algorithm
from tests.upge.test_presets_reference import ablate_grad, assert_same, make_case

ON_POLICY = Schedule(updates_per_batch=1)


def _plan(*overrides):
    cfg = compose_config(list(overrides))
    algo = build_algorithm(cfg)
    return algo, schedule_of(algo, cfg.train.epochs, cfg.train.minibatches)


def test_readme_mask_example_with_dapo_on_one_step_per_batch_is_reported():
    """README: `ablate train method=dapo mask=clip_higher_wide` (PPOClip eps 0.2/0.4, written here as
    the same overrides) with one on-policy step per batch."""
    wide = ("mask=ppo_clip", "mask.eps_low=0.2", "mask.eps_high=0.4")
    algo, sched = _plan("method=dapo", *wide, "train.epochs=1", "train.minibatches=1")
    assert not sched.drift
    note = inert_note(algo, sched)
    assert "mask PPOClip" in note and "\n" not in note
    algo, sched = _plan("method=dapo", *wide, "train.epochs=1", "train.minibatches=2")
    assert sched.drift and inert_note(algo, sched) == ""


def test_readme_custom_ratio_band_declares_it_acts_only_on_drift():
    class RatioBand:  # the README's class body, with its declaration
        ACTS = ACTS_ON_DRIFT
    assert not RatioBand.ACTS.can_act(ON_POLICY) and RatioBand.ACTS.can_act(Schedule(2))


def test_neutral_and_always_acting_parts_are_not_reported():
    algo, sched = _plan("method=grpo", "mask=top_entropy", "denominator=current_policy")
    assert inert_parts(algo, sched) == []
    assert Acts(neutral=True).can_act(Schedule(4)) is False


TRAINER_ROWS = {"etr"}  # reads ctx.rows["group_reward_var"], which the trainer fills (not this harness)


def _drift_only(family: str) -> list[str]:
    out = []
    for v in sorted(set(variant_names(family)) - TRAINER_ROWS):
        try:
            comp = build(family, v, family)
        except (ConfigError, TypeError, ValueError):
            continue
        if comp.acts().policy_drift and comp.needs() == Needs():  # no side data this harness lacks
            out.append(v)
    return out


@pytest.mark.parametrize("family,neutral", [("mask", "none"), ("denominator", "current_policy")])
def test_declared_drift_only_parts_give_the_neutral_gradient_on_policy(family, neutral):
    """The claim behind the warning, checked for every conf variant that declares it (issue 18:
    two masks gave bit-identical runs on the default schedule)."""
    variants = _drift_only(family)
    assert len(variants) >= 3, variants
    c = make_case(4, on_policy=True)
    base = ablate_grad(c, "grpo", f"{family}={neutral}")
    for v in variants:
        assert_same(ablate_grad(c, "grpo", f"{family}={v}"), base)
    drifted = make_case(4, spread=0.8)  # and they do act once π_θ ≠ π_old
    assert any(not torch.allclose(ablate_grad(drifted, "grpo", f"{family}={v}"),
                                  ablate_grad(drifted, "grpo", f"{family}={neutral}")) for v in variants)


def test_ratio_penalties_of_mdpo_and_r2vpo_are_inert_on_policy():
    for method in ("mdpo", "r2vpo"):
        algo, sched = _plan(f"method={method}", "train.epochs=1", "train.minibatches=1")
        assert any(c.family == "regularizer" for _, c in inert_parts(algo, sched)), method


def test_effective_signature_equal_for_inert_alternatives_only():
    a, s = _plan("method=dapo", "train.epochs=1", "train.minibatches=1")
    b, _ = _plan("method=dapo", "mask=none", "train.epochs=1", "train.minibatches=1")
    assert effective_signature(a, s) == effective_signature(b, s)
    s2 = Schedule(updates_per_batch=2)
    assert effective_signature(a, s2) != effective_signature(b, s2)


def _space(**kw):
    from ablate.sweep.space import validate
    base = {"name": "inert", "metric": "eval/pass@1", "base_overrides": ["train.steps=1", "method=grpo"]}
    return validate({**base, **kw})


def test_sweep_preflight_refuses_a_mask_factor_on_one_on_policy_step():
    from ablate.sweep.preflight import preflight
    with pytest.raises(ConfigError, match="sweep factor mask: .*cannot act") as e:
        preflight(_space(slots={"mask": ["ppo_clip", "clip_higher", "none"]},
                         params={"train.epochs": [1], "train.minibatches": [1]}))
    assert "\n" not in str(e.value)


def test_sweep_preflight_keeps_a_factor_that_acts_in_some_trials():
    from ablate.sweep.preflight import preflight
    # quickstart-like: mask × epochs ∈ {1, 4} with 2 minibatches: every trial has drift
    assert preflight(_space(slots={"mask": ["ppo_clip", "none"]},
                            params={"train.epochs": [1, 4], "train.minibatches": [2]})) == 4
    # a factor that changes training elsewhere (lr) is never refused
    assert preflight(_space(params={"train.lr": [1e-4, 3e-4]})) == 2


@pytest.mark.parametrize("method,updates,group", [("dapo", 16, 16), ("gspo", 4, None), ("knapsack", 8, None),
                                                  ("bapo", 8, 16), ("grpo", 1, None)])
def test_presets_carry_the_papers_update_schedule(method, updates, group):
    cfg = compose_config([f"method={method}"])
    assert int(cfg.train.epochs) * int(cfg.train.minibatches) == updates
    if group is not None:
        assert int(cfg.train.group_size) == group
    assert "schedule" in cfg.method and str(cfg.method.schedule)
    algo = build_algorithm(cfg)
    sched = schedule_of(algo, cfg.train.epochs, cfg.train.minibatches)
    assert (inert_parts(algo, sched) == []) == (updates > 1)  # their clips act on their own schedule


def test_dapo_preset_overlong_window_is_a_fifth_of_the_budget_and_refills_ten_rounds():
    algo = build_algorithm(compose_config(["method=dapo"]))
    overlong, dyn = algo.stages
    assert overlong.cache_frac == 0.2 and dyn.max_gen_batches == 10 and algo.needs().refill_rounds == 10


def test_every_exact_preset_names_what_it_was_checked_against():
    """Issue 18: an exact label says whose code it reproduces (the authors' repo, or 'port:' a peer)."""
    from ablate.methods.catalog import load_presets
    exact = [r for r in load_presets() if r.get("fidelity") == "exact"]
    assert len(exact) >= 15
    missing = [r["name"] for r in exact if not r.get("reference")]
    assert missing == [], missing
