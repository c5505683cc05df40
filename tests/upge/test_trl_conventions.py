"""TRL 1.16 GRPOTrainer conventions as named options (issue 18), each against a transcription of
TRL's own code: huggingface/trl@f2cd57710ae345ea6428ae95363267fcf38a3dc8 trl/trainer/grpo_trainer.py
(``_compute_loss``: the loss_type normalisers, ``get_high_entropy_mask`` with the entropy bonus,
``get_gamma_weights`` for loss_type="vespo"; ``_generate_and_score_completions``:
``mask_truncated_completions`` zeroes the row's completion mask, ``num_items_in_batch`` sums it)."""

from __future__ import annotations

import math

import pytest
import torch

from ablate.upge.aggregation import Aggregation, Normalizer
from ablate.upge.estimator import UPGE
from ablate.upge.regularizers import EntropyBonus
from ablate.upge.slots import denominator as Dn
from ablate.upge.slots import likelihood as Lk
from ablate.upge.slots import mask as Mk
from ablate.upge.slots.base import TokenContext
from tests.upge.test_estimator import grad_of, make_batch, random_case

TRL = "huggingface/trl@f2cd57710ae345ea6428ae95363267fcf38a3dc8 trl/trainer/grpo_trainer.py"


def _unequal_case(seed: int = 0):
    """6 rows in 2 microbatches of 3 with very different token counts; row 4 zeroed (TRL's
    mask_truncated_completions: completion_mask * ~is_truncated)."""
    g = torch.Generator().manual_seed(seed)
    T = 8
    lengths = [8, 7, 8, 1, 0, 2]
    mask = torch.zeros(6, T, dtype=torch.float64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1.0
    logp = (-torch.rand(6, T, generator=g, dtype=torch.float64) - 0.1).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(6, T, generator=g, dtype=torch.float64)
    adv = torch.randn(6, 1, generator=g, dtype=torch.float64).expand(6, T).clone()
    return logp, old, adv, mask, [slice(0, 3), slice(3, 6)]


def _ours(agg: Aggregation, logp, old, adv, mask, chunks):
    """ablate's trainer: the minibatch's Normalizer (num_chunks = microbatches), the estimator per
    microbatch, the losses summed (accumulated gradients)."""
    est = UPGE(Mk.NoMask(), Dn.CurrentPolicy(), Lk.Identity(), agg)
    norm = Normalizer.of(mask, num_chunks=len(chunks))
    return sum(est(make_batch(old[c], adv[c], mask[c]), logp[c], norm=norm).loss for c in chunks)


def test_bnpo_microbatch_scope_matches_trl_bnpo_under_gradient_accumulation():
    """TRL bnpo: loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1) / GA per microbatch."""
    logp, old, adv, mask, chunks = _unequal_case()
    per_token = -adv * torch.exp(logp - logp.detach())
    want = sum((per_token[c] * mask[c]).sum() / mask[c].sum().clamp(min=1.0) / len(chunks) for c in chunks)
    got = _ours(Aggregation("token-mean", scope="microbatch"), logp, old, adv, mask, chunks)
    torch.testing.assert_close(got, want)
    g_want = grad_of(want, logp)
    torch.testing.assert_close(grad_of(got, logp), g_want)
    default = _ours(Aggregation("token-mean"), logp, old, adv, mask, chunks)
    assert not torch.allclose(grad_of(default, logp), g_want)  # the convention matters


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
def test_empty_rows_count_like_trl_grpo_and_dr_grpo_with_mask_truncated_completions(loss_type):
    """TRL grpo: ((L·M).sum(-1) / M.sum(-1).clamp(1)).mean() / GA; dr_grpo: (L·M).sum() /
    (size(0) · max_completion_length) / GA: a row zeroed by mask_truncated_completions counts."""
    logp, old, adv, mask, chunks = _unequal_case(1)
    T = mask.shape[1]
    per_token = -adv * torch.exp(logp - logp.detach())
    if loss_type == "grpo":
        want = sum(((per_token[c] * mask[c]).sum(-1) / mask[c].sum(-1).clamp(min=1.0)).mean() / len(chunks)
                   for c in chunks)
        agg = Aggregation("seq-mean-token-mean", scope="microbatch", count_empty_rows=True)
    else:
        want = sum((per_token[c] * mask[c]).sum() / (per_token[c].size(0) * T) / len(chunks) for c in chunks)
        agg = Aggregation("seq-mean-token-sum-norm", constant=T, scope="microbatch", count_empty_rows=True)
    got = _ours(agg, logp, old, adv, mask, chunks)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grad_of(got, logp), grad_of(want, logp))
    # counting only non-empty rows (ablate's default) differs on the microbatch with the zeroed row
    agg.count_empty_rows = False
    assert not torch.allclose(_ours(agg, logp, old, adv, mask, chunks), want)


