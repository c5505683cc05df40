"""DPO / IPO over verifier-ranked online pairs (ablate/objectives/pairwise.py) against hand-written
formulas (Rafailov et al. 2023 eq. 7 as TRL DPOTrainer loss_type=sigmoid computes it; IPO as TRL
loss_type=ipo; RPO's SFT term as TRL rpo_alpha), and the presets it unlocks."""

from __future__ import annotations

import math

import pytest
import torch

from ablate.objectives.pairwise import PairwisePreference
from ablate.upge.aggregation import Normalizer
from ablate.upge.slots.base import TokenContext

D = torch.float64


def _ctx(seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T = 8, 5
    rewards = torch.tensor([1., 0., 0., 1., 1., 1., 0.5, 0.], dtype=D)  # group 1 all-equal: no pair
    gids = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    lengths = torch.tensor([5, 3, 4, 2, 5, 1, 3, 4])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(D)
    logp = (-torch.rand(B, T, generator=g, dtype=D) * 2).requires_grad_(True)
    ref = -torch.rand(B, T, generator=g, dtype=D) * 2
    ctx = TokenContext(logp=logp, old_logp=logp.detach(), advantages=torch.zeros(B, T, dtype=D),
                       response_mask=mask, is_demo=torch.zeros(B, dtype=torch.bool), group_ids=gids,
                       rewards=rewards, ref_logp=ref)
    return ctx, Normalizer.of(mask, group_ids=gids)


def _s(ctx, i):
    m = ctx.response_mask[i] > 0
    return (ctx.logp[i][m] - ctx.ref_logp[i][m]).sum()


def test_dpo_best_worst_matches_the_dpo_formula_per_prompt():
    ctx, norm = _ctx()
    beta = 0.1
    got = PairwisePreference(beta=beta).loss(ctx, norm).loss
    # group 0: best row 0 (first max), worst row 1 (first min); group 2: rows 6 vs 7; group 1: none
    pairs = [(0, 1), (6, 7)]
    want = sum(-torch.nn.functional.logsigmoid(beta * (_s(ctx, c) - _s(ctx, r))) for c, r in pairs) / 3
    torch.testing.assert_close(got, want)
    g1, = torch.autograd.grad(got, ctx.logp)
    g2, = torch.autograd.grad(want, ctx.logp)
    torch.testing.assert_close(g1, g2)
    assert g1[4:6].abs().sum() == 0  # the all-equal group gives no pair, no gradient


def test_ipo_all_pairs_and_rpo_sft_term():
    ctx, norm = _ctx(1)
    beta = 0.1
    got = PairwisePreference(loss="ipo", beta=beta, pairs="all").loss(ctx, norm).loss
    g0 = [(c, r) for c in range(4) for r in range(4) if ctx.rewards[c] > ctx.rewards[r]]
    ipo = lambda c, r: (_s(ctx, c) - _s(ctx, r) - 1 / (2 * beta)) ** 2  # noqa: E731
    want = (sum(ipo(c, r) for c, r in g0) / len(g0) + ipo(6, 7)) / 3
    torch.testing.assert_close(got, want)
    sft = PairwisePreference(beta=beta, sft_coef=0.5).loss(ctx, norm).loss
    base = PairwisePreference(beta=beta).loss(ctx, norm).loss
    nll = lambda i: -(ctx.logp[i][ctx.response_mask[i] > 0]).mean()  # noqa: E731
    torch.testing.assert_close(sft - base, 0.5 * (nll(0) + nll(6)) / 3)


def test_pairwise_term_declares_ref_model_and_whole_groups_and_checks_its_parameters():
    from ablate.errors import ConfigError
    n = PairwisePreference().needs()
    assert n.ref_model and n.whole_groups
    for bad in ({"loss": "kto"}, {"beta": 0}, {"pairs": "random"}, {"sft_coef": -1}):
        with pytest.raises(ConfigError):
            PairwisePreference(**bad)
    assert math.isclose(PairwisePreference(beta=0.5).beta, 0.5)


@pytest.mark.parametrize("method", ["gshf", "rpo_sft_reg", "quality_aware_dpo"])
def test_unlocked_presets_build_and_are_labelled_approximations(method):
    from ablate.config import compose_config
    from ablate.methods.catalog import load_presets
    from ablate.train.components import build_algorithm
    algo = build_algorithm(compose_config([f"method={method}"]))
    assert isinstance(algo.objective.terms["pref"], PairwisePreference)
    rec = next(r for r in load_presets() if r["name"] == method)
    assert rec["fidelity"] == "approximation" and rec["evidence"] == "abstract"

