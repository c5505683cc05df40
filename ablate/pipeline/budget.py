"""Per-prompt history and rollout budgets: which prompts a step trains on and how many samples each
gets, decided before generation from what earlier steps saw (DESIGN §2, machinery M2).

* ``PromptHistory`` — per-prompt statistics keyed by ``Problem.uid`` (recent rewards over a window,
  sample count, last step seen, response diversity); component state, so it is checkpointed.
* ``knapsack_allocate`` — Knapsack RL's budget allocation (arXiv 2509.25849; authors' code
  liziniu/KnapsackRL ``sampling_budget_by_knapsack`` / ``solve_by_dp``), re-implemented in numpy.
* Stages: ``PromptPool`` (a finite, stable pool of training prompts, optionally weighted, so prompts
  recur and have a history), ``KnapsackBudget`` and ``VarianceAwareSampling`` (MMR1, arXiv 2509.21268).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

from ablate.component import Component
from ablate.errors import ConfigError
from ablate.spec.params import NonNeg, NonNegInt, OpenProb, PosInt, Prob, require
from ablate.pipeline.base import Rollouts, Stage, StageEnv
from ablate.tasks.base import Problem


# ------------------------------------------------------------------------------------------ history
class PromptHistory(Component):
    """Per-prompt statistics over the run. ``window`` rewards are kept per prompt (clipped to [0, 1]);
    a prompt's success rate is known once ``min_count`` samples were seen (KnapsackRL
    ``reward_buffer_length`` 16 / ``min_buffer_length`` 8). The estimate is the authors' "robust epoch
    estimation": the mean of the latest visit when it had ≥ ``window`` samples, else the mean of the
    last ``window`` rewards across visits."""

    family = "history"

    def __init__(self, window: PosInt = 16, min_count: NonNegInt = 8):
        self.window, self.min_count = window, min_count
        self._prompts: dict[str, dict] = {}

    def __len__(self) -> int:
        return len(self._prompts)

    def record(self, uid: str, rewards: Sequence[float], step: int, diversity: Optional[float] = None) -> None:
        rs = [min(1.0, max(0.0, float(x))) for x in rewards if not math.isnan(float(x))]
        if not rs:
            return
        s = self._prompts.setdefault(uid, {"recent": [], "count": 0, "last_step": 0,
                                           "last_mean": 0.0, "last_n": 0, "diversity": None})
        s["recent"] = (s["recent"] + rs)[-self.window:]
        s["count"] += len(rs)
        s["last_step"] = int(step)
        s["last_mean"] = float(np.mean(rs))
        s["last_n"] = len(rs)
        if diversity is not None:
            s["diversity"] = float(diversity)

    def get(self, uid: str) -> Optional[Mapping]:
        return self._prompts.get(uid)

    def success_rate(self, uid: str) -> Optional[float]:
        """p̂ of the prompt, or None while fewer than ``min_count`` samples were seen."""
        s = self._prompts.get(uid)
        if s is None:
            return None if self.min_count > 0 else 0.0
        if s["count"] < self.min_count:
            return None
        if s["last_n"] >= self.window:
            return s["last_mean"]
        return float(np.mean(s["recent"]))

    def state_dict(self) -> dict:
        return {"prompts": {k: dict(v, recent=list(v["recent"])) for k, v in self._prompts.items()}} \
            if self._prompts else {}

    def load_state_dict(self, state: Mapping) -> None:
        self._prompts = {k: dict(v, recent=list(v["recent"])) for k, v in (state.get("prompts") or {}).items()}

    def extra_repr(self) -> str:
        return f"window={self.window}, min_count={self.min_count}, prompts={len(self._prompts)}"


# ------------------------------------------------------------------------------------------ knapsack
def knapsack_value(n: np.ndarray | int, p: np.ndarray | float) -> np.ndarray:
    """Knapsack RL's value of giving N samples to a prompt of success rate p:
    P(non-zero gradient) × information gain = (1 − p^N − (1 − p)^N) · p(1 − p)²."""
    n, p = np.asarray(n, dtype=np.float64), np.asarray(p, dtype=np.float64)
    return (1.0 - p ** n - (1.0 - p) ** n) * p * (1.0 - p) ** 2


def knapsack_dp(p: Sequence[float], min_n: int, max_extra: int, budget: int) -> np.ndarray:
    """Extra samples per item (beyond ``min_n``, each ≤ ``max_extra``, Σ = ``budget`` when feasible)
    maximising Σ_i v_i(k_i), v_i(0) = 0, v_i(k) = knapsack_value(k + min_n, p_i) — the authors'
    ``solve_by_dp`` objective (an item left at min_n adds nothing). Ties keep the smaller k (their
    loop order). When the budget cannot be used exactly, the largest usable one is allocated and the
    rest is spread evenly over the items, as theirs."""
    m = len(p)
    out = np.zeros(m, dtype=np.int64)
    if budget <= 0 or m == 0:
        return out
    W = int(budget)
    neg = -np.inf
    dp = np.full(W + 1, neg)
    dp[0] = 0.0
    choice = np.zeros((m, W + 1), dtype=np.int64)
    for i, pi in enumerate(p):
        best = dp.copy()  # k = 0: value unchanged
        pick = np.zeros(W + 1, dtype=np.int64)
        for k in range(1, min(max_extra, W) + 1):
            gain = 0.0 if pi in (0.0, 1.0) else float(knapsack_value(k + min_n, pi))
            cand = np.full(W + 1, neg)
            cand[k:] = dp[:-k] + gain
            better = cand > best
            best = np.where(better, cand, best)
            pick = np.where(better, k, pick)
        dp, choice[i] = best, pick
    usable = W
    while usable > 0 and not np.isfinite(dp[usable]):
        usable -= 1
    w = usable
    for i in range(m - 1, -1, -1):
        k = int(choice[i, w])
        out[i] = k
        w -= k
    rest = W - usable
    if rest > 0:
        out += rest // m
        out[: rest % m] += 1
    return out


def knapsack_allocate(p: Sequence[Optional[float]], n: int, min_n: int = 2, max_n: int = 128,
                      alpha: float = 0.9, allow_fallback: bool = True,
                      negative_n: Optional[int] = None, positive_n: Optional[int] = None,
                      total: Optional[int] = None) -> tuple[np.ndarray, dict]:
    """Samples per prompt (Σ = ``total`` = len(p)·n) from success rates (None = no history yet).

    Authors' rules: unknown prompts get ``n``; 0 < p < 1 get ``min_n`` and enter the DP; p = 0 gets
    ``negative_n`` and p = 1 ``positive_n`` (both default ``min_n``). If no prompt has 0 < p < 1 the
    left-over budget goes to the p = 0 prompts (else everyone gets n). Fallback: when the DP
    prompts' estimated need Σ min(max_n, log(1−α)/log max(p, 1−p)) is below the left-over budget, the
    excess goes first to the p = 0 prompts (else to all non-DP prompts)."""
    B = len(p)
    total = B * n if total is None else int(total)
    neg = min_n if negative_n is None else negative_n
    pos = min_n if positive_n is None else positive_n
    alloc = np.zeros(B, dtype=np.int64)
    eff: list[int] = []
    cost = np.zeros(B)
    for i, pi in enumerate(p):
        if pi is None:
            alloc[i] = n
        elif 0.0 < pi < 1.0:
            alloc[i] = min_n
            eff.append(i)
            cost[i] = math.log(1.0 - alpha) / math.log(max(pi, 1.0 - pi))
        elif pi <= 0.0:
            alloc[i] = neg
        else:
            alloc[i] = pos
    rem = total - int(alloc.sum())
    zeros = [i for i, pi in enumerate(p) if pi is not None and pi <= 0.0]
    info = {"fallback": 0.0, "dp_prompts": float(len(eff))}

    def spread(amount: int, idx: Sequence[int]) -> None:
        for j, i in enumerate(idx):
            alloc[i] += amount // len(idx) + (1 if j < amount % len(idx) else 0)

    if rem > 0 and not eff:
        if zeros:
            spread(rem, zeros)
        else:
            alloc[:] = n
        return alloc, info
    if eff:
        need = sum(int(min(max_n, cost[i])) for i in eff)
        if allow_fallback and need < rem:
            cands = zeros or [i for i in range(B) if i not in set(eff)]
            if cands:
                spread(rem - need, cands)
                info["fallback"] = 1.0
                rem = need
        extra = knapsack_dp([float(p[i]) for i in eff], min_n, max_n - min_n, rem)
        for i, k in zip(eff, extra):
            alloc[i] += int(k)
    return alloc, info


# ------------------------------------------------------------------------------------------ stages
class PromptPool(Stage):
    """The step's prompts come from a fixed pool of ``pool_size`` training prompts (drawn once from
    the task with ``pool_seed``; ``None`` = the task's stream, no pool), sampled without replacement
    with the run's RNG and ``weights`` (uniform here; subclasses weight them). A finite pool makes
    prompts recur, so their history means something (the authors train epochs over a dataset)."""

    def __init__(self, pool_size: Optional[PosInt] = 256, pool_seed: int = 0):
        self.pool_size, self.pool_seed = pool_size, pool_seed
        self._pool: Optional[list[Problem]] = None

    def pool(self, env: StageEnv) -> list[Problem]:
        if self._pool is None:
            drawn = env.task.train_problems(int(self.pool_size), np.random.default_rng([self.pool_seed, 0x9E37]))
            seen: dict[str, Problem] = {}
            for q in drawn:
                seen.setdefault(q.uid, q)
            self._pool = list(seen.values())
        return self._pool

    def weights(self, pool: list[Problem], env: StageEnv) -> Optional[np.ndarray]:
        return None

    def draw(self, k: int, env: StageEnv) -> list[Problem]:
        pool = self.pool(env)
        if k > len(pool):
            raise ConfigError(f"pipeline {type(self).__name__}.pool_size: {len(pool)} distinct prompts "
                              f"cannot fill train.prompts_per_step={k}")
        w = self.weights(pool, env)
        idx = env.rng.choice(len(pool), size=k, replace=False, p=None if w is None else w / w.sum())
        return [pool[int(i)] for i in idx]

    def plan(self, problems, counts, env):
        if self.pool_size is None:
            return problems, counts
        return self.draw(len(problems), env), counts


def _on_policy_groups(r: Rollouts) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {g: [] for g in range(len(r.problems))}
    for i, g in enumerate(r.group):
        if not r.is_demo[i]:
            out[g].append(i)
    return out


class _HistoryStage(PromptPool):
    """A pool stage that records every group's rewards in its ``PromptHistory`` after generation."""

    def __init__(self, pool_size: Optional[PosInt] = 256, pool_seed: int = 0, window: PosInt = 16,
                 min_count: NonNegInt = 8):
        super().__init__(pool_size=pool_size, pool_seed=pool_seed)
        self.history = PromptHistory(window=window, min_count=min_count)

    def __call__(self, r: Rollouts, env: StageEnv) -> Rollouts:
        for g, rows in _on_policy_groups(r).items():
            if rows:
                texts = [r.texts[i] for i in rows]
                self.history.record(r.problems[g].uid, [r.rewards[i] for i in rows], env.step,
                                    diversity=len(set(texts)) / len(texts))
        env.stats["train/history_prompts"] = float(len(self.history))
        return r


