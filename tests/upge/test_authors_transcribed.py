"""Presets against transcriptions of the authors' own released code (issue 18, item "authors'
numbers as the reference"): each reference below follows the named file at the recorded commit line
by line (verl helpers it calls inlined), not a re-derivation of the formula.

- BAPO: WooooDyy/BAPO@3b8389c5a81e715a6fbaa2bb0fa688fe54ace9cf recipe/bapo/policy_loss.py
  (``_compute_effective_advantage``, ``compute_policy_loss_bapo``; loss_agg_mode token-mean,
  clip_ratio_c 3.0, the run_bapo_example.sh bounds) with the GRPO advantage of the recipe's verl.
- RiskPO: RTkenny/RiskPO@8dce3fa771c9e3bc1d2286fe8f9afb8250b18a29 verl/trainer/ppo/core_algos.py
  (``compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking`` with the script's settings:
  use_mixing_risk_measure, w_mix 1.5, natural_baseline_adv False, credit sum-mean, quantiles 0.2/0.8,
  no tracked quantiles reaching it) and the fork's verl vanilla loss (clip 0.2, dual clip 3), token-mean.
  ``bundle_uid``: consecutive bundles of 5 prompts, as the preset reads the fork's trainer.
- LCO: homzer/llama-rlhf@0bde42a2447adbb12c9567c4723790a5727cd7d1 src/ppo/trainer_lco.py (the
  transcription lives in tests/objectives/test_lco.py) on the composed ``lco`` preset.
- COPO: hijih/copo-code@f66883fb89271d4664bfdd9ca98acf6d28d3887b verl/trainer/ppo/core_algos.py
  (``compute_score_global``, ``compute_grpo_outcome_advantage_with_global``,
  ``compute_policy_loss_with_global``) as dp_actor.py@9ddd4cba calls it, with README.md/run_copo.sh@c15c75f
  (global_flg soft-with-zero, k 5, b 1, clip 0.2, dual clip 3, seq-mean-token-mean).
- GBPO: bounded-ratio-rl/bounded_ratio_rl@64ff1cdfb2bc891899b541abcbeb81ad2d5b14e4
  src/verl/trainer/ppo/core_algos.py (``compute_gbpo_outcome_advantage_and_target``,
  ``compute_policy_loss_gbpo``; clip 0.3/0.3, gbpo_temperature 1e-4 as in ttrl/Qwen2.5-Math/*.sh),
  token-mean, regularizers left out (the verl KL/entropy terms are tested elsewhere).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import torch

from tests.upge.reference_losses import Case
from tests.upge.test_new_presets_slots import with_singleton
from tests.upge.test_presets_reference import GS, ablate_grad, assert_same, case_where, ref_grad

REFERENCED = {"bapo", "riskpo", "lco", "gbpo", "copo"}  # presets with an authors'-code gradient test here
RISKPO = "RTkenny/RiskPO@8dce3fa771c9e3bc1d2286fe8f9afb8250b18a29 verl/trainer/ppo/core_algos.py"
BAPO = "WooooDyy/BAPO@3b8389c5a81e715a6fbaa2bb0fa688fe54ace9cf recipe/bapo/policy_loss.py"
COPO = "hijih/copo-code@f66883fb89271d4664bfdd9ca98acf6d28d3887b verl/trainer/ppo/core_algos.py"
GBPO = "bounded-ratio-rl/bounded_ratio_rl@64ff1cdfb2bc891899b541abcbeb81ad2d5b14e4 src/verl/trainer/ppo/core_algos.py"


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


def riskpo_bundle_advantage(scores, index, bundle_uid, epsilon=1e-6, quantile_down=0.2, quantile_up=0.8,
                            w_mix=1.5, natural_baseline_adv=False, norm_adv_by_std_in_grpo=True):
    """compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking, use_mixing_risk_measure=True,
    credit_assign_mode="sum-mean", q_track_* None, use_mean_as_baseline False; [B] advantages."""
    bundle_to_questions = defaultdict(set)
    bundle_to_question_responses = defaultdict(lambda: defaultdict(list))
    for i in range(len(scores)):
        bundle_to_questions[bundle_uid[i]].add(index[i])
        bundle_to_question_responses[bundle_uid[i]][index[i]].append((i, scores[i]))
    bundle_paper_scores, bundle_paper_combinations, question_means = {}, {}, {}
    for bundle_id, questions in bundle_to_questions.items():
        paper_scores, paper_combinations, question_response_lists = [], [], []
        for q_id in sorted(questions):
            responses = bundle_to_question_responses[bundle_id][q_id]
            question_response_lists.append(responses)
            question_means[q_id] = torch.mean(torch.tensor([sc for _, sc in responses], dtype=scores.dtype))
        num_papers = min(len(r) for r in question_response_lists)
        for paper_idx in range(num_papers):
            response_indices, paper_score = [], 0
            for question_responses in question_response_lists:
                response_idx, response_score = question_responses[paper_idx]
                response_indices.append(response_idx)
                paper_score += response_score
            paper_scores.append(paper_score)
            paper_combinations.append(response_indices)
        bundle_paper_scores[bundle_id] = torch.tensor(paper_scores, dtype=scores.dtype)
        bundle_paper_combinations[bundle_id] = paper_combinations
    advantages = torch.zeros_like(scores)
    for bundle_id in bundle_to_questions:
        ps = bundle_paper_scores[bundle_id]
        if len(ps) == 1:
            q_down, q_up, std = ps[0], ps[0], torch.tensor(1.0, dtype=scores.dtype)
        else:
            q_down, q_up = torch.quantile(ps, quantile_down), torch.quantile(ps, quantile_up)
            std = torch.std(ps)
        for paper_combination in bundle_paper_combinations[bundle_id]:
            paper_score = sum(scores[idx] for idx in paper_combination)
            paper_advantage = torch.clamp(paper_score - q_down, min=0) - torch.clamp(paper_score - q_up, min=0)
            if natural_baseline_adv:
                paper_advantage = paper_advantage + q_down - q_up
            paper_advantage = paper_advantage / (quantile_up - quantile_down + epsilon)
            cvar_advantage = -torch.clamp(q_down - paper_score, min=0) / (quantile_down + epsilon)
            paper_advantage = (w_mix * cvar_advantage + paper_advantage) / (w_mix + 1)
            if norm_adv_by_std_in_grpo:
                paper_advantage = paper_advantage / (std + epsilon)
            local_indices, local_ratios = [], []
            for response_idx in paper_combination:
                local_indices.append(response_idx)
                local_ratios.append(scores[response_idx] - question_means[index[response_idx]])
            sum_ratio_t = torch.stack(local_ratios).sum()
            if sum_ratio_t.abs().item() > 1e-6:
                for response_idx, ratio_t in zip(local_indices, local_ratios):
                    advantages[response_idx] = paper_advantage * (ratio_t / sum_ratio_t)
            else:
                for response_idx in local_indices:
                    advantages[response_idx] = paper_advantage / len(local_indices)
    return advantages


def authors_riskpo_loss(logp, c: Case, bundle_size: int = 5):
    order = list(dict.fromkeys(c.group_ids))  # prompts in batch order
    bundle_uid = [order.index(g) // bundle_size for g in c.group_ids]
    scores = torch.tensor(c.rewards, dtype=c.mask.dtype)
    adv = riskpo_bundle_advantage(scores, c.group_ids, bundle_uid).unsqueeze(-1) * c.mask
    ratio = torch.exp(torch.clamp(logp - c.old_logp, -20.0, 20.0))
    pg1, pg2 = -adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.2)
    clip1 = torch.maximum(pg1, pg2)
    pg = torch.where(adv < 0, torch.min(-adv * 3.0, clip1), clip1)
    return (pg * c.mask).sum() / c.mask.sum()


@pytest.mark.parametrize("n_groups,bundle", [(3, 5), (7, 5), (4, 2)])
@pytest.mark.parametrize("G", GS)
def test_riskpo_preset_gradient_equals_the_authors_bundle_advantage_and_loss(G, n_groups, bundle):
    def moves(c):  # a non-degenerate bundle: some row gets an advantage
        order = list(dict.fromkeys(c.group_ids))
        uid = [order.index(g) // bundle for g in c.group_ids]
        adv = riskpo_bundle_advantage(torch.tensor(c.rewards, dtype=c.mask.dtype), c.group_ids, uid)
        return bool((adv != 0).any())

    c = case_where(moves, G, spread=0.8, n_groups=n_groups)
    over = () if bundle == 5 else (f"advantage.bundle_size={bundle}",)
    want = ref_grad(authors_riskpo_loss, c, bundle_size=bundle)
    assert_same(ablate_grad(c, "riskpo", *over), want)


def test_riskpo_preset_records_the_authors_commit():
    from ablate.methods.catalog import load_presets

    riskpo = next(r for r in load_presets() if r["name"] == "riskpo")
    assert RISKPO.split(" ")[0] in riskpo["reference"]


@pytest.mark.parametrize("G", GS)
def test_lco_preset_gradient_equals_the_authors_lco_loss(G):
    """method=lco composed as `ablate train` composes it: GRPO advantages (verl), then the authors'
    LCO-KLD over the valid tokens' full-vocabulary logits."""
    from ablate.upge.aggregation import Normalizer
    from tests.objectives.test_lco import authors_lco_loss
    from tests.upge.test_presets_reference import algorithm, make_case, to_batch

    c = make_case(G, 1)
    batch = to_batch(c)
    B, T = c.mask.shape
    g = torch.Generator().manual_seed(G)
    V = 13
    logits = (2 * torch.randn(B, T, V, generator=g, dtype=c.mask.dtype)).requires_grad_(True)
    batch.input_ids = torch.cat([torch.zeros(B, 2, dtype=torch.long),
                                 torch.randint(0, V, (B, T), generator=g)], dim=1)
    batch.prompt_len = 2
    logp = torch.log_softmax(logits, -1).gather(-1, batch.input_ids[:, 2:, None]).squeeze(-1)
    obj = algorithm("lco").objective
    obj.compute_advantages(batch)
    out = obj(batch, logp, {k: Normalizer.of(batch.response_mask) for k in ("", "pg")}, logits=logits)
    (got,) = torch.autograd.grad(out.loss, logits)
    valid = c.mask > 0
    adv = verl_grpo_advantages(c)
    want_loss = authors_lco_loss(logits[valid], batch.input_ids[:, 2:][valid], adv[valid], 1.0)
    (want,) = torch.autograd.grad(want_loss, logits)
    assert float(want.abs().sum()) > 0
    assert_same(got, want)


