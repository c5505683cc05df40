"""LCO-KLD against the authors' code (homzer/llama-rlhf@0bde42a2447adbb12c9567c4723790a5727cd7d1
src/ppo/trainer_lco.py ``ParallelLCOTrainerForRuleRM.forward`` with src/utils.py
``estimate_vocab_adv`` and ``create_lco_log_target``), and the full-vocabulary logits plan."""

from __future__ import annotations

import pytest
import torch

from ablate.component import Needs
from ablate.objectives.lco import LCOTerm
from ablate.upge.aggregation import Normalizer
from ablate.upge.slots.base import TokenContext
from tests.upge.test_estimator import make_batch


def authors_estimate_vocab_adv(old_logits, advantages, advantage_indices):
    """estimate_vocab_adv, transcribed (advantages/indices [N, known_size])."""
    old_probs = torch.gather(torch.softmax(old_logits, dim=-1), dim=-1, index=advantage_indices)
    advantages = advantages * (1 - old_probs)
    estimated = -torch.sum(old_probs * advantages, dim=-1) / torch.clamp(1 - old_probs.sum(-1), min=0.1)
    estimated = torch.repeat_interleave(estimated.unsqueeze(-1), repeats=old_logits.shape[-1], dim=-1)
    estimated[torch.arange(estimated.shape[0])[:, None], advantage_indices] = advantages
    return estimated


def authors_lco_log_target(old_logits, advantages, beta):
    log_target = torch.log_softmax(old_logits, dim=-1) + advantages / beta
    return log_target - torch.logsumexp(log_target, dim=-1, keepdim=True)


def authors_lco_loss(logits, actions, advantages, beta):
    """ParallelLCOTrainerForRuleRM.forward on the valid tokens ([N, V], [N], [N]); old = sg(logits)."""
    crit = torch.nn.KLDivLoss(reduction="none", log_target=True)
    old_logits = logits.detach()
    pos = advantages > 0
    vadv = authors_estimate_vocab_adv(old_logits, advantages[:, None], actions[:, None])
    loss = 0.0
    for m in (pos, ~pos):
        t = authors_lco_log_target(old_logits[m], vadv[m], beta)
        loss = loss + crit(torch.log_softmax(logits[m], dim=-1), t).sum(-1).mean().nan_to_num(0.0)
    return loss


def _case(seed=0, B=6, T=5, V=11, all_pos=False):
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(B, T, V, generator=g, dtype=torch.float64)).requires_grad_(True)
    ids = torch.randint(0, V, (B, T + 2), generator=g)
    mask = torch.ones(B, T, dtype=torch.float64)
    mask[0, 3:] = 0
    mask[4, 1:] = 0
    adv = torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, T).clone()
    if all_pos:
        adv = adv.abs() + 0.1
    batch = make_batch(torch.zeros(B, T, dtype=torch.float64), adv, mask)
    batch.input_ids = ids
    batch.prompt_len = 2
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 2:, None]).squeeze(-1)
    return logits, logp, batch, mask, adv, ids[:, 2:]


@pytest.mark.parametrize("beta,all_pos", [(1.0, False), (0.3, False), (1.0, True)])
def test_lco_term_matches_the_authors_lco_loss_and_gradient(beta, all_pos):
    logits, logp, batch, mask, adv, actions = _case(3, all_pos=all_pos)
    valid = mask > 0
    want = authors_lco_loss(logits[valid], actions[valid], adv[valid], beta)
    (g_want,) = torch.autograd.grad(want, logits)
    ctx = TokenContext.from_batch(batch, logp, logits=logits)
    got = LCOTerm(beta=beta).loss(ctx, Normalizer.of(mask)).loss
    (g_got,) = torch.autograd.grad(got, logits)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(g_got, g_want)
    assert float(g_got.abs().sum()) > 0 and bool((g_got[~valid] == 0).all())


def test_lco_declares_full_logits_and_the_preset_builds():
    from ablate.config import compose_config
    from ablate.train.components import build_algorithm

    assert LCOTerm().needs().full_logits
    algo = build_algorithm(compose_config(["method=lco"]))
    assert algo.needs().full_logits and isinstance(algo.objective.primary, LCOTerm)
    assert not build_algorithm(compose_config(["method=grpo"])).needs().full_logits
    assert (Needs(full_logits=True) | Needs()).full_logits
    with pytest.raises(RuntimeError, match="full_logits"):
        _, logp, batch, mask, *_ = _case()
        LCOTerm().loss(TokenContext.from_batch(batch, logp), Normalizer.of(mask))


LCO_HEAD = "homzer/llama-rlhf@486887fbe0b9129bc9a96f669c859b51f459ab94 src/ppo/trainer_lco.py"


def authors_log_cosh(input_, target):
    """src/criterion.py LogCoshLoss.forward, transcribed."""
    import math

    abs_diff = torch.abs(input_ - target)
    return abs_diff + torch.log(1 + torch.exp(-2 * abs_diff)) - math.log(2)


def authors_lco_logit_loss(logits, actions, advantages, beta, form):
    """ParallelLCOWith{MSE,LogCosh}TrainerForRuleRM.forward on the valid tokens ([N, V], [N], [N])."""
    logits = torch.gather(logits, dim=-1, index=actions.unsqueeze(-1)).squeeze(-1)
    expanded_beta = torch.where(advantages > 0, beta, beta * 100).to(advantages)
    target = (logits.detach() + advantages / expanded_beta).to(logits)
    if form == "mse":
        per = torch.nn.MSELoss(reduction="none").forward(logits, target=target)
    else:
        per = authors_log_cosh(logits, target)
    return per.mean().nan_to_num(0.0)


@pytest.mark.parametrize("form,beta", [("mse", 2.0), ("log_cosh", 2.0), ("log_cosh", 0.01), ("mse", 0.5)])
def test_lco_mse_and_log_cosh_forms_match_the_authors_trainers(form, beta):
    logits, logp, batch, mask, adv, actions = _case(5)
    valid = mask > 0
    want = authors_lco_logit_loss(logits[valid], actions[valid], adv[valid], beta, form)
    (g_want,) = torch.autograd.grad(want, logits)
    ctx = TokenContext.from_batch(batch, logp, logits=logits)
    got = LCOTerm(beta=beta, form=form).loss(ctx, Normalizer.of(mask)).loss
    (g_got,) = torch.autograd.grad(got, logits)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(g_got, g_want)
    # only the sampled tokens' logits move, and negatives are damped 100×
    nz = (g_got != 0).sum(-1)
    assert bool((nz[valid] == 1).all()) and bool((g_got[~valid] == 0).all())


def test_lco_forms_compose_as_objective_choices():
    from ablate.config import compose_config
    from ablate.train.components import build_algorithm

    for form in ("mse", "log_cosh"):
        algo = build_algorithm(compose_config(["method=lco", f"objective=lco_{form}"]))
        term = algo.objective.primary
        assert term.form == form and term.beta == 2.0 and algo.needs().full_logits