class KnapsackBudget(_HistoryStage):
    """Knapsack RL (arXiv 2509.25849): before generation each prompt gets N_i samples from the DP
    over its success-rate history (Σ N_i = prompts × ``n``, ``min_n`` ≤ N_i ≤ ``max_n``; see
    ``knapsack_allocate``). ``n`` None = train.group_size. Authors' defaults: n 8, min_n 2,
    max_n 128, window 16, min_count 8, α 0.9 (fallback cost estimate)."""

    def __init__(self, n: Optional[PosInt] = None, min_n: PosInt = 2, max_n: PosInt = 128,
                 alpha: OpenProb = 0.9, allow_fallback: bool = True, window: PosInt = 16,
                 min_count: NonNegInt = 8, pool_size: Optional[PosInt] = 256, pool_seed: int = 0):
        require(max_n >= min_n, self, "max_n", max_n, f"an integer >= min_n ({min_n})")
        super().__init__(pool_size=pool_size, pool_seed=pool_seed, window=window, min_count=min_count)
        self.n, self.min_n, self.max_n = n, min_n, max_n
        self.alpha, self.allow_fallback = alpha, allow_fallback

    def plan(self, problems, counts, env):
        problems, _ = super().plan(problems, counts, env)
        n = self.n or env.group_size
        rates = [self.history.success_rate(q.uid) for q in problems]
        alloc, info = knapsack_allocate(rates, n, self.min_n, self.max_n, self.alpha, self.allow_fallback)
        env.stats["train/budget_min"] = float(alloc.min())
        env.stats["train/budget_max"] = float(alloc.max())
        env.stats["train/budget_known_frac"] = float(np.mean([x is not None for x in rates]))
        env.stats["train/knapsack_fallback"] = info["fallback"]
        return problems, [int(a) for a in alloc]


