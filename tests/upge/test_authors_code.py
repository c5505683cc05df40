"""Presets against transcriptions of the authors' own released code (issue 18, item "authors'
numbers as the reference"): each reference below follows the named file at the recorded commit line
by line (verl helpers it calls inlined), not a re-derivation of the formula.

- BAPO: WooooDyy/BAPO@3b8389c5a81e715a6fbaa2bb0fa688fe54ace9cf recipe/bapo/policy_loss.py
  (``_compute_effective_advantage``, ``compute_policy_loss_bapo``; loss_agg_mode token-mean,
  clip_ratio_c 3.0, the run_bapo_example.sh bounds) with the GRPO advantage of the recipe's verl.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from tests.upge.reference_losses import Case
from tests.upge.test_new_presets_slots import with_singleton
from tests.upge.test_presets_reference import GS, ablate_grad, assert_same, case_where, ref_grad

BAPO = "WooooDyy/BAPO@3b8389c5a81e715a6fbaa2bb0fa688fe54ace9cf recipe/bapo/policy_loss.py"


def verl_grpo_advantages(c: Case, epsilon: float = 1e-6) -> torch.Tensor:
    """verl compute_grpo_outcome_advantage (norm_adv_by_std_in_grpo=True), [B, T]."""
    scores = torch.tensor(c.rewards, dtype=c.mask.dtype)
    id2score, id2mean, id2std = defaultdict(list), {}, {}
    for i in range(len(scores)):
        id2score[c.group_ids[i]].append(scores[i])
    for idx, s in id2score.items():
        if len(s) == 1:
            id2mean[idx], id2std[idx] = torch.tensor(0.0, dtype=scores.dtype), torch.tensor(1.0, dtype=scores.dtype)
        else:
            id2mean[idx] = torch.mean(torch.tensor(s, dtype=scores.dtype))
            id2std[idx] = torch.std(torch.tensor([s], dtype=scores.dtype))
    for i in range(len(scores)):
        scores[i] = (scores[i] - id2mean[c.group_ids[i]]) / (id2std[c.group_ids[i]] + epsilon)
    return scores.unsqueeze(-1) * c.mask


def _compute_effective_advantage(ratio, advantages, response_mask, clip_low, clip_high, eps):
    clip_min = ratio.new_tensor(float(clip_low))
    clip_max = ratio.new_tensor(float(clip_high))
    ratio_pos = torch.minimum(ratio, clip_max)
    ratio_neg = torch.maximum(ratio, clip_min)
    effective_ratio = torch.where(advantages >= 0, ratio_pos, ratio_neg)
    effective_adv = effective_ratio * advantages * response_mask
    pos_contrib = effective_adv.clamp(min=0).sum()
    neg_contrib = (-effective_adv.clamp(max=0)).sum()
    if torch.all(neg_contrib <= 0):
        pos_neg_ratio = ratio.new_tensor(float("inf"))
    else:
        pos_neg_ratio = pos_contrib / (neg_contrib + ratio.new_tensor(eps))
    return effective_adv, pos_neg_ratio


def compute_policy_loss_bapo(old_log_prob, log_prob, advantages, response_mask, *, low=0.8, high=1.2,
                             low_max=0.95, high_max=2.0, low_step=0.05, high_step=0.1, target=0.5,
                             eps=1e-8, clip_ratio_c=3.0):
    ratio_low_cur, ratio_high_cur = low, high
    negative_approx_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    args = dict(ratio=ratio, advantages=advantages, response_mask=response_mask, eps=eps)
    _, pos_neg_ratio = _compute_effective_advantage(clip_low=ratio_low_cur, clip_high=ratio_high_cur, **args)
    while pos_neg_ratio.item() < target and ratio_low_cur < low_max and low_step > 0:
        ratio_low_cur = min(ratio_low_cur + low_step, low_max)
        _, pos_neg_ratio = _compute_effective_advantage(clip_low=ratio_low_cur, clip_high=ratio_high_cur, **args)
        if pos_neg_ratio.item() >= target:
            break
    while pos_neg_ratio.item() < target and ratio_high_cur < high_max and high_step > 0:
        ratio_high_cur = min(ratio_high_cur + high_step, high_max)
        _, pos_neg_ratio = _compute_effective_advantage(clip_low=ratio_low_cur, clip_high=ratio_high_cur, **args)
        if pos_neg_ratio.item() >= target:
            break
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, ratio_low_cur, ratio_high_cur)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    # verl agg_loss(loss_agg_mode="token-mean"): masked mean over all tokens
    return (pg_losses * response_mask).sum() / response_mask.sum(), (ratio_low_cur, ratio_high_cur)


def authors_bapo_loss(logp, c: Case, target: float = 0.5):
    return compute_policy_loss_bapo(c.old_logp, logp, verl_grpo_advantages(c), c.mask, target=target)[0]


@pytest.mark.parametrize("target", [0.5, 3.0, 50.0])
@pytest.mark.parametrize("G", GS)
def test_bapo_preset_gradient_equals_the_authors_compute_policy_loss_bapo(G, target):
    def has_negatives(c):
        return int(((verl_grpo_advantages(c) < 0) & (c.mask > 0)).sum()) >= 3

    c = with_singleton(case_where(has_negatives, G, spread=1.0))
    _, bounds = compute_policy_loss_bapo(c.old_logp, c.logp, verl_grpo_advantages(c), c.mask, target=target)
    if target == 50.0:
        assert bounds != (0.8, 1.2)  # the search moved
    assert_same(ablate_grad(c, "bapo", f"mask.target={target}"), ref_grad(authors_bapo_loss, c, target=target))


def test_bapo_preset_records_the_authors_commit():
    from ablate.methods.catalog import load_presets

    bapo = next(r for r in load_presets() if r["name"] == "bapo")
    assert BAPO.split(" ")[0] in bapo["reference"]
