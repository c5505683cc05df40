"""Report sections for any logged metric ("Metrics") and for published claims ("Claims"), as
blocks of the report's document model; also used by the combined claims report."""

from __future__ import annotations

from .claims import AGG_WORDS, ClaimResult, arm_text
from .findings import fci
from .load import Sweep
from .metric_stats import SHOWN_AGGREGATIONS, MetricStats, metric_stats
from .render import Code, Details, Heading, Para, Strong, Table

MAX_PAIRS = 30
VERDICT_MARK = {"reproduced": "reproduced", "contradicted": "CONTRADICTED", "inconclusive": "inconclusive"}


def _fmt(iv, signed: bool = False) -> str:
    """Point [lo, hi] with 4 significant digits (metrics span 1e-4 .. 1e2)."""
    return fci(iv, 4, signed, "g")


def metric_blocks(sweep: Sweep, metrics: list[str], missing: list[str]) -> tuple[list, dict]:
    """The "Metrics" section: one subsection per metric with marginal means (final value and mean
    over the run) and pairwise level differences with 95% CIs. Returns (blocks, stats by metric)."""
    blocks: list = [Heading(2, "Metrics", "metrics")]
    blocks.append(Para(
        "Statistics of logged metrics other than the target, on the same full-budget trials and with "
        "the same seed-aware bootstrap as the target's marginal means (each combination weighted "
        "equally, seeds resampled within combinations). Per run, 'final' is the last logged value "
        "and 'mean' the mean over all logged steps. A difference is marked * when its 95% CI "
        "excludes 0. Regenerate for any metric: ablate report <sweep_dir> --metric NAME."
    ))
    if missing:
        blocks.append(Para("Requested but never logged: " + ", ".join(missing) + "."))
    out: dict[str, dict[str, MetricStats]] = {}
    for m in metrics:
        st = {agg: metric_stats(sweep, m, agg) for agg in SHOWN_AGGREGATIONS}
        out[m] = st
        blocks.append(Heading(3, m))
        fin, mean = st["final"], st["mean"]
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
            star = lambda iv: " *" if iv.excludes(0.0) else ""  # noqa: E731
            prs.append([[Code(p.factor)], f"{p.a} − {p.b}",
                        _fmt(p.diff, True) + star(p.diff) if fin.pairs else "n/a",
                        _fmt(q.diff, True) + star(q.diff) if q else "n/a"])
        if prs:
            blocks.append(Table(["factor", "difference", "final [95% CI]", "mean over run [95% CI]"],
                                prs, ["l", "l", "r", "r"]))
    return blocks, out


def claims_table(results: list[ClaimResult], with_sweep: bool = False) -> Table:
    header = ["claim", "paper", "metric", "a", "b", "expect a", "a − b [95% CI]", "seeds", "verdict"]
    if with_sweep:
        header.insert(1, "sweep")
    rows = []
    for r in results:
        c = r.claim
        row = [[Code(c.id)], f"{c.paper} (arXiv {c.arxiv})", f"{c.metric}, {c.aggregation}",
               arm_text(c.a), arm_text(c.b), c.expect, _fmt(r.diff, True),
               f"{r.n_a}/{r.n_b}", [Strong(VERDICT_MARK[r.verdict])]]
        if with_sweep:
            row.insert(1, r.sweep)
        rows.append(row)
    align = ["l"] * len(header)
    return Table(header, rows, align)


def claim_blocks(results: list[ClaimResult], heading: bool = True, with_sweep: bool = False) -> list:
    blocks: list = [Heading(2, "Claims", "claims")] if heading else []
    blocks.append(Para(
        "Published claims re-tested on " + ("these sweeps" if with_sweep else "this sweep") + ". a − b is the difference of the arms' marginal "
        "means of the per-run value (combinations weighted equally, seeds resampled within "
        "combinations; 95% percentile bootstrap). Verdict: reproduced only when the CI excludes 0 "
        "in the expected direction; contradicted when it excludes 0 in the other; inconclusive "
        "otherwise. Seeds column: runs in arm a / arm b. No correction for multiple claims."
    ))
    blocks.append(claims_table(results, with_sweep))
    for r in results:
        c = r.claim
        blocks.append(Para([Strong(c.id), f" — {c.claim} ({c.paper}, arXiv {c.arxiv}). ",
                            f"Verdict: {r.verdict}. {r.sentence} ",
                            f"Arm means ({AGG_WORDS[c.aggregation]}): a = {r.mean_a:.4g}, b = {r.mean_b:.4g}."]))
        if c.notes:
            blocks.append(Details(f"Notes on {c.id}", [Para(c.notes)]))
    return blocks
