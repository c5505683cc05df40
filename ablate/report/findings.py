"""Plain-language findings generated from the numbers. Rules: a difference is called significant
only when its 95% bootstrap CI excludes 0 (combinations) or the CIs of two variants do not overlap
(slot marginal means); everything else is reported as within seed noise. Few seeds are flagged.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .aggregate import Combo, Comparison, Unit
from .effects import FactorEffect, Importances, Interaction
from .load import Sweep
from .render import Code, Strong

MIN_SEEDS = 3


def f3(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def fsig(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.3f}"


def fci(iv, digits: int = 3, signed: bool = False, kind: str = "f") -> str:
    """Point [lo, hi]: ``digits`` decimals (kind "f") or significant digits (kind "g")."""
    fmt = (lambda v: f"{v:+.{digits}{kind}}") if signed else (lambda v: f"{v:.{digits}{kind}}")
    if not np.isfinite(iv.point):
        return "n/a"
    if not iv.has_ci:
        return f"{fmt(iv.point)} (no CI, n={iv.n})"
    return f"{fmt(iv.point)} [{fmt(iv.lo)}, {fmt(iv.hi)}]"


def _pl(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _names(ids: list[str]) -> str:
    return ", ".join(ids)


def findings(
    sweep: Sweep,
    combos: list[Combo],
    units: list[Unit],
    comparisons: list[Comparison],
    effects: list[FactorEffect],
    inters: list[Interaction],
    imp: Importances,
    noise_sd: float,
    task_key: str | None,
) -> list[list]:
    out: list[list] = []
    metric, mode = sweep.metric, sweep.mode
    better = "higher" if mode == "max" else "lower"
    n_fb = len(sweep.full_budget())

    if not combos:
        out.append([f"No finished full-budget trial has a value for {metric}: nothing to compare."])
        _failures(sweep, out)
        return out

    ns = [len(c.values) for c in combos]
    out.append([
        f"{_pl(n_fb, 'full-budget trial')} over {_pl(len(combos), 'combination')} enter the statistics "
        f"({metric}, {better} is better); seeds per combination: "
        + (f"{min(ns)}" if min(ns) == max(ns) else f"{min(ns)}–{max(ns)}")
        + "."
    ])
    few = [c.cid for c in combos if len(c.values) < MIN_SEEDS]
    if few:
        what = "every combination" if len(few) == len(combos) else (
            f"{len(few)} combination(s) ({_names(few[:8])}{', …' if len(few) > 8 else ''})"
        )
        out.append([
            Strong("Few seeds:"),
            f" {what} has fewer than {MIN_SEEDS} seeds. Percentile bootstrap intervals from so few "
            "runs are too narrow and single-seed results have none; treat differences involving "
            "them as tentative.",
        ])

    best = combos[0]
    lab = f" ({best.label})" if best.label else ""
    out.append([
        "Best combination: ", Strong(best.cid), f"{lab}, {best.desc}: {metric} = {fci(best.target)} "
        f"over {len(best.values)} seed(s).",
    ])

    # pairwise comparisons, best unit first
    if comparisons:
        lead = comparisons[0].a
        mine = [c for c in comparisons if c.a == lead]
        sig = [c for c in mine if c.significant() and _direction_ok(c, mode)]
        noise = [c for c in mine if c.diff.has_ci and not c.significant()]
        untestable = [c for c in mine if not c.diff.has_ci]
        if sig:
            ex = sig[0]
            out.append([
                f"{lead} is {'better' } than {_names([c.b for c in sig])}: the 95% bootstrap CI of the "
                f"mean difference excludes 0 (e.g. {lead} − {ex.b} = {fci(ex.diff, signed=True)}, "
                f"P({lead} better than {ex.b}) = {fci(ex.poi, 2)})."
                + _poi_caveat(sig)
            ])
        if noise:
            out.append([
                f"{lead} vs {_names([c.b for c in noise])}: within seed noise (difference CIs include 0"
                + (f", e.g. {lead} − {noise[0].b} = {fci(noise[0].diff, signed=True)}" if noise else "")
                + "); the ranking among these is not established."
            ])
        if untestable:
            out.append([
                f"{lead} vs {_names([c.b for c in untestable])}: not testable (a side has a single seed)."
            ])
        others = [c for c in comparisons if c.a != lead and c.significant()]
        if others:
            out.append([
                "Other separable pairs among the top "
                f"{len({c.a for c in comparisons} | {c.b for c in comparisons})}: "
                + ", ".join(f"{c.a} {'>' if c.diff.point > 0 else '<'} {c.b}" for c in others)
                + f" ({metric}; difference CI excludes 0)."
            ])
        out.append([
            f"These are {len(comparisons)} unadjusted 95% comparisons; about 1 in 20 true "
            "no-difference pairs would look separated by chance."
        ])

    # slot and hyperparameter marginal effects, largest spread first
    for eff in sorted(effects, key=lambda e: (-e.spread, e.name)):
        best_lv = eff.best(mode)
        sep, overlap = eff.separated_from_best(mode)
        name = [Code(eff.name), ": "]
        if not best_lv.ci.has_ci:
            out.append(name + [f"no CI available (unreplicated); spread of marginal means {f3(eff.spread)}."])
        elif not sep:
            out.append(name + [
                "all variants within seed noise (marginal-mean CIs overlap; spread "
                f"{f3(eff.spread)}): " + ", ".join(f"{lv.label} {f3(lv.ci.point)}" for lv in eff.levels)
                + "."
            ])
        else:
            msg = (
                f"{best_lv.label} has the {'highest' if mode == 'max' else 'lowest'} marginal mean "
                f"({fci(best_lv.ci)}); its CI separates from "
                + ", ".join(f"{lv.label} ({f3(lv.ci.point)})" for lv in sep)
            )
            if overlap:
                msg += "; within seed noise of " + ", ".join(f"{lv.label} ({f3(lv.ci.point)})" for lv in overlap)
            out.append(name + [msg + "."])

    if imp.available:
        parts = []
        for label, res in (("fANOVA", imp.fanova), ("PED-ANOVA", imp.ped_anova)):
            if res:
                top = list(res.items())[:2]
                parts.append(
                    f"{label} ranks {top[0][0]} first ({top[0][1]:.2f})"
                    + (f", then {top[1][0]} ({top[1][1]:.2f})" if len(top) > 1 else "")
                )
        tops = {next(iter(r)) for r in (imp.fanova, imp.ped_anova) if r}
        agree = " The two evaluators agree on the most important parameter." if len(tops) == 1 and len(
            [r for r in (imp.fanova, imp.ped_anova) if r]) == 2 else (
            " The evaluators disagree on the top parameter (they answer different questions: "
            "variance explained vs reaching the top 10%)." if len(tops) > 1 else "")
        out.append(["; ".join(parts) + f" (on {imp.n_trials} {imp.unit})." + agree])

    if inters:
        it = inters[0]
        cell_n = float(np.mean(it.counts))
        se = noise_sd / np.sqrt(cell_n) if np.isfinite(noise_sd) and cell_n > 0 else float("nan")
        if np.isfinite(se) and se > 0:
            if it.residual_rms <= 2 * se:
                verdict = (f"comparable to the seed noise of a cell mean (s.e. ≈ {se:.3g}): "
                           "no interaction beyond noise is visible")
            else:
                verdict = (f"{it.residual_rms / se:.1f}× the s.e. of a cell mean ({se:.3g}): the "
                           "additive picture is incomplete, inspect the table (descriptive, no test)")
            out.append([
                f"Largest slot interaction: {it.a} × {it.b}, residual RMS {it.residual_rms:.3g} — {verdict}."
            ])

    if task_key:
        out.append([
            f"Robust aggregates pool combinations over the swept {task_key} values (strata = tasks)."
        ])
    _failures(sweep, out)
    return out


def _direction_ok(c: Comparison, mode: str) -> bool:
    return (c.diff.point > 0) == (mode == "max")


def _poi_caveat(sig: list[Comparison]) -> str:
    weak = [c.b for c in sig if c.poi.has_ci and not c.poi.excludes(0.5)]
    if not weak:
        return ""
    return (f" For {_names(weak)} the probability-of-improvement CI still includes 0.5, so the "
            "evidence is weaker there.")


def _failures(sweep: Sweep, out: list[list]) -> None:
    t = sweep.trials
    if t.empty:
        return
    failed = t[t["status"] == "failed"]
    stopped = t[t["status"] == "early_stopped"]
    if len(failed):
        errs = Counter(
            (str(e).strip().splitlines() or [""])[0][:120] for e in failed["error"].fillna("(no error recorded)")
        )
        common, k = sorted(errs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        out.append([
            f"{len(failed)} trial(s) failed (see Failed and stopped trials); most common error ({k}×): ",
            Code(common),
        ])
    if len(stopped):
        out.append([
            f"{len(stopped)} trial(s) were early-stopped; their truncated values are excluded from "
            "all statistics and importances."
        ])