def gbpo_advantage_and_target(c: Case, temperature: float, epsilon: float = 1e-6):
    """compute_gbpo_outcome_advantage_and_target (norm_adv_by_std_in_grpo=True): ([B, T], [B, T])."""
    scores = torch.tensor(c.rewards, dtype=c.mask.dtype)
    index = c.group_ids
    id2score, id2mean, id2std, id2median = defaultdict(list), {}, {}, {}
    bsz = scores.shape[0]
    for i in range(bsz):
        id2score[index[i]].append(scores[i])
    for idx, group_scores in id2score.items():
        if len(group_scores) == 1:
            id2mean[idx] = torch.tensor(0.0, dtype=scores.dtype)
            id2std[idx] = torch.tensor(1.0, dtype=scores.dtype)
            id2median[idx] = torch.tensor(0.0, dtype=scores.dtype)
        else:
            group_scores = torch.stack(group_scores)
            id2mean[idx] = torch.mean(group_scores)
            id2std[idx] = torch.std(group_scores)
            id2median[idx] = torch.quantile(group_scores, 0.5)
    target_scores = torch.empty_like(scores)
    for i in range(bsz):
        z = scores[i] - id2mean[index[i]]
        z_median = scores[i] - id2median[index[i]]
        z = z / (id2std[index[i]] + epsilon)
        z_median = z_median / (id2std[index[i]] + epsilon)
        target_scores[i] = z_median / temperature
        scores[i] = z
    return scores.unsqueeze(-1) * c.mask, target_scores.unsqueeze(-1) * c.mask


