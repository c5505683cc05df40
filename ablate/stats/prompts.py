"""Pass@k between arms from per-prompt eval counts, with seeds as the replication unit and prompts
a crossed effect (DESIGN §7; reference/statistics.md §3); and where the variance comes from.

Data: per arm, per seed, per eval prompt, the counts (n samples, c correct) that the run store
keeps in ``eval_prompts.jsonl`` (``ablate.tracking.run_store.read_eval_prompts``). Each count gives
the unbiased pass@k θ̂ = 1 − C(n−c,k)/C(n,k) (``ablate.metrics.passk``) and its eval-sampling
variance v̂ (delete-one jackknife over the n samples, computed from the counts; for k = 1 it is
the unbiased c(n−c)/(n²(n−1))).

Model (a linear mixed model on per-prompt pass@k, balanced crossed design, fitted by the method
of moments = REML for balanced data when no component is truncated). With d_sp = θ̂_A,sp − θ̂_B,sp
for seed s (shared by both arms: same warm start and sampling streams) and prompt p::

    d_sp = Δ + a_s + b_p + e_sp      a_s ~ (0, σ²_seed)   arm×seed: training-run noise
                                     b_p ~ (0, σ²_prompt) arm×prompt (random prompts only)
                                     e_sp: arm×seed×prompt + eval sampling

* ``prompts="fixed"`` (default): the eval set is the population of interest, b_p is part of Δ.
  The test is then exact: the per-seed prompt means d̄_s are i.i.d., Var(Δ̂) = MS_seed/(S·P) with
  S−1 df, i.e. the paired t-test on per-seed pass@k (scipy.stats.ttest_rel). Prompts add
  information only through the decomposition below; pooling them as replicates is invalid
  (false-positive rate 0.14–0.52 in simulation).
* ``prompts="random"``: generalise to other prompts of the same kind: Var(Δ̂) = (MS_seed +
  MS_prompt − MS_resid)/(S·P) with Satterthwaite degrees of freedom (Clark 1973's quasi-F).

Variance decomposition (``variance_decomposition``): the variance of one seed's arm difference d̄_s
(what the test averages over seeds) splits into eval sampling, E_s[Σ_p (v̂_A,sp + v̂_B,sp)]/P²,
which falls as 1/n with more eval samples, and the between-seed (training) part, the rest of the
observed MS_seed/P, which only more seeds average away. ``projected_se(seeds, samples)`` says what
buying either would do. Calibration (null false-positive rate ≤ 0.06 at 3–10 seeds, 16–64
prompts) is tested by simulation in tests/stats/test_prompts.py.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from scipy import stats as sps
from scipy.special import gammaln

from .power import ALPHA

ArmCounts = Mapping[object, Sequence[Mapping]]  # seed -> [{"prompt_id", "n", "c"}, ...] (one eval step)
PROMPT_MODES = ("fixed", "random")


# ---------------------------------------------------------------------------------- estimates
def pass_at_k_array(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Unbiased pass@k, elementwise over count arrays (1 where n − c < k); needs k ≤ n."""
    n, c = np.asarray(n, dtype=np.float64), np.asarray(c, dtype=np.float64)
    if np.any(n < k):
        raise ValueError(f"pass@{k} needs at least {k} samples per prompt; got n = {int(n.min())}")
    fail = n - c
    ok = fail >= k
    safe = np.where(ok, fail, k)
    log_ratio = gammaln(safe + 1) - gammaln(safe - k + 1) - gammaln(n + 1) + gammaln(n - k + 1)
    return np.where(ok, 1.0 - np.exp(log_ratio), 1.0)