def trl_high_entropy_mask(entropies, mask, threshold):
    """TRL get_high_entropy_mask on one process."""
    local = entropies[mask.bool()].float()
    entropy_threshold = torch.quantile(local, threshold)
    return ((entropies * mask.float()) >= entropy_threshold) & mask.bool()


@pytest.mark.parametrize("top_mean", [True, False])
def test_entropy_bonus_over_top_entropy_tokens_matches_trl_top_entropy_quantile(top_mean):
    """TRL: effective_mask = mask * entropy_mask; grpo/bnpo-type: Σ H·E·M / Σ E·M / GA per
    microbatch; cispo/dapo/vespo: Σ H·E·M / num_items_in_batch; loss −= entropy_coef · that."""
    logp, old, adv, mask, chunks = _unequal_case(2)
    g = torch.Generator().manual_seed(5)
    H = (torch.rand(mask.shape, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    q, coef = 0.2, 0.01
    want = torch.zeros((), dtype=torch.float64)
    for c in chunks:
        E = trl_high_entropy_mask(H[c].detach(), mask[c], 1 - q).to(H.dtype)
        eff = mask[c] * E
        if top_mean:
            want = want - coef * (H[c] * eff).sum() / eff.sum().clamp(min=1.0) / len(chunks)
        else:
            want = want - coef * (H[c] * eff).sum() / mask.sum().clamp(min=1.0)
    reg = EntropyBonus(coef=coef, top_quantile=q, top_mean=top_mean,
                       scope="microbatch" if top_mean else "minibatch")
    norm = Normalizer.of(mask, num_chunks=len(chunks))
    got = torch.zeros((), dtype=torch.float64)
    for c in chunks:
        ctx = TokenContext.from_batch(make_batch(old[c], adv[c], mask[c]), logp[c], entropy_grad=H[c])
        got = got + coef * Aggregation(reg.aggregation, scope=reg.aggregation_scope)(reg(ctx), mask[c], norm)
    torch.testing.assert_close(got, want)
    g_want = grad_of(want, H)
    torch.testing.assert_close(grad_of(got, H), g_want)
    assert bool((g_want[mask > 0] == 0).any())  # low-entropy tokens get no bonus


def trl_gamma_weights(advantages, log_ratio_per_token, mask, k_pos=2.0, lambda_pos=3.0, k_neg=3.0,
                      lambda_neg=2.0):
    """TRL get_gamma_weights (no importance_sampling_ratio)."""
    lower_clamp = math.log(1e-8)
    log_ratio_clamped = torch.clamp(log_ratio_per_token, -20.0, 20.0)
    seq_log_ratio = torch.sum(log_ratio_clamped * mask, dim=-1, keepdim=True)
    log_w_seq = torch.clamp(seq_log_ratio, lower_clamp, 20.0)
    w_seq = torch.exp(log_w_seq)
    is_nonneg_adv = advantages >= 0
    k_seq = torch.where(is_nonneg_adv, k_pos, k_neg)
    lambda_seq = torch.where(is_nonneg_adv, lambda_pos, lambda_neg).clamp(min=1e-4)
    log_phi = lambda_seq + k_seq * log_w_seq - lambda_seq * w_seq
    return torch.exp(log_phi).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


@pytest.mark.parametrize("shape", [(4, 7), (8, 16)])
def test_vespo_denominator_matches_trl_vespo_loss_gradient_and_value(shape):
    """TRL vespo: per_token_loss = −φ_seq·Â·log π, φ detached; normaliser num_items_in_batch."""
    logp, old, adv, mask = random_case(shape, 21, seq_adv=True, spread=0.05)
    adv_row = adv[:, :1]
    phi = trl_gamma_weights(adv_row, (logp - old).detach(), mask).detach()
    want = (-phi * adv_row * logp * mask).sum() / mask.sum().clamp(min=1.0)
    est = UPGE(Mk.NoMask(), Dn.VespoGamma(), Lk.Identity(), Aggregation("token-mean"))
    out = est(make_batch(old, adv, mask), logp)
    torch.testing.assert_close(grad_of(out.loss, logp), grad_of(want, logp))
    torch.testing.assert_close(out.diags["pg_loss_peer"].value, want.detach())  # TRL's loss value
    assert not torch.allclose(phi[mask.sum(-1) > 0], torch.ones_like(phi[mask.sum(-1) > 0]))
    assert Dn.VespoGamma().acts().policy_drift  # φ(1) = 1: inert while π_θ = π_old


def test_trl_convention_configs_compose():
    from ablate import registry
    agg = registry.build("aggregation", "bnpo_trl")
    assert (agg.mode, agg.scope) == ("token-mean", "microbatch")
    agg = registry.build("aggregation", "grpo_trl")
    assert agg.count_empty_rows and agg.scope == "microbatch"
    assert isinstance(registry.build("denominator", "vespo"), Dn.VespoGamma)
    with pytest.raises(Exception, match="scope"):
        Aggregation("token-mean", scope="step")


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "bnpo"])
def test_mask_truncated_stage_then_trl_normalisers_equal_trl_mask_truncated_completions(loss_type):
    """TRL _generate_and_score_completions with mask_truncated_completions=True: completion_mask *
    (~is_truncated) (the row stays: rewards and group statistics keep it). Our MaskTruncated stage drops
    the truncated rows' tokens; the trainer's padding (pad_rows) then gives the same zeroed mask, and
    grpo/dr_grpo still count the row (count_empty_rows) while bnpo counts only tokens."""
    from ablate.pipeline.base import Rollouts, StageEnv
    from ablate.pipeline.stages import MaskTruncated
    from ablate.tasks.base import Problem
    from ablate.policy.forward import pad_rows

    lengths, cut = [8, 7, 8, 3, 8, 2], [False, True, False, False, True, False]
    T = 8
    r = Rollouts(problems=[Problem(prompt="p", answer="a")], prompt_ids=[[1]], group=[0] * 6,
                 response_ids=[[5] * n for n in lengths], texts=[""] * 6, rewards=[1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
                 components=[{}] * 6, is_demo=[False] * 6, truncated=list(cut), loss_weight=[1.0] * 6,
                 meta=[{}] * 6)
    env = StageEnv(tokenizer=None, task=None, max_new_tokens=T)
    out = MaskTruncated()(r, env)
    assert out.rewards == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0] and len(out) == 6  # rows and rewards stay
    assert env.stats["train/masked_truncated"] == 2.0
    _, ours_mask = pad_rows(out.response_ids, 0, left=False)
    ours_mask = torch.nn.functional.pad(ours_mask, (0, T - ours_mask.shape[1])).to(torch.float64)
    completion_mask = torch.zeros(6, T, dtype=torch.float64)
    for i, n in enumerate(lengths):
        completion_mask[i, :n] = 1.0
    is_truncated = torch.tensor(cut)
    trl_mask = completion_mask * (~is_truncated).unsqueeze(1).int()  # TRL's line, verbatim
    torch.testing.assert_close(ours_mask, trl_mask)

    g = torch.Generator().manual_seed(3)
    logp = (-torch.rand(6, T, generator=g, dtype=torch.float64) - 0.1).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(6, T, generator=g, dtype=torch.float64)
    adv = torch.randn(6, 1, generator=g, dtype=torch.float64).expand(6, T).clone()
    chunks = [slice(0, 3), slice(3, 6)]
    per_token = -adv * torch.exp(logp - logp.detach())
    m = trl_mask
    if loss_type == "grpo":
        want = sum(((per_token[c] * m[c]).sum(-1) / m[c].sum(-1).clamp(min=1.0)).mean() / 2 for c in chunks)
        agg = Aggregation("seq-mean-token-mean", scope="microbatch", count_empty_rows=True)
    elif loss_type == "dr_grpo":
        want = sum((per_token[c] * m[c]).sum() / (per_token[c].size(0) * T) / 2 for c in chunks)
        agg = Aggregation("seq-mean-token-sum-norm", constant=T, scope="microbatch", count_empty_rows=True)
    else:
        want = sum((per_token[c] * m[c]).sum() / m[c].sum().clamp(min=1.0) / 2 for c in chunks)
        agg = Aggregation("token-mean", scope="microbatch")
    got = _ours(agg, logp, old, adv, ours_mask, chunks)
    torch.testing.assert_close(got, want)
    g_want = grad_of(want, logp)
    torch.testing.assert_close(grad_of(got, logp), g_want)
    # without the stage the truncated rows' tokens would train: a different gradient
    unmasked = _ours(agg, logp, old, adv, completion_mask, chunks)
    assert not torch.allclose(grad_of(unmasked, logp), g_want)
