"""Logged KL and entropy estimators against exact values on small categorical distributions.

``train/kl_old`` estimates KL(π_old ‖ π_θ) from tokens sampled by π_old (k3, r = π_θ/π_old);
``train/kl_ref`` estimates KL(π_θ ‖ π_ref) from on-policy tokens (k3, r = π_ref/π_θ);
``train/entropy`` is the exact per-token entropy of the temperature-scaled policy.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from ablate.upge.aggregation import Aggregation
from ablate.upge.batch import RolloutBatch
from ablate.upge.estimator import UPGE
from ablate.upge.slots.denominator import Behaviour
from ablate.upge.slots.likelihood import Identity
from ablate.upge.slots.mask import NoMask

D = torch.float64
Q = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=D)  # behaviour policy π_old
P = torch.tensor([0.3, 0.3, 0.2, 0.1, 0.1], dtype=D)  # current policy π_θ


def exact_kl(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * (a / b).log()).sum())


def _diags(logp, old_logp, ref_logp=None):
    n = logp.shape[0]
    batch = RolloutBatch(input_ids=torch.zeros(n, 2, dtype=torch.long),
                         attention_mask=torch.ones(n, 2, dtype=torch.long),
                         response_mask=torch.ones(n, 1, dtype=D), old_logp=old_logp[:, None],
                         rewards=torch.zeros(n, dtype=D), group_ids=torch.arange(n), prompt_len=1,
                         ref_logp=None if ref_logp is None else ref_logp[:, None],
                         advantages=torch.zeros(n, 1, dtype=D))
    est = UPGE(NoMask(), Behaviour(), Identity(), Aggregation("token-mean"))
    return est(batch, logp[:, None].clone().requires_grad_(True)).metrics


def _sample(dist: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    return torch.multinomial(dist, n, replacement=True, generator=torch.Generator().manual_seed(seed))


def test_kl_old_matches_exact_kl_of_behaviour_to_current():
    y = _sample(Q, 400_000, 0)
    m = _diags(P.log()[y], Q.log()[y])
    exact = exact_kl(Q, P)
    k3 = (P[y] / Q[y]) - 1 - (P[y] / Q[y]).log()
    se = float(k3.std()) / math.sqrt(len(y))
    assert abs(m["kl_old"].item() - exact) < 4 * se, (m["kl_old"].item(), exact)
    # the old estimator (r = π_old/π_θ on π_old's samples) is not this KL: far outside the error bars
    rev = (Q[y] / P[y]) - 1 - (Q[y] / P[y]).log()
    assert abs(float(rev.mean()) - exact) > 20 * se


def test_kl_old_is_zero_on_policy():
    y = _sample(Q, 1000, 1)
    assert _diags(Q.log()[y], Q.log()[y])["kl_old"].item() == 0.0


def test_kl_ref_matches_exact_kl_of_current_to_reference():
    y = _sample(P, 400_000, 2)
    m = _diags(P.log()[y], P.log()[y], ref_logp=Q.log()[y])
    exact = exact_kl(P, Q)
    r = Q[y] / P[y]
    se = float((r - 1 - r.log()).std()) / math.sqrt(len(y))
    assert abs(m["kl_ref"].item() - exact) < 4 * se
    assert m["kl_old"].item() == 0.0


def test_entropy_from_token_logprobs_is_exact_at_the_sampling_temperature():
    from ablate.policy import token_logprobs

    logits = torch.tensor([[[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [1.0, 3.0, 0.0]]])

    class Fixed(torch.nn.Module):
        def forward(self, **kw):
            return SimpleNamespace(logits=logits)

    ids = torch.tensor([[0, 1, 2]])
    for temp in (1.0, 0.7):
        _, ent = token_logprobs(Fixed(), ids, torch.ones_like(ids), 1, temp, with_entropy=True)
        p = torch.softmax(logits[0, :2] / temp, -1)
        exact = -(p * p.log()).sum(-1)
        torch.testing.assert_close(ent[0], exact.float(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n,c,k", [(8, 3, 1), (8, 3, 4), (6, 0, 2), (6, 6, 3), (10, 1, 10)])
def test_pass_at_k_equals_exact_subset_probability(n, c, k):
    from itertools import combinations

    from ablate.metrics.passk import pass_at_k
    items = [1] * c + [0] * (n - c)
    subsets = list(combinations(range(n), k))
    exact = sum(1 for s in subsets if any(items[i] for i in s)) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