def eval_sampling_var(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """Delete-one jackknife variance of the per-prompt pass@k estimate over its n samples, from the
    counts alone (n ≥ k + 1 needed); for k = 1 the unbiased binomial c(n−c)/(n²(n−1))."""
    n, c = np.asarray(n, dtype=np.float64), np.asarray(c, dtype=np.float64)
    if np.any(n < k + 1):
        raise ValueError(f"the eval-sampling variance of pass@{k} needs n >= {k + 1} samples per prompt")
    drop_hit = pass_at_k_array(n - 1, np.maximum(c - 1, 0), k)  # leave out a correct sample
    drop_miss = pass_at_k_array(n - 1, np.minimum(c, n - 1), k)  # leave out an incorrect one
    mean = (c * drop_hit + (n - c) * drop_miss) / n
    return (n - 1) / n * (c * (drop_hit - mean) ** 2 + (n - c) * (drop_miss - mean) ** 2)


# ---------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Cube:
    """Counts per arm as [seed, prompt] arrays over the prompts every run has (paired: the seeds
    both arms have, in the same order)."""

    n: list
    c: list
    seeds: list
    prompts: tuple
    dropped: dict


def build_cube(arms: Sequence[ArmCounts], paired: bool = True) -> Cube:
    """Align arms on common prompts (and, paired, common seeds); count what was left out."""
    if not arms or any(not a for a in arms):
        raise ValueError("stats.prompts: every arm needs at least one seed with per-prompt counts")
    if paired:
        common = set.intersection(*(set(a) for a in arms))
        if not common:
            raise ValueError("stats.prompts: paired arms share no seed; use paired=False")
        seeds = [sorted(common, key=str)] * len(arms)
    else:
        seeds = [sorted(a, key=str) for a in arms]
    tables = [[{str(r["prompt_id"]): (int(r["n"]), int(r["c"])) for r in a[s]} for s in ss]
              for a, ss in zip(arms, seeds)]
    flat = [t for ts in tables for t in ts]
    prompts = tuple(sorted(set.intersection(*(set(t) for t in flat))))
    if not prompts:
        raise ValueError("stats.prompts: the runs share no eval prompt")
    n = [np.array([[t[p][0] for p in prompts] for t in ts], dtype=np.float64) for ts in tables]
    c = [np.array([[t[p][1] for p in prompts] for t in ts], dtype=np.float64) for ts in tables]
    for nn, cc in zip(n, c):
        if np.any(nn < 1) or np.any(cc < 0) or np.any(cc > nn):
            raise ValueError("stats.prompts: counts need n >= 1 and 0 <= c <= n")
    dropped = {"prompts": len(set().union(*flat)) - len(prompts),
               "seeds": sum(len(a) for a in arms) - sum(len(ss) for ss in seeds)}
    return Cube(n=n, c=c, seeds=[tuple(ss) for ss in seeds], prompts=prompts, dropped=dropped)


# ---------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class MeanSquares:
    """Two-way ANOVA of a [seed, prompt] table (balanced, one value per cell)."""

    seed: float
    prompt: float
    resid: float
    S: int
    P: int


def mean_squares(d: np.ndarray) -> MeanSquares:
    S, P = d.shape
    grand = d.mean()
    ms_s = P * float(((d.mean(1) - grand) ** 2).sum()) / (S - 1) if S > 1 else math.nan
    ms_p = S * float(((d.mean(0) - grand) ** 2).sum()) / (P - 1) if P > 1 else math.nan
    r = d - d.mean(1, keepdims=True) - d.mean(0, keepdims=True) + grand
    ms_r = float((r ** 2).sum()) / ((S - 1) * (P - 1)) if S > 1 and P > 1 else math.nan
    return MeanSquares(ms_s, ms_p, ms_r, S, P)


def _random_prompts_var(ms: MeanSquares) -> tuple[float, float]:
    """Var(Δ̂)·S·P and its Satterthwaite df with prompts random: MS_seed + MS_prompt − MS_resid,
    floored at max(MS_seed, MS_prompt) (each variance component is ≥ 0)."""
    comb = ms.seed + ms.prompt - ms.resid
    if comb < max(ms.seed, ms.prompt):
        use_seed = ms.seed >= ms.prompt
        return (ms.seed, ms.S - 1.0) if use_seed else (ms.prompt, ms.P - 1.0)
    den = (ms.seed ** 2 / (ms.S - 1) + ms.prompt ** 2 / (ms.P - 1)
           + ms.resid ** 2 / ((ms.S - 1) * (ms.P - 1)))
    return comb, comb ** 2 / den


# ---------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class VarianceDecomposition:
    """Variance of one seed's value (one arm's pass@k, or the arm difference) averaged over the P
    eval prompts. ``observed_var``: across seeds (what the test's SE uses: SE = √(observed/S)).
    ``eval_var``: what eval sampling alone would give if each run's samples were drawn
    independently (∝ 1/n). ``seed_var`` = max(observed − eval_var, 0): between training seeds.
    The eval part of the observed variance is min(eval_var, observed). Arms of one seed share
    their eval sampling streams (common random numbers), which cancels part of the eval noise of a
    difference: then observed < eval_var can happen, and the eval part is an upper bound."""

    metric: str
    seed_var: float
    eval_var: float
    observed_var: float
    n_seeds: int
    n_prompts: int
    n_samples: float

    @property
    def eval_part(self) -> float:
        return self.observed_var - self.seed_var

    @property
    def eval_share(self) -> float:
        return self.eval_part / self.observed_var if self.observed_var > 0 else math.nan

    def projected_se(self, seeds: int, samples: Optional[float] = None) -> float:
        """≈ SE of the mean over ``seeds`` seeds with ``samples`` eval samples per prompt (the
        eval part scales as n/samples); at the current sizes it is the observed SE."""
        m = self.n_samples if samples is None else float(samples)
        scale = self.n_samples / m if math.isfinite(m) else 0.0
        return math.sqrt(max(self.seed_var + self.eval_part * scale, 0.0) / seeds)

    def advice(self) -> str:
        S, n = self.n_seeds, self.n_samples
        se, s2, n2, floor = (self.projected_se(S), self.projected_se(2 * S),
                             self.projected_se(S, 2 * n), self.projected_se(S, math.inf))
        share = self.eval_share
        buy = "eval samples (cheap: no training)" if share >= 0.5 else "seeds"
        note = ("; the eval noise is at most this (correlated eval samples or seeds that barely "
                "differ: independent sampling would give "
                f"{self.eval_var:.3g} > observed {self.observed_var:.3g})"
                if self.eval_var > self.observed_var else "")
        lo, hi = self.observed_range()
        return (f"eval sampling is {100 * share:.0f}% of the per-seed variance of {self.metric}"
                f"{note}; SE now {se:.4f}; with {2 * S} seeds {s2:.4f}; with n={2 * n:g} eval "
                f"samples {n2:.4f} (floor with infinite samples {floor:.4f}): buy {buy}; the "
                f"observed variance has {S - 1} df (95% range ×{lo:.2g} to ×{hi:.2g})")

    def observed_range(self, level: float = 0.95) -> tuple[float, float]:
        """Factors of the 95% chi-square interval of the observed variance (S − 1 df): how much
        the split above can be trusted (3 seeds: ×0.27 to ×39)."""
        df = self.n_seeds - 1
        return (df / float(sps.chi2.ppf(0.5 + level / 2, df)), df / float(sps.chi2.ppf(0.5 - level / 2, df)))


@dataclass(frozen=True)
class PromptComparison:
    """Δ = mean pass@k of arm a − arm b over the common eval prompts, with its interval."""

    estimate: float
    low: float
    high: float
    p_value: float
    se: float
    df: float
    method: str
    metric: str
    n_seeds: int
    n_prompts: int
    paired: bool
    prompts: str
    variance: Optional[VarianceDecomposition]
    dropped: dict

    def as_dict(self) -> dict:
        d = asdict(self)
        if self.variance is not None:
            d["variance"]["eval_share"] = self.variance.eval_share
            d["variance"]["eval_part"] = self.variance.eval_part
            d["variance"]["advice"] = self.variance.advice()
        return d


# ---------------------------------------------------------------------------------- API
def _per_seed(cube: Cube, k: int) -> tuple[list, list]:
    theta = [pass_at_k_array(n, c, k) for n, c in zip(cube.n, cube.c)]
    n_min = min(float(n.min()) for n in cube.n)
    var = [eval_sampling_var(n, c, k) for n, c in zip(cube.n, cube.c)] if n_min >= k + 1 else None
    return theta, var


def _decomposition(values: np.ndarray, evar: Optional[np.ndarray], metric: str,
                   n: np.ndarray) -> Optional[VarianceDecomposition]:
    """values: [S, P] per-prompt estimates of one seed's quantity; evar: their sampling variances."""
    S, P = values.shape
    if S < 2 or evar is None:
        return None
    observed = float(values.mean(1).var(ddof=1))
    ev = float(evar.sum(1).mean()) / P ** 2
    return VarianceDecomposition(metric=metric, seed_var=max(observed - ev, 0.0), eval_var=ev,
                                 observed_var=observed, n_seeds=S, n_prompts=P,
                                 n_samples=float(np.median(n)))


def variance_decomposition(a: ArmCounts, b: Optional[ArmCounts] = None, *, k: int = 1,
                           paired: bool = True) -> Optional[VarianceDecomposition]:
    """Where the variance of a seed's pass@k (one arm) or of a seed's arm difference (a − b,
    paired) comes from: eval sampling vs training seeds. None with < 2 seeds or n ≤ k."""
    if b is None:
        cube = build_cube([a], paired=True)
        theta, var = _per_seed(cube, k)
        return _decomposition(theta[0], None if var is None else var[0], f"pass@{k}", cube.n[0])
    if not paired:
        raise ValueError("variance_decomposition: a difference needs paired arms; decompose each arm")
    cube = build_cube([a, b], paired=True)
    theta, var = _per_seed(cube, k)
    return _decomposition(theta[0] - theta[1], None if var is None else var[0] + var[1],
                          f"Δpass@{k}", cube.n[0])


def compare_prompts(a: ArmCounts, b: ArmCounts, *, k: int = 1, alpha: float = ALPHA,
                    paired: bool = True, prompts: str = "fixed") -> PromptComparison:
    """Mean pass@k of arm ``a`` minus arm ``b`` from per-prompt counts (``{seed: [{"prompt_id",
    "n", "c"}, ...]}`` per arm, one eval step), seeds the replication unit (see the module doc)."""
    if prompts not in PROMPT_MODES:
        raise ValueError(f"prompts: {prompts!r}; allowed: {', '.join(PROMPT_MODES)}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: {alpha}; allowed: 0 < alpha < 1")
    if prompts == "random" and not paired:
        raise ValueError("prompts='random' needs paired arms (the same seeds)")
    cube = build_cube([a, b], paired=paired)
    theta, var = _per_seed(cube, k)
    if paired:
        d = theta[0] - theta[1]
        S, P = d.shape
        if S < 2:
            raise ValueError(f"stats.prompts: {S} common seed; a paired comparison needs >= 2")
        ms = mean_squares(d)
        if prompts == "fixed" or P < 2:
            v, df, method = ms.seed, S - 1.0, "paired t on per-seed pass@k (prompts fixed)"
        else:
            v, df = _random_prompts_var(ms)
            method = "crossed seed×prompt LMM, Satterthwaite df (prompts random)"
        est, se = float(d.mean()), math.sqrt(max(v, 0.0) / (S * P))
        dec = _decomposition(d, None if var is None else var[0] + var[1], f"Δpass@{k}", cube.n[0])
    else:
        ma, mb = theta[0].mean(1), theta[1].mean(1)
        if min(len(ma), len(mb)) < 2:
            raise ValueError("stats.prompts: Welch t needs >= 2 seeds per arm")
        va, vb = ma.var(ddof=1) / len(ma), mb.var(ddof=1) / len(mb)
        est, se = float(ma.mean() - mb.mean()), math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (len(ma) - 1) + vb ** 2 / (len(mb) - 1)) if va + vb > 0 else 1.0
        method, dec = "Welch t on per-seed pass@k (prompts fixed)", None
        S, P = len(ma) + len(mb), theta[0].shape[1]
    return _result(est, se, df, alpha, method, k, S, P, paired, prompts, dec, cube.dropped)


