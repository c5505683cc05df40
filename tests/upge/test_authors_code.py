"""Presets labelled exact, checked against numbers from the *authors'* own published code logic
(tests/upge/reference_authors.py names repository, file and commit of each transcription), and
the peer ports kept as named options checked against the peer (verl)."""

from __future__ import annotations

import pytest
import torch

from tests.upge import reference_authors as auth
from tests.upge import reference_losses as ref
from tests.upge.test_presets_reference import (GS, ablate_grad, assert_same, make_case, preset_cfg,
                                               ref_grad)


def _no_empty_rows(c):
    c.mask[1, 0] = 1.0  # the authors' code averages over every row; verl/ablate skip empty ones
    return c


@pytest.mark.parametrize("G", GS)
def test_gpg_matches_the_authors_gpg_trainer(G):
    """AMAP-ML/GPG@e096da8 open-r1/src/open_r1/gpg_trainer.py: α = B/(B − M). The batch has one
    all-equal group (M = G) and verl's α = B/#nonzero differs from it there."""
    c = make_case(G)
    got = ablate_grad(c, "gpg")
    assert_same(got, ref_grad(auth.gpg_authors_loss, c, G=G))
    assert not torch.allclose(got, ref_grad(ref.gpg_loss, c))  # the verl port is another gradient


@pytest.mark.parametrize("G", GS)
def test_gpg_verl_option_matches_verl_gpg_port(G):
    """verl adv_estimator=gpg + compute_policy_loss_gpg: α = B / count_nonzero(rewards)."""
    c = make_case(G)
    assert_same(ablate_grad(c, "gpg", "advantage=gpg_verl"), ref_grad(ref.gpg_loss, c))


@pytest.mark.parametrize("G", GS)
def test_cispo_matches_minimax_m1_paper_no_lower_bound(G):
    """MiniMax-AI/MiniMax-M1@2abb4f4 tech report eq. 4-5: no lower bound on the IS weight."""
    c = make_case(G, spread=0.8)
    assert bool(((c.logp - c.old_logp).exp() < 0.8)[c.mask > 0].any())  # a lower bound would bite
    got = ablate_grad(c, "cispo")
    assert_same(got, ref_grad(auth.cispo_paper_loss, c, G=G))
    assert not torch.allclose(got, ref_grad(ref.cispo_loss, c))


@pytest.mark.parametrize("G", GS)
def test_cispo_lower_option_matches_verl_cispo_default_clip_ratio_low(G):
    """verl compute_policy_loss_cispo with clip_ratio_low = 0.2: sg(clip(ρ, 0.8, 1.28))."""
    c = make_case(G, spread=0.8)
    assert_same(ablate_grad(c, "cispo", "denominator=cispo_lower"), ref_grad(ref.cispo_loss, c))


@pytest.mark.parametrize("G", GS)
def test_drgrpo_matches_the_authors_oat_learner(G):
    """sail-sg/understand-r1-zero@dfca49d train_zero_math.py (critic_type=drgrpo) on
    sail-sg/oat@c1a074c ppo.py: Σ_t / generate_max_length per sequence, mean over rows; L_max is
    the run's generation budget (generate_max_length)."""
    c = _no_empty_rows(make_case(G))
    L = float(preset_cfg("drgrpo").aggregation.constant)
    assert_same(ablate_grad(c, "drgrpo"), ref_grad(auth.drgrpo_authors_loss, c, G=G, generate_max_length=L))