class VarianceAwareSampling(_HistoryStage):
    """MMR1 variance-aware sampling (arXiv 2509.21268): a fraction ``mix`` (λ) of the step's prompts
    is drawn ∝ the Variance Promotion Score VPS = ``ovs_weight``·OVS + ``tds_weight``·TDS, the rest
    uniformly. OVS = p̂(1−p̂) (outcome variance of the prompt's recent rewards), TDS = the fraction of
    distinct responses in its last group (trajectory diversity). Prompts without history get the
    mean VPS of those with one. Scores are recomputed every step from the history."""

    def __init__(self, mix: Prob = 0.5, ovs_weight: NonNeg = 1.0, tds_weight: NonNeg = 1.0,
                 window: PosInt = 16, min_count: NonNegInt = 1, pool_size: PosInt = 256, pool_seed: int = 0):
        """``pool_size``: a finite pool is needed to weight prompts."""
        require(ovs_weight + tds_weight > 0, self, "tds_weight", tds_weight, "a number > 0 when ovs_weight is 0")
        super().__init__(pool_size=pool_size, pool_seed=pool_seed, window=window, min_count=min_count)
        self.mix, self.ovs_weight, self.tds_weight = mix, ovs_weight, tds_weight

    def vps(self, pool: list[Problem]) -> np.ndarray:
        out = np.full(len(pool), np.nan)
        for j, q in enumerate(pool):
            p = self.history.success_rate(q.uid)
            if p is None:
                continue
            s = self.history.get(q.uid)
            tds = s["diversity"] if s and s["diversity"] is not None else 0.0
            out[j] = self.ovs_weight * p * (1.0 - p) + self.tds_weight * tds
        known = out[~np.isnan(out)]
        fill = float(known.mean()) if known.size else 1.0
        return np.where(np.isnan(out), fill, out)

    def weights(self, pool, env):
        return np.maximum(self.vps(pool), 1e-8)

    def draw(self, k, env):
        pool = self.pool(env)
        if k > len(pool):
            raise ConfigError(f"pipeline {type(self).__name__}.pool_size: {len(pool)} distinct prompts "
                              f"cannot fill train.prompts_per_step={k}")
        k_w = int(round(self.mix * k))
        w = self.weights(pool, env)
        first = env.rng.choice(len(pool), size=k_w, replace=False, p=w / w.sum()) if k_w else np.array([], int)
        rest = np.setdiff1d(np.arange(len(pool)), first)
        second = env.rng.choice(rest, size=k - k_w, replace=False) if k - k_w else np.array([], int)
        env.stats["train/vas_weighted_frac"] = k_w / max(1, k)
        return [pool[int(i)] for i in np.concatenate([first, second])]
