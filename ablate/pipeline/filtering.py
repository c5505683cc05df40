"""PF-PPO policy filtration (arXiv 2409.06957): before the PPO update, keep or resample responses by
reward, because the reward signal is more reliable at some reward values than others.

Modes — verl ``compute_pf_ppo_reweight_data`` (whole batch, resampled with replacement to the same
size with weights w): ``pow`` w = |r|^pow, ``max_min`` w = 1 for the batch's max and min reward else
0, ``max_random`` w = 0.4 for the max else 0.1 (all + 1e-8, as verl). The paper's per-prompt
selections: ``best_of_n`` (keep each prompt's best response), ``best_random`` (best + one other at
random), ``best_worst`` (best + worst). Demonstration rows are never filtered.
"""

from __future__ import annotations

from typing import Literal
import numpy as np

from ablate.errors import choice_error
from ablate.spec.params import NonNeg
from ablate.pipeline.base import Rollouts, Stage, StageEnv

MODES = ("pow", "max_min", "max_random", "best_of_n", "best_random", "best_worst")


def pf_ppo_weights(scores: np.ndarray, mode: str, power: float = 2.0) -> np.ndarray:
    """verl's resampling weights for the batch-level modes (+1e-8, floored at 1e-8)."""
    s = np.asarray(scores, dtype=np.float64)
    if mode == "pow":
        w = np.abs(s) ** power
    elif mode == "max_min":
        w = ((s == s.max()) | (s == s.min())).astype(np.float64)
    elif mode == "max_random":
        w = np.where(s == s.max(), 0.4, 0.1)
    else:
        raise choice_error("pipeline PolicyFilter.mode", mode, ("pow", "max_min", "max_random"))
    return np.maximum(w + 1e-8, 1e-8)


class PolicyFilter(Stage):
    """PF-PPO filtering / reweighting stage (see the module docstring for the modes)."""

    def __init__(self, mode: Literal[MODES] = "pow", power: NonNeg = 2.0):
        self.mode, self.power = mode, power

    def __call__(self, r: Rollouts, env: StageEnv) -> Rollouts:
        on = [i for i in range(len(r)) if not r.is_demo[i]]
        demos = [i for i in range(len(r)) if r.is_demo[i]]
        if not on:
            return r
        if self.mode in ("pow", "max_min", "max_random"):
            w = pf_ppo_weights(np.array([r.rewards[i] for i in on]), self.mode, self.power)
            pick = env.rng.choice(len(on), size=len(on), replace=True, p=w / w.sum())
            keep = [on[int(j)] for j in pick]
        else:
            keep = []
            for g in range(len(r.problems)):
                rows = [i for i in r.rows_of(g) if not r.is_demo[i]]
                if not rows:
                    continue
                best = max(rows, key=lambda i: r.rewards[i])
                keep.append(best)
                others = [i for i in rows if i != best]
                if not others:
                    continue
                if self.mode == "best_random":
                    keep.append(others[int(env.rng.integers(len(others)))])
                elif self.mode == "best_worst":
                    keep.append(min(others, key=lambda i: r.rewards[i]))
        env.stats["train/pf_unique_frac"] = len(set(keep)) / len(on)
        order = sorted(keep + demos, key=lambda i: (r.group[i], r.is_demo[i]))
        return r.keep_rows(order)
