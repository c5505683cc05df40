"""EPO (arXiv 2509.22576) against independent transcriptions of the authors' own text and code.

- Paper v2 (10 Feb 2026), Appendix C Algorithm 2 ("PyTorch-style pseudocode for EPO loss"), with
  eqs. 3–5 and Algorithm 1: final_loss = pg_loss − λ·(entropy_loss − β_k·smoothing_loss),
  smoothing_loss = agg(α·([κ_l·H̄ − H]₊ + [H − κ_r·H̄]₊)), β_k = 1 + exp(−γ·k/k_mid), k_mid = ⌊K/2⌋,
  H̄ the mean of the previous steps' entropies; Table 2 (GRPO+EPO): λ 0.001, κ (0, 2), γ 3, α 0.05.
- The authors' code, WujiangXu/EPO@5b6fa98e034639b95afbfb24f98d1cb1e5197542
  verl/workers/actor/dp_actor.py (``generate_entropy_penalty`` token mode, the loss lines of
  ``update_policy``) with the fork's verl helpers it calls (compute_policy_loss vanilla with
  clip_ratio_c 3, agg_loss token-mean, kl_penalty low_var_kl) and examples/general_running_server.sh
  (GRPO branch: kl_loss_coef 0.01). The code's penalty is a constant mask (no gradient): the preset
  follows the paper; the tests below pin both facts.
"""

from __future__ import annotations

import math

import pytest
import torch

from ablate.component import StepInfo, load_tree_state, tree_state
from ablate.upge.adaptive import EntropyCorridor
from ablate.upge.slots.base import TokenContext
from tests.upge.reference_losses import D, Case
from tests.upge.test_authors_transcribed import verl_grpo_advantages
from tests.upge.test_new_presets_slots import entropy_like, with_singleton
from tests.upge.test_new_presets_state import batch_of
from tests.upge.test_presets_reference import GS, algorithm, assert_same, make_case, preset_cfg

REFERENCED = {"epo"}
EPO_CODE = "WujiangXu/EPO@5b6fa98e034639b95afbfb24f98d1cb1e5197542"


# ------------------------------------------------------------------------------------------------
# transcriptions
# ------------------------------------------------------------------------------------------------

def agg_token_mean(loss_mat, loss_mask):
    """verl agg_loss(loss_agg_mode="token-mean") = masked_mean."""
    return (loss_mat * loss_mask).sum() / loss_mask.sum()


def compute_policy_loss(old_log_prob, log_prob, advantages, response_mask, cliprange=0.2, clip_ratio_c=3.0):
    """verl vanilla compute_policy_loss as the EPO fork calls it (clip 0.2/0.2, dual clip 3)."""
    negative_approx_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    pg_losses1 = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
    pg_losses3 = -advantages * clip_ratio_c
    clip_pg_losses2 = torch.min(pg_losses3, clip_pg_losses1)
    pg_losses = torch.where(advantages < 0, clip_pg_losses2, clip_pg_losses1)
    return agg_token_mean(pg_losses, response_mask)


def kl_penalty_low_var_kl(logprob, ref_logprob):
    kl = torch.clamp(ref_logprob - logprob, min=-20, max=20)
    kld = torch.exp(kl) - kl - 1
    return torch.clamp(kld, min=-10, max=10)


def paper_generate_entropy_penalty(current_entropy, historical_avg_entropy, min_ratio, max_ratio, penalty_weight):
    """Eq. 3 times α (Algorithm 2 line 26): α·([κ_l·H̄ − H]₊ + [H − κ_r·H̄]₊) per token."""
    low = torch.clamp(min_ratio * historical_avg_entropy - current_entropy, min=0)
    high = torch.clamp(current_entropy - max_ratio * historical_avg_entropy, min=0)
    return penalty_weight * (low + high)


def calculate_dynamic_beta(current_step, total_steps, gamma=3.0):
    """Eq. 5 / Algorithm 1 line 12: β_k = 1 + exp(−γ·k/k_mid), k_mid = ⌊K/2⌋."""
    k_mid = total_steps // 2
    return 1 + math.exp(-gamma * current_step / k_mid)