def compute_policy_loss_gbpo(old_log_prob, log_prob, advantages, response_mask, target_adv,
                             cliprange_low=0.3, cliprange_high=0.3):
    negative_approx_kl = torch.clamp(log_prob - old_log_prob, min=-20.0, max=20.0)
    ratio = torch.exp(negative_approx_kl)
    target_adv = target_adv.detach()
    scale = torch.sigmoid(target_adv)
    target_ratio = 1.0 - cliprange_low + (cliprange_high + cliprange_low) * scale
    pg_losses = torch.abs((ratio - target_ratio) * advantages.detach())
    # verl agg_loss(loss_agg_mode="token-mean"): masked mean over all tokens
    return (pg_losses * response_mask).sum() / response_mask.sum()


def authors_gbpo_loss(logp, c: Case, temperature: float = 1e-4, clip: float = 0.3):
    adv, target = gbpo_advantage_and_target(c, temperature)
    return compute_policy_loss_gbpo(c.old_logp, logp, adv, c.mask, target, clip, clip)


@pytest.mark.parametrize("temperature", [1e-4, 0.7])
@pytest.mark.parametrize("G", GS)
def test_gbpo_preset_gradient_equals_the_authors_gbpo_loss(G, temperature):
    def mixed(c):  # some group has rewards on both sides of its median
        adv, _ = gbpo_advantage_and_target(c, temperature)
        return bool((adv != 0).any())

    c = with_singleton(case_where(mixed, G, spread=1.0), reward=0.5)
    over = ["regularizers=none"]
    if temperature != 1e-4:
        over.append(f"objective.terms.pg.temperature={temperature}")
    want = ref_grad(authors_gbpo_loss, c, temperature=temperature)
    assert_same(ablate_grad(c, "gbpo", *over), want)


