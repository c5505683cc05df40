"""Report statistics on any logged metric, not only the sweep's target: per-run values (final,
mean over the run, slope over steps; ``ablate.claims.values.run_values``), marginal means per slot variant / hyperparameter level and
pairwise differences between levels, from the same cell-means linear model as the target's
marginal means (each combination weighted equally, pooled seed variance, seeds as blocks). The
pairwise differences of one metric and aggregation are an exploratory table: Benjamini–Hochberg.

A metric may also be a per-run difference ``"M1 - M2"`` (e.g. ``eval/pass@1 - eval/pass@8``):
the difference is taken step by step where both are logged, then aggregated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

from ablate.claims.spec import metric_terms
from ablate.claims.values import run_values
from ablate.stats import Interval, adjust_p
from ablate.tracking.sweep_reader import Sweep

from .effects import FactorEffect, marginal_effects

# always analysed when logged (the list): entropy, gradient variance, response length,
# KL to the reference, clip fractions
DEFAULT_METRICS = ("train/entropy", "train/grad_var", "train/response_len", "train/kl_ref",
                   "train/clip_frac_low", "train/clip_frac_high")
SHOWN_AGGREGATIONS = ("final", "mean")


@dataclass
class PairDiff:
    factor: str
    a: str
    b: str
    diff: Interval  # marginal mean(a) − marginal mean(b), with its p
    p_adjusted: float = float("nan")  # BH over the pairs of one metric and aggregation


@dataclass
class MetricStats:
    metric: str
    aggregation: str
    n_runs: int
    effects: list[FactorEffect] = field(default_factory=list)
    pairs: list[PairDiff] = field(default_factory=list)


def metric_stats(sweep: Sweep, metric: str, aggregation: str) -> MetricStats:
    """Marginal means per level and every pairwise level difference, for one metric/aggregation,
    over the full-budget trials that logged it; the pairs' p-values BH-corrected together."""
    vals = run_values(sweep, metric, aggregation)
    fb = sweep.full_budget()
    n = int(fb["trial_id"].isin(vals.index).sum())
    effects = marginal_effects(sweep, vals) if n else []
    pairs = []
    for eff in effects:
        for la, lb in combinations(eff.levels, 2):
            pairs.append(PairDiff(eff.name, la.label, lb.label, eff.diff(la, lb)))
    for pr, q in zip(pairs, adjust_p([pr.diff.p for pr in pairs], "bh")):
        pr.p_adjusted = float(q)
    return MetricStats(metric, aggregation, n, effects, pairs)


def available_metrics(sweep: Sweep, requested: list[str] | tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """(metrics to analyse, requested ones that were never logged): the default set where logged,
    then the requested extras in order."""
    cols = set(sweep.metrics.columns) | {c[len("final."):] for c in sweep.trials.columns
                                         if str(c).startswith("final.")}
    want = list(DEFAULT_METRICS) + [m for m in requested if m not in DEFAULT_METRICS]
    have, missing = [], []
    for m in want:
        try:
            ok = all(t in cols for t in metric_terms(m))
        except ValueError:
            ok = False
        if ok:
            have.append(m)
        elif m in requested:
            missing.append(m)
    return have, missing


__all__ = ["DEFAULT_METRICS", "MetricStats", "PairDiff", "available_metrics", "metric_stats"]
