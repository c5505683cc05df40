"""Report statistics on any logged metric, not only the sweep's target: per-run values (final,
mean over the run, slope over steps; ``ablate.claims.values.run_values``), marginal means per slot variant / hyperparameter level and
pairwise differences between levels, from the same cell-means linear model as the target's
marginal means (each combination weighted equally, pooled seed variance, seeds as blocks). The
pairwise differences of one metric and aggregation are an exploratory table: Benjamini–Hochberg.

A metric may also be a per-run difference ``"M1 - M2"`` (e.g. ``eval/pass@1 - eval/pass@8``):
the difference is taken step by step where both are logged, then aggregated.

``metric_blocks`` writes the report's "Metrics" section from these statistics (the claims sections
live in ablate.claims.sections).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

from ablate.claims.spec import metric_terms
from ablate.claims.values import run_values
from ablate.render import Code, Heading, Para, Table
from ablate.stats import Interval, adjust_p, rejects
from ablate.tracking.sweep_reader import Sweep

from .effects import FactorEffect, marginal_effects
from .findings import fci

# always analysed when logged (the list): entropy, gradient variance, response length,
# KL to the reference, clip fractions
DEFAULT_METRICS = ("train/entropy", "train/grad_var", "train/response_len", "train/kl_ref",
                   "train/clip_frac_low", "train/clip_frac_high")
SHOWN_AGGREGATIONS = ("final", "mean")
MAX_PAIRS = 30


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
    pairs = [PairDiff(eff.name, la.label, lb.label, eff.diff(la, lb))
             for eff in effects for la, lb in combinations(eff.levels, 2)]
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


def _fmt(iv, signed: bool = False) -> str:
    """Point [lo, hi] with 4 significant digits (metrics span 1e-4 .. 1e2)."""
    return fci(iv, 4, signed, "g")


def _diff_cell(p: PairDiff) -> str:
    """A level difference, marked * when its BH-adjusted p is below 0.05."""
    return _fmt(p.diff, True) + (" *" if rejects(p.p_adjusted) else "")


def metric_blocks(sweep: Sweep, metrics: list[str], missing: list[str]) -> list:
    """The "Metrics" section's body: one subsection per metric with marginal means (final value and
    mean over the run) and pairwise level differences with 95% CIs."""
    blocks: list = [Para(
        "Exploratory: statistics of logged metrics other than the target, on the same full-budget "
        "trials and from the same linear model as the target's marginal means (each combination "
        "weighted equally, one seed variance pooled over the sweep, seeds as blocks; 95% t "
        "intervals). Per run, 'final' is the last logged value and 'mean' the mean over all logged "
        "steps. A difference is marked * when its p-value, Benjamini–Hochberg corrected over the "
        "differences of its column, is below 0.05. Regenerate for any metric: "
        "ablate report <sweep_dir> --metric NAME."
    )]
    if missing:
        blocks.append(Para("Requested but never logged: " + ", ".join(missing) + "."))
    for m in metrics:
        fin, mean = (metric_stats(sweep, m, agg) for agg in SHOWN_AGGREGATIONS)
        blocks.append(Heading(3, m))
        if not fin.effects and not mean.effects:
            blocks.append(Para(f"{fin.n_runs} full-budget run(s) logged it; no swept factor with two "
                               "levels to compare."))
            continue
        rows = []
        by_mean = {(e.name, lv.label): lv for e in mean.effects for lv in e.levels}
        for e in fin.effects or mean.effects:
            for lv in e.levels:
                lm = by_mean.get((e.name, lv.label))
                rows.append([[Code(e.name)], lv.label, _fmt(lv.ci) if fin.effects else "n/a",
                             _fmt(lm.ci) if lm else "n/a", str(lv.n)])
        blocks.append(Table(["factor", "variant", "final [95% CI]", "mean over run [95% CI]", "runs"],
                            rows, ["l", "l", "r", "r", "r"]))
        pm = {(p.factor, p.a, p.b): p for p in mean.pairs}
        prs = []
        for p in (fin.pairs or mean.pairs)[:MAX_PAIRS]:
            q = pm.get((p.factor, p.a, p.b))
            prs.append([[Code(p.factor)], f"{p.a} − {p.b}", _diff_cell(p) if fin.pairs else "n/a",
                        _diff_cell(q) if q else "n/a"])
        if prs:
            blocks.append(Table(["factor", "difference", "final [95% CI]", "mean over run [95% CI]"],
                                prs, ["l", "l", "r", "r"]))
    return blocks


__all__ = ["DEFAULT_METRICS", "MetricStats", "PairDiff", "available_metrics", "metric_blocks", "metric_stats"]
