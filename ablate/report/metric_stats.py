"""Report statistics on any logged metric, not only the sweep's target: per-run values (final,
mean over the run, slope over steps), marginal means per slot variant / hyperparameter level and
pairwise differences between levels, from the same cell-means linear model as the target's
marginal means (each combination weighted equally, pooled seed variance, seeds as blocks). The
pairwise differences of one metric and aggregation are an exploratory table: Benjamini–Hochberg.

A metric may also be a per-run difference ``"M1 - M2"`` (e.g. ``eval/pass@1 - eval/pass@8``):
the difference is taken step by step where both are logged, then aggregated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from ablate.claims.spec import metric_terms
from ablate.stats import Interval, adjust_p
from ablate.stats.curves import auc, last_k_mean

from .effects import FactorEffect, marginal_effects
from ablate.tracking.sweep_reader import Sweep

# always analysed when logged (the list): entropy, gradient variance, response length,
# KL to the reference, clip fractions
DEFAULT_METRICS = ("train/entropy", "train/grad_var", "train/response_len", "train/kl_ref",
                   "train/clip_frac_low", "train/clip_frac_high")
AGGREGATIONS = ("final", "mean", "slope", "auc", "last3")
SHOWN_AGGREGATIONS = ("final", "mean")


def _series(sweep: Sweep, metric: str) -> pd.DataFrame:
    """(trial_id, step, value) rows where the metric (or both terms of a difference) is finite."""
    terms = metric_terms(metric)
    m = sweep.metrics
    if m.empty or any(t not in m.columns for t in terms):
        return pd.DataFrame(columns=["trial_id", "step", "value"])
    v = m[terms[0]].astype(float)
    if len(terms) == 2:
        v = v - m[terms[1]].astype(float)
    out = pd.DataFrame({"trial_id": m["trial_id"], "step": m["step"].astype(float), "value": v})
    return out[np.isfinite(out["value"].to_numpy()) & np.isfinite(out["step"].to_numpy())]


def _slope(g: pd.DataFrame) -> float:
    x, y = g["step"].to_numpy(float), g["value"].to_numpy(float)
    if x.size < 2 or np.ptp(x) == 0:
        return float("nan")
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


def run_values(sweep: Sweep, metric: str, aggregation: str) -> pd.Series:
    """One value per trial (indexed by trial_id): ``final`` = the last finite logged value,
    ``mean`` = the mean of the logged values over the run, ``slope`` = least-squares slope of the
    logged values against the step (units per step), ``auc`` = the normalised area under the
    logged curve (a time-average), ``last3`` = the mean of the last 3 logged values. Trials that
    never logged it are absent;
    ``final`` falls back to the trial's recorded final value when metrics.jsonl lacks the metric."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r}; allowed: {', '.join(AGGREGATIONS)}")
    s = _series(sweep, metric)
    g = s.sort_values(["trial_id", "step"], kind="mergesort").groupby("trial_id", sort=True)
    if aggregation == "final":
        out = g["value"].last()
        terms = metric_terms(metric)
        cols = ["final." + t for t in terms]
        t = sweep.trials
        if not t.empty and all(c in t.columns for c in cols):
            rec = t[cols[0]].astype(float) - (t[cols[1]].astype(float) if len(cols) == 2 else 0.0)
            rec.index = t["trial_id"]
            out = out.combine_first(rec[np.isfinite(rec.to_numpy())])
    elif aggregation == "mean":
        out = g["value"].mean()
    elif aggregation in ("auc", "last3"):
        fn = (lambda d: auc(d["step"], d["value"])) if aggregation == "auc" else (
            lambda d: last_k_mean(d["step"], d["value"], 3))
        out = g.apply(fn, include_groups=False) if len(s) else pd.Series(dtype=float)
    else:
        out = g.apply(_slope, include_groups=False) if len(s) else pd.Series(dtype=float)
    out = out.astype(float)
    return out[np.isfinite(out.to_numpy())]


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
    n = int(fb["trial_id"].isin(vals.index).sum()) if not fb.empty else 0
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


__all__ = ["DEFAULT_METRICS", "MetricStats", "PairDiff", "available_metrics",
           "metric_stats", "run_values"]