def test_gbpo_target_is_the_bounded_ratio_of_the_group_median():
    """A half-correct group of 4 has median 0.5 (torch.quantile's midpoint): with τ → 0 the target
    ratio is 1 ± ε on either side; a one-row group keeps its raw reward (median 0, std 1)."""
    from ablate.objectives.bounded_ratio import median_target

    r = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5, 0.25], dtype=torch.float64)
    gid = torch.tensor([3, 3, 3, 3, 9, 3])
    z = median_target(r, gid, temperature=1.0)
    std = float(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.25]).std())  # group 3: five rows, median 0.25
    want = [(1 - 0.25) / (std + 1e-6), -0.25 / (std + 1e-6), (1 - 0.25) / (std + 1e-6),
            -0.25 / (std + 1e-6), 0.5 / (1 + 1e-6), 0.0]
    torch.testing.assert_close(z, torch.tensor(want, dtype=torch.float64))
    even = median_target(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.zeros(4), temperature=1e-4)
    ratio_star = 0.7 + 0.6 * torch.sigmoid(even)
    torch.testing.assert_close(ratio_star, torch.tensor([1.3, 0.7, 1.3, 0.7]))


def test_gbpo_preset_records_the_authors_commit():
    from ablate.methods.catalog import load_presets

    gbpo = next(r for r in load_presets() if r["name"] == "gbpo")
    assert GBPO.split(" ")[0] in gbpo["reference"]