def _result(est, se, df, alpha, method, k, S, P, paired, prompts, dec, dropped) -> PromptComparison:
    if se > 0:
        t = est / se
        p = float(2 * sps.t.sf(abs(t), df))
        half = float(sps.t.ppf(1 - alpha / 2, df)) * se
    else:
        p, half = (1.0 if est == 0 else 0.0), 0.0
    return PromptComparison(estimate=est, low=est - half, high=est + half, p_value=p, se=se,
                            df=float(df), method=method, metric=f"pass@{k}", n_seeds=S,
                            n_prompts=P, paired=paired, prompts=prompts, variance=dec,
                            dropped=dict(dropped))


# ---------------------------------------------------------------------------------- run dirs
def arm_from_runs(run_dirs: Sequence[Path], step: Optional[int] = None) -> dict:
    """``{seed: rows}`` from run directories (seed from config.yaml) at eval ``step`` (default:
    the last eval step every run has)."""
    from ablate.tracking.run_store import read_config, read_eval_prompts

    by_run: list[tuple[object, list[dict]]] = []
    for rd in map(Path, run_dirs):
        cfg = read_config(rd)
        seed = (cfg if isinstance(cfg, dict) else {}).get("seed", rd.name)
        rows = read_eval_prompts(rd)
        if not rows:
            raise ValueError(f"{rd}: no eval_prompts.jsonl rows (a run from before per-prompt eval data?)")
        if seed in [s for s, _ in by_run]:
            raise ValueError(f"{rd}: seed {seed} appears twice in one arm")
        by_run.append((seed, rows))
    common = set.intersection(*({r["step"] for r in rows} for _, rows in by_run))
    at = max(common) if step is None and common else step
    if at is None or at not in common:
        raise ValueError(f"eval step {step}: not in every run (common steps: {sorted(common)})")
    return {seed: [r for r in rows if r["step"] == at] for seed, rows in by_run}


