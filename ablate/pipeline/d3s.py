"""D³S sample level (arXiv 2509.22115): keep the subset of rollouts, across groups, whose advantages
have the largest variance; the subset grows linearly over training (step context ``env.info``)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ablate.spec.params import NonNeg, PosFrac
from ablate.component import Needs
from ablate.pipeline.base import Rollouts, Stage, StageEnv
from ablate.upge import functional as F
from ablate.upge.slots.d3s import linear_schedule


def max_variance_subset(values: list[float], k: int) -> list[int]:
    """Indices of a size-k subset of ``values`` with the largest (population) variance.

    An optimal subset is always the j largest plus the k − j smallest values for some j (moving an
    inner value outward never lowers the variance), so k + 1 candidates suffice. Ties in value
    break by position (stable sort); among equally good j the smallest wins."""
    n = len(values)
    k = max(0, min(k, n))
    order = sorted(range(n), key=lambda i: (values[i], i))
    best, best_var = None, -math.inf
    for j in range(k + 1):
        pick = order[n - j:] if j else []
        pick = order[: k - j] + pick
        xs = [values[i] for i in pick]
        m = sum(xs) / len(xs) if xs else 0.0
        var = sum((x - m) ** 2 for x in xs) / len(xs) if xs else 0.0
        if var > best_var + 1e-12:
            best, best_var = pick, var
    return sorted(best or [])


class MaxVarianceSubset(Stage):
    """Keep ⌈f·n⌉ of the n on-policy rollouts maximising Var(Â), f linear from ``keep_init`` to
    ``keep_final`` over training; Â is GRPO's group z-score ((r − mean)/(std + eps), Bessel std,
    singleton: mean 0, std 1 as verl) over the *full* groups, recorded in each kept row's metadata
    under ``key`` for ``advantage=d3s`` (StageAdvantage). Demonstration rows are always kept (with
    the same group z-score). Logs ``train/d3s_keep_frac``.
    """

    NEEDS: ClassVar[Needs] = Needs(step_info=True)

    def __init__(self, keep_init: PosFrac = 0.5, keep_final: PosFrac = 1.0, eps: NonNeg = 1e-6,
                 key: str = "d3s_advantage"):
        self.keep_init = keep_init
        self.keep_final = keep_final
        self.eps = eps
        self.key = str(key)

    def advantages(self, r: Rollouts) -> list[float]:
        rew = torch.tensor(r.rewards, dtype=torch.float64)
        gid = torch.tensor(r.group, dtype=torch.long)
        on = ~torch.tensor(r.is_demo, dtype=torch.bool) & ~torch.isnan(rew)
        st = F.group_stats(torch.nan_to_num(rew), gid, on, unbiased=True)
        single = st.count <= 1
        mean = torch.where(single, torch.zeros_like(st.mean), st.mean)
        std = torch.where(single, torch.ones_like(st.std), torch.nan_to_num(st.std, nan=1.0))
        a = (torch.nan_to_num(rew) - mean) / (std + self.eps)
        a = torch.where(F.group_all_equal(torch.nan_to_num(rew), gid, on), torch.zeros_like(a), a)
        return torch.where(torch.isnan(rew), torch.zeros_like(a), a).tolist()

    def __call__(self, r: Rollouts, env: StageEnv) -> Rollouts:
        if len(r) == 0:
            return r
        frac = linear_schedule(self.keep_init, self.keep_final, env.info, "MaxVarianceSubset")
        adv = self.advantages(r)
        on_rows = [i for i in range(len(r)) if not r.is_demo[i]]
        k = min(len(on_rows), max(1, math.ceil(frac * len(on_rows) - 1e-9)))
        chosen = {on_rows[j] for j in max_variance_subset([adv[i] for i in on_rows], k)}
        keep = [i for i in range(len(r)) if r.is_demo[i] or i in chosen]
        for i in keep:
            r.meta[i] = {**r.meta[i], self.key: adv[i]}
        env.stats["train/d3s_keep_frac"] = k / max(1, len(on_rows))
        return r.keep_rows(keep)