def copo_score_global(local_reward, extract_answer):
    """compute_score_global with reward_coef_flg False (the JSON log line left out): (g, H)."""
    def compute_entropy(prob_dist, eps: float = 1e-8):
        prob_dist = torch.tensor(prob_dist, dtype=torch.float32)
        prob_dist = prob_dist[prob_dist > 0]
        return -torch.sum(prob_dist * torch.log2(prob_dist + eps))

    def entropy_from_list(data):
        counts = Counter(data)
        total = sum(counts.values())
        return compute_entropy([count / total for count in counts.values()])

    correct_logp = 0.0
    for i in range(len(local_reward)):
        correct_logp += local_reward[i]
    correct_logp = correct_logp / len(local_reward)
    return correct_logp * 1, entropy_from_list(extract_answer)


def copo_advantage_with_global(c: Case, extract_answer, epsilon: float = 1e-6):
    """compute_grpo_outcome_advantage_with_global (norm_adv_by_std_in_grpo=True):
    (advantages [B, T], global_adv [B, T], entropy [B], local_reward [B])."""
    scores = torch.tensor(c.rewards, dtype=c.mask.dtype)
    index = c.group_ids
    global_scores, local_reward = torch.zeros_like(scores), torch.zeros_like(scores)
    entropy = torch.zeros_like(scores)
    id2score, id2extract_answer = defaultdict(list), defaultdict(list)
    id2mean, id2std, id2global_score, id2entropy = {}, {}, {}, {}
    bsz = scores.shape[0]
    for i in range(bsz):
        id2score[index[i]].append(scores[i])
        id2extract_answer[index[i]].append(extract_answer[i])
    for idx in id2score:
        id2global_score[idx], id2entropy[idx] = copo_score_global(id2score[idx], id2extract_answer[idx])
        if len(id2score[idx]) == 1:
            id2mean[idx], id2std[idx] = torch.tensor(0.0), torch.tensor(1.0)
        else:
            id2mean[idx] = torch.mean(torch.tensor(id2score[idx], dtype=scores.dtype))
            id2std[idx] = torch.std(torch.tensor([id2score[idx]], dtype=scores.dtype))
    global_scores_mean = torch.mean(torch.tensor(list(id2global_score.values()), dtype=scores.dtype))
    global_scores_std = torch.std(torch.tensor(list(id2global_score.values()), dtype=scores.dtype))
    for i in range(bsz):
        entropy[i] = id2entropy[index[i]]
        local_reward[i] = scores[i]
        scores[i] = (scores[i] - id2mean[index[i]]) / (id2std[index[i]] + epsilon)
        global_scores[i] = (id2global_score[index[i]] - global_scores_mean) / (global_scores_std + epsilon)
    return scores.unsqueeze(-1) * c.mask, global_scores.unsqueeze(-1) * c.mask, entropy, local_reward


def copo_policy_loss_with_global(local_reward, global_flg, old_log_prob, log_prob, advantages, response_mask,
                                 global_adv, reward_entropy, cliprange=0.2, clip_ratio_c=3.0, b=1.0, k=5.0):
    """compute_policy_loss_with_global, loss_agg_mode seq-mean-token-mean (verl agg_loss inlined)."""
    ratio = torch.exp(log_prob - old_log_prob)

    def dual_clip(adv):
        pg_losses1 = -adv * ratio
        pg_losses2 = -adv * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
        clip_pg_losses1 = torch.maximum(pg_losses1, pg_losses2)
        clip_pg_losses2 = torch.min(-adv * clip_ratio_c, clip_pg_losses1)
        return torch.where(adv < 0, clip_pg_losses2, clip_pg_losses1)

    pg_losses, global_pg_losses = dual_clip(advantages), dual_clip(global_adv)
    global_loss_weight = torch.sigmoid(k * (reward_entropy - b))
    not_zero = (local_reward != 0).to(local_reward.dtype).unsqueeze(1).expand(-1, advantages.shape[1])
    all_same = (advantages != 0).to(advantages.dtype)[:, 0]
    if global_flg == "soft-with-forced":
        global_loss_weight = global_loss_weight * all_same
        policy_loss = global_pg_losses * (1 - global_loss_weight)[:, None] + pg_losses * global_loss_weight[:, None]
    elif global_flg == "soft-with-zero":
        global_loss_weight = global_loss_weight.unsqueeze(1) * not_zero
        policy_loss = global_pg_losses * (1 - global_loss_weight) + pg_losses * global_loss_weight
    else:
        raise ValueError(global_flg)
    seq_losses = torch.sum(policy_loss * response_mask, dim=-1) / torch.sum(response_mask, dim=-1)
    return torch.mean(seq_losses)