def paper_epo_loss(logp, c: Case, entropy_history, k, K, lambda_=0.001, kappa_l=0.0, kappa_r=2.0,
                   alpha=0.05, kl_coef=0.01):
    """Algorithm 2 on the GRPO branch of the authors' script (+ its verl low_var_kl KL loss)."""
    entropy = entropy_like(logp)
    mask = c.mask
    pg_loss = compute_policy_loss(c.old_logp, logp, verl_grpo_advantages(c), mask)
    entropy_loss = agg_token_mean(entropy, mask)
    historical_avg_entropy = torch.tensor(entropy_history, dtype=D).mean()
    penalty_mask = paper_generate_entropy_penalty(entropy, historical_avg_entropy, kappa_l, kappa_r, alpha)
    smoothing_loss = agg_token_mean(penalty_mask, mask)
    beta_k = calculate_dynamic_beta(k, K)
    entropy_term = entropy_loss - beta_k * smoothing_loss
    final_loss = pg_loss - lambda_ * entropy_term
    kl_loss = agg_token_mean(kl_penalty_low_var_kl(logp, c.ref_logp), mask)
    return final_loss + kl_loss * kl_coef


def code_generate_entropy_penalty(entropy_history, entropy, rollout_step, min_ratio=0.8, max_ratio=1.2,
                                  out_range_penalty=0.1):
    """dp_actor.py generate_entropy_penalty, mask_mode "token" (prints dropped)."""
    if len(entropy_history) == 0:
        return torch.ones_like(entropy)
    avg_entropy_per_sample = entropy_history[rollout_step.astype("int32")]
    avg_entropy_per_sample = torch.tensor(avg_entropy_per_sample, device=entropy.device, dtype=entropy.dtype)
    token_avg_entropy = entropy
    avg_entropy_per_sample = avg_entropy_per_sample.unsqueeze(-1).expand_as(token_avg_entropy)
    lower_bound = avg_entropy_per_sample * min_ratio
    upper_bound = avg_entropy_per_sample * max_ratio
    within_range = (token_avg_entropy > lower_bound) & (token_avg_entropy < upper_bound)
    sample_mask = torch.where(within_range, 0, out_range_penalty)
    return sample_mask


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------

def _epo_grad(c: Case, history: list, k: int, K: int, *overrides: str) -> torch.Tensor:
    algo = algorithm("epo", *overrides)
    reg = algo.objective.regularizers["smooth"]
    reg.load_state_dict({"sum": float(sum(history)), "n": len(history)})
    logp = c.logp.detach().clone().requires_grad_(True)
    h = entropy_like(logp)
    batch = batch_of(c, info=StepInfo(step=k + 1, total_steps=K))
    out = algo.objective.batch_loss(batch, logp, entropy=h.detach(), entropy_grad=h)
    (g,) = torch.autograd.grad(out.loss, logp)
    return g


@pytest.mark.parametrize("k", [1, 30, 100])
@pytest.mark.parametrize("G", GS)
def test_epo_gradient_equals_the_papers_algorithm_2(G, k):
    """The preset's gradient equals Algorithm 2's on a batch where the corridor's upper cap binds
    (κ_r·H̄ = 0.2 < the largest token entropies) at steps before, near and after k_mid of K = 125."""
    c = with_singleton(make_case(G, spread=1.2))
    history = [0.12, 0.08, 0.1]
    logp = c.logp.detach().clone().requires_grad_(True)
    h = entropy_like(logp)
    assert bool(((h > 0.2) & (c.mask > 0)).any()), "degenerate case: the corridor never binds"
    (want,) = torch.autograd.grad(paper_epo_loss(logp, c, history, k, 125), logp)
    assert_same(_epo_grad(c, history, k, 125), want)


@pytest.mark.parametrize("G", GS)
def test_epo_lower_branch_of_the_corridor(G):
    """κ_l > 0 (the rebuttal's two-sided corridor, the fork's config default 0.8) uses eq. 3's left term."""
    c = with_singleton(make_case(G, spread=1.2))
    history = [0.25]
    logp = c.logp.detach().clone().requires_grad_(True)
    (want,) = torch.autograd.grad(paper_epo_loss(logp, c, history, 10, 125, kappa_l=0.8), logp)
    assert_same(_epo_grad(c, history, 10, 125, "regularizers.smooth.kappa_low=0.8"), want)