def markdown(res: PromptComparison) -> str:
    """A short report block (the report / claims may embed it)."""
    lines = [f"**{res.metric}: Δ = {res.estimate:+.4f}** [{res.low:+.4f}, {res.high:+.4f}], "
             f"p = {res.p_value:.3g} ({res.method}; {res.n_seeds} seeds, {res.n_prompts} prompts, "
             f"df = {res.df:.1f})"]
    if res.variance is not None:
        lines.append(f"- variance: {res.variance.advice()}")
    if any(res.dropped.values()):
        lines.append(f"- left out (not in every run): {res.dropped['prompts']} prompts, "
                     f"{res.dropped['seeds']} seeds")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ablate.stats.prompts --a RUN... --b RUN... [--k 1] [--step S] [--prompts fixed]``"""
    ap = argparse.ArgumentParser(prog="python -m ablate.stats.prompts",
                                 description="pass@k between two arms from per-prompt eval data")
    ap.add_argument("--a", nargs="+", required=True, help="run directories of arm a (one per seed)")
    ap.add_argument("--b", nargs="+", required=True, help="run directories of arm b")
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--alpha", type=float, default=ALPHA)
    ap.add_argument("--prompts", choices=PROMPT_MODES, default="fixed")
    ap.add_argument("--unpaired", action="store_true")
    args = ap.parse_args(argv)
    try:
        res = compare_prompts(arm_from_runs(args.a, args.step), arm_from_runs(args.b, args.step),
                              k=args.k, alpha=args.alpha, paired=not args.unpaired, prompts=args.prompts)
    except (ValueError, OSError) as e:
        print(f"error: {e}".splitlines()[0], file=sys.stderr)
        return 2
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