def authors_copo_loss(logp, c: Case, answers, global_flg="soft-with-zero", k=5.0, b=1.0):
    adv, gadv, ent, local_reward = copo_advantage_with_global(c, answers)
    return copo_policy_loss_with_global(local_reward, global_flg, c.old_logp, logp, adv, c.mask, gadv,
                                        ent.to(c.mask.dtype), k=k, b=b)


def _copo_case(G):
    """Groups of G rows with empty rows dropped (verl's seq-mean divides by every row's length),
    answers over a small alphabet (group 0 split over two answers: H ≈ 1 bit, where σ(k(H − b)) is
    steepest)."""
    from tests.objectives.test_terms import answers_for, group_case

    c = group_case(G)
    keep = [i for i in range(c.B) if c.length(i) > 0]
    c = Case(logp=c.logp[keep], old_logp=c.old_logp[keep], ref_logp=c.ref_logp[keep], mask=c.mask[keep],
             rewards=[c.rewards[i] for i in keep], group_ids=[c.group_ids[i] for i in keep],
             is_demo=[c.is_demo[i] for i in keep], loss_weights=[c.loss_weights[i] for i in keep])
    return c, answers_for(c, seed=G)


@pytest.mark.parametrize("blend", ["soft-with-zero", "soft-with-forced"])
@pytest.mark.parametrize("G", GS)
def test_copo_preset_gradient_equals_the_authors_compute_policy_loss_with_global(G, blend):
    from tests.objectives.test_terms import ablate_grad as ablate_grad_with_answers

    c, ans = _copo_case(G)
    over = [] if blend == "soft-with-zero" else [
        f"objective.terms.{t}.advantage.blend={blend}" for t in ("local", "global")]
    want = ref_grad(authors_copo_loss, c, answers=ans, global_flg=blend)
    got = ablate_grad_with_answers(c, "copo", *over, answers=ans)
    # the authors' answer entropy is float32 with log₂(p + 1e-8): ~1e-7 from the exact entropy
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_copo_soft_with_zero_trains_wrong_answers_on_the_global_advantage_only():
    """soft-with-zero gates w on r ≠ 0: a wrong row's weight on Â_local is 0 (the forced gate only
    zeroes rows whose Â_local is 0)."""
    c, ans = _copo_case(4)
    adv, gadv, ent, local_reward = copo_advantage_with_global(c, ans)
    wrong = [i for i in range(c.B) if c.rewards[i] == 0 and float(adv[i, 0]) != 0]
    assert wrong
    lp = c.logp.detach().clone().requires_grad_(True)
    for i in wrong[:1]:
        only_global = copo_policy_loss_with_global(local_reward, "soft-with-zero", c.old_logp, lp, torch.zeros_like(adv),
                                                   c.mask, gadv, ent.to(c.mask.dtype))
        full = copo_policy_loss_with_global(local_reward, "soft-with-zero", c.old_logp, lp, adv, c.mask, gadv,
                                            ent.to(c.mask.dtype))
        (g1,) = torch.autograd.grad(only_global, lp)
        (g2,) = torch.autograd.grad(full, lp)
        torch.testing.assert_close(g1[i], g2[i])


def test_copo_preset_records_the_authors_commit():
    from ablate.methods.catalog import load_presets

    copo = next(r for r in load_presets() if r["name"] == "copo")
    assert COPO.split(" ")[0] in copo["reference"]
