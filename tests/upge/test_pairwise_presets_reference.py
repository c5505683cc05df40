"""Reference gradients for the presets added in issue 18: the pairwise-preference presets (gshf,
rpo_sft_reg, quality_aware_dpo) against hand-written DPO / IPO / RPO losses on the shared cases,
and ppo_max against the ppo reference with the KL in the reward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.upge.reference_losses import Case
from tests.upge.test_machinery_presets_reference import TOL32, grad_of, side_data, var_case, SIZES
from tests.upge.test_presets_reference import GS, ablate_grad, assert_same, case_where, ref_grad

REFERENCED = {"gshf", "rpo_sft_reg", "quality_aware_dpo", "ppo_max"}


def _s(logp, c: Case, i: int) -> torch.Tensor:
    L = c.length(i)
    return (logp[i, :L] - c.ref_logp[i, :L]).sum()


def _groups(c: Case) -> list[list[int]]:
    return [[i for i in rows if c.length(i) > 0] for rows in c.groups().values()]


def has_pair(c: Case) -> bool:
    return any(len({c.rewards[i] for i in rows}) > 1 for rows in _groups(c))


def dpo_best_worst(logp, c: Case, beta=0.1, sft=0.0):
    total, n_groups = logp.sum() * 0, 0
    for rows in _groups(c):
        if not rows:
            continue
        n_groups += 1
        rs = [c.rewards[i] for i in rows]
        if max(rs) == min(rs):
            continue
        ch, rj = rows[rs.index(max(rs))], rows[rs.index(min(rs))]
        term = -F.logsigmoid(beta * (_s(logp, c, ch) - _s(logp, c, rj)))
        if sft:
            term = term + sft * -(logp[ch, :c.length(ch)].mean())
        total = total + term
    return total / n_groups


def ipo_all_pairs(logp, c: Case, beta=0.1):
    total, n_groups = logp.sum() * 0, 0
    for rows in _groups(c):
        if not rows:
            continue
        n_groups += 1
        pairs = [(i, j) for i in rows for j in rows if c.rewards[i] > c.rewards[j]]
        if pairs:
            total = total + sum((_s(logp, c, i) - _s(logp, c, j) - 1 / (2 * beta)) ** 2 for i, j in pairs) / len(pairs)
    return total / n_groups


@pytest.mark.parametrize("G", GS)
def test_gshf_gradient_is_online_dpo_best_vs_worst(G):
    c = case_where(has_pair, G)
    assert_same(ablate_grad(c, "gshf"), ref_grad(dpo_best_worst, c))


@pytest.mark.parametrize("G", GS)
def test_rpo_gradient_is_dpo_plus_sft_on_the_chosen(G):
    c = case_where(has_pair, G)
    assert_same(ablate_grad(c, "rpo_sft_reg"), ref_grad(dpo_best_worst, c, sft=1.0))


@pytest.mark.parametrize("G", GS)
def test_quality_aware_dpo_gradient_is_ipo_over_all_ordered_pairs(G):
    c = case_where(has_pair, G)
    assert_same(ablate_grad(c, "quality_aware_dpo"), ref_grad(ipo_all_pairs, c))


def test_ppo_max_is_ppo_with_kl_in_the_reward_and_grad_clip():
    c = var_case(SIZES[0])
    values, _, _ = side_data(c)
    torch.testing.assert_close(grad_of("ppo_max", c, values),
                               grad_of("ppo", c, values, None, None, "advantage.kl_coef=0.05"), **TOL32)
    assert not torch.allclose(grad_of("ppo_max", c, values), grad_of("ppo", c, values))