def test_epo_penalised_tokens_are_the_authors_code_mask_and_its_mask_has_no_gradient():
    """The corridor P > 0 on exactly the tokens the code's generate_entropy_penalty marks; the
    code's penalty is built with torch.where from a comparison, so it carries no gradient: its
    loss ``entropy_loss − agg(mask)·coef`` has the entropy bonus's gradient alone."""
    import numpy as np

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 7, 11, generator=g, dtype=D, requires_grad=True)
    logp_v = torch.log_softmax(logits, -1)
    entropy = -(logp_v.exp() * logp_v).sum(-1)
    mask = torch.ones(4, 7, dtype=D)
    history = np.array([float(entropy.detach().mean())])
    code_mask = code_generate_entropy_penalty(history, entropy, np.zeros(4), min_ratio=0.8, max_ratio=1.05)
    reg = EntropyCorridor(coef=1.0, kappa_low=0.8, kappa_high=1.05)
    reg.observe(StepInfo(step=1, total_steps=4), {"train/entropy": float(history[0])})
    ctx = TokenContext(logp=logp_v[..., 0], old_logp=logp_v[..., 0].detach(), advantages=torch.zeros(4, 7, dtype=D),
                       response_mask=mask, is_demo=torch.zeros(4, dtype=torch.bool), entropy_grad=entropy,
                       info=StepInfo(step=2, total_steps=4))
    ours = reg(ctx)
    assert bool((code_mask > 0).any()) and bool((code_mask == 0).any())
    assert torch.equal(ours.detach() > 0, code_mask > 0)
    code_loss = agg_token_mean(entropy, mask) - agg_token_mean(code_mask, mask) * 1.0
    (g_code,) = torch.autograd.grad(code_loss, logits, retain_graph=True)
    (g_bonus,) = torch.autograd.grad(agg_token_mean(entropy, mask), logits, retain_graph=True)
    torch.testing.assert_close(g_code, g_bonus, rtol=0, atol=0)
    (g_ours,) = torch.autograd.grad(agg_token_mean(ours, mask), logits)
    assert float(g_ours.abs().sum()) > 0  # the paper's corridor does act


def test_entropy_corridor_history_schedule_and_state():
    """Zero before any history; H̄_W is the mean of the observed per-step entropies; β_0 = 2,
    β_{k_mid} = 1 + e^{−γ}; the window round-trips through component state."""
    reg = EntropyCorridor(coef=1.0, kappa_low=0.5, kappa_high=1.5, gamma=3.0)
    h = torch.tensor([[0.1, 1.0, 5.0]], dtype=D, requires_grad=True)
    ctx = TokenContext(logp=h, old_logp=h.detach(), advantages=torch.zeros_like(h),
                       response_mask=torch.ones_like(h), is_demo=torch.zeros(1, dtype=torch.bool),
                       entropy_grad=h, info=StepInfo(step=1, total_steps=10))
    assert float(reg(ctx).abs().sum()) == 0.0
    reg.observe(StepInfo(step=1, total_steps=10), {"train/entropy": 1.0})
    reg.observe(StepInfo(step=2, total_steps=10), {"train/entropy": 3.0})
    reg.observe(StepInfo(step=3, total_steps=10), {})  # no entropy logged: window unchanged
    assert reg.reference == pytest.approx(2.0)
    assert reg.beta(StepInfo(step=1, total_steps=10)) == pytest.approx(2.0)
    assert reg.beta(StepInfo(step=6, total_steps=10)) == pytest.approx(1 + math.exp(-3.0))
    ctx.info = StepInfo(step=6, total_steps=10)
    want = (1 + math.exp(-3.0)) * torch.tensor([[1.0 - 0.1, 0.0, 5.0 - 3.0]], dtype=D)
    torch.testing.assert_close(reg(ctx).detach(), want)
    algo = algorithm("epo")
    algo.objective.regularizers["smooth"].load_state_dict(reg.state_dict())
    other = algorithm("epo")
    load_tree_state(other, tree_state(algo))
    assert other.objective.regularizers["smooth"].reference == pytest.approx(2.0)


def test_epo_preset_records_the_authors_sources():
    m = preset_cfg("epo").method
    assert EPO_CODE in m.reference and "Algorithm 2" in m.reference
    assert m.fidelity == "approximation" and "single-turn reduction: each response is one turn" in m.notes
