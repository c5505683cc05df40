"""The report's "Metrics" section: statistics of any logged metric, as blocks of the report's
document model (the claims sections live in ablate.claims.sections)."""

from __future__ import annotations

from ablate.render import Code, Heading, Para, Table
from ablate.tracking.sweep_reader import Sweep

from .findings import fci
from .metric_stats import SHOWN_AGGREGATIONS, metric_stats

MAX_PAIRS = 30


def _fmt(iv, signed: bool = False) -> str:
    """Point [lo, hi] with 4 significant digits (metrics span 1e-4 .. 1e2)."""
    return fci(iv, 4, signed, "g")


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
            star = lambda pd_: " *" if pd_.p_adjusted < 0.05 else ""  # noqa: E731
            prs.append([[Code(p.factor)], f"{p.a} − {p.b}",
                        _fmt(p.diff, True) + star(p) if fin.pairs else "n/a",
                        _fmt(q.diff, True) + star(q) if q else "n/a"])
        if prs:
            blocks.append(Table(["factor", "difference", "final [95% CI]", "mean over run [95% CI]"],
                                prs, ["l", "l", "r", "r"]))
    return blocks
