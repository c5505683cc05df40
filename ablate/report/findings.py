"""Plain-language findings from the numbers (every test from ``ablate.stats``, rejected at its
ALPHA): two units differ only by their paired t test, Holm over every pair of ranked units; a factor
(or interaction) matters only by its F test, BH over the report's factor and interaction tests, and
a variant differs from the best one by its Holm-corrected contrast. Everything else is reported as
not distinguishable from seed noise.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ablate.render import Code, Strong
from ablate.stats import rejects
from ablate.tracking.sweep_reader import Sweep, as_float

from .aggregate import Combo, UnitComparison
from .effects import FactorEffect, Importances, Interaction


def num(x, spec: str = ".4g") -> str:
    """``x`` formatted with ``spec``; n/a when it is not a finite number."""
    x = as_float(x)
    return f"{x:{spec}}" if np.isfinite(x) else "n/a"


def pval(x) -> str:
    """A p-value with 2 significant digits; n/a when there is no test."""
    s = num(x, ".2g")
    return "< 0.0001" if s != "n/a" and float(x) < 1e-4 else s


def f3(x: float) -> str:
    return num(x, ".3f")


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


def findings(sweep: Sweep, combos: list[Combo], comparisons: list[UnitComparison], effects: list[FactorEffect],
             inters: list[Interaction], imp: Importances, task_key: str | None) -> list[list]:
    """The Findings bullets: what entered the statistics, the best combination, what the pairwise
    tests, marginal effects, importances and interactions separate from seed noise, failures."""
    if not combos:
        out = [[f"No finished full-budget trial has a value for {sweep.metric}: nothing to compare."]]
    else:
        out = (_scope(sweep, combos) + _comparisons(comparisons, sweep.metric, sweep.mode)
               + _effects(effects, sweep.mode) + _importances(imp, effects) + _interaction(inters))
        if task_key:
            out.append([f"Robust aggregates pool combinations over the swept {task_key} values (strata = tasks)."])
    _failures(sweep, out)
    return out


def _scope(sweep: Sweep, combos: list[Combo]) -> list[list]:
    """How many trials and seeds enter the statistics, and the best combination."""
    metric = sweep.metric
    better = "higher" if sweep.mode == "max" else "lower"
    ns = [len(c.values) for c in combos]
    out: list[list] = [[
        f"{_pl(len(sweep.full_budget()), 'full-budget trial')} over {_pl(len(combos), 'combination')} "
        f"enter the statistics ({metric}, {better} is better); seeds per combination: "
        + (f"{min(ns)}" if min(ns) == max(ns) else f"{min(ns)}–{max(ns)}") + "."]]
    single = [c.cid for c in combos if len(c.values) < 2]
    if single:
        what = "Every combination" if len(single) == len(combos) else (
            f"{len(single)} combination(s) ({', '.join(single[:8])}{', …' if len(single) > 8 else ''})")
        out.append([f"{what} has a single full-budget seed: no interval or test for it."])
    best = combos[0]
    lab = f" ({best.label})" if best.label else ""
    out.append(["Best combination: ", Strong(best.cid), f"{lab}, {best.desc}: {metric} = {fci(best.target)} "
                f"over {len(best.values)} seed(s)."])
    return out


def _comparisons(comparisons: list[UnitComparison], metric: str, mode: str) -> list[list]:
    """The pairwise comparisons of the best unit, then other separable pairs."""
    if not comparisons:
        return []
    out: list[list] = []
    lead = comparisons[0].a
    mine = [c for c in comparisons if c.a == lead]
    sig = [c for c in mine if c.test.verdict == ("higher" if mode == "max" else "lower")]
    noise = [c for c in mine if c.test.verdict == "inconclusive"]
    untestable = [c for c in mine if c.test.verdict == "untestable"]
    def eg(c: UnitComparison) -> str:
        return f"e.g. {lead} − {c.b} = {fci(c.test.interval, signed=True)}, adjusted p = {c.test.p_adjusted:.2g}"

    if sig:
        out.append([f"{lead} is better than {', '.join([c.b for c in sig])} (paired t, Holm-corrected over "
                    f"all {comparisons[0].n_family} pairs of ranked units: {eg(sig[0])})."])
    if noise:
        out.append([f"{lead} vs {', '.join([c.b for c in noise])}: not distinguishable from seed noise "
                    f"({eg(noise[0])}; a difference below about {noise[0].test.mde:.3g} would "
                    "likely go unseen at this number of seeds); the ranking among these is not established."])
    if untestable:
        out.append([f"{lead} vs {', '.join([c.b for c in untestable])}: not testable (a side has a single seed)."])
    others = [c for c in comparisons if c.a != lead and c.test.decided]
    if others:
        out.append([f"Other separable pairs among the top {len({c.a for c in comparisons} | {c.b for c in comparisons})}: "
                    + ", ".join(f"{c.a} {'>' if c.test.interval.point > 0 else '<'} {c.b}" for c in others)
                    + f" ({metric}; Holm-adjusted p < 0.05)."])
    return out


def _effects(effects: list[FactorEffect], mode: str) -> list[list]:
    """One line per slot or hyperparameter marginal effect, largest spread first."""
    out: list[list] = []
    for eff in sorted(effects, key=lambda e: (-e.spread, e.name)):
        best_lv = eff.best(mode)
        sep, overlap = eff.separated_from_best(mode)
        name = [Code(eff.name), ": "]
        if not best_lv.ci.has_ci:
            out.append(name + [f"no interval or test (unreplicated); spread of marginal means {f3(eff.spread)}."])
        elif not sep:
            out.append(name + [
                "all variants within seed noise ("
                + (f"main effect BH-adjusted p = {eff.p_adjusted:.2g}; " if np.isfinite(eff.p_adjusted) else "")
                + f"spread {f3(eff.spread)}): "
                + ", ".join(f"{lv.label} {f3(lv.ci.point)}" for lv in eff.levels) + "."
            ])
        else:
            msg = (
                f"{best_lv.label} has the {'highest' if mode == 'max' else 'lowest'} marginal mean "
                f"({fci(best_lv.ci)}; main effect BH-adjusted p = {eff.p_adjusted:.2g}); it differs from "
                + ", ".join(f"{lv.label} ({f3(lv.ci.point)})" for lv in sep)
            )
            if overlap:
                msg += "; within seed noise of " + ", ".join(f"{lv.label} ({f3(lv.ci.point)})" for lv in overlap)
            out.append(name + [msg + "."])
    return out


def _importances(imp: Importances, effects: list[FactorEffect]) -> list[list]:
    """What fANOVA and PED-ANOVA rank first, whether they agree, and the noise floor."""
    if not imp.available:
        return []
    ran = [(label, res) for label, res in (("fANOVA", imp.fanova), ("PED-ANOVA", imp.ped_anova)) if res]
    parts = []
    for label, res in ran:
        top = list(res.items())[:2]
        parts.append(f"{label} ranks {top[0][0]} first ({top[0][1]:.2f})"
                     + (f", then {top[1][0]} ({top[1][1]:.2f})" if len(top) > 1 else ""))
    tops = {next(iter(res)) for _, res in ran}
    agree = " The two evaluators agree on the most important parameter." if len(tops) == 1 and len(ran) == 2 else (
        " The evaluators disagree on the top parameter (they answer different questions: "
        "variance explained vs reaching the top 10%)." if len(tops) > 1 else "")
    return [["; ".join(parts) + f" (on {imp.n_trials} {imp.unit})." + agree + _floor(effects)]]


def _interaction(inters: list[Interaction]) -> list[list]:
    """The interaction with the strongest evidence, and whether it is beyond seed noise."""
    tested = [it for it in inters if np.isfinite(it.p_adjusted)]
    if not tested:
        return []
    it = min(tested, key=lambda x: (x.p_adjusted, -x.residual_rms))
    if rejects(it.p_adjusted):
        verdict = (f"the additive picture is incomplete (interaction F test, BH-adjusted p = "
                   f"{it.p_adjusted:.2g}); inspect its table")
    else:
        verdict = (f"no interaction is distinguishable from seed noise (smallest BH-adjusted "
                   f"p = {it.p_adjusted:.2g})")
    return [[f"Interactions: strongest evidence for {it.a} × {it.b} (residual RMS "
             f"{it.residual_rms:.3g}): {verdict}."]]


def _floor(effects: list[FactorEffect]) -> str:
    """The importances' noise floor: which factors' main effects the linear model separates from
    the pooled seed variance (BH over the report's family)."""
    tested = [e for e in effects if np.isfinite(e.p_adjusted)]
    if not tested:
        return ""
    above = [e.name for e in tested if rejects(e.p_adjusted)]
    return (" Noise floor (main-effect F tests against the pooled seed variance, BH): "
            + (("above it: " + ", ".join(above)) if above else "no factor is above it, so the ranking "
               "may be noise") + ".")


def _failures(sweep: Sweep, out: list[list]) -> None:
    t = sweep.trials
    failed, stopped = t[t["status"] == "failed"], t[t["status"] == "early_stopped"]
    if len(failed):
        errs = Counter((str(e).strip().splitlines() or [""])[0][:120]
                       for e in failed["error"].fillna("(no error recorded)"))
        common, k = sorted(errs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        out.append([f"{len(failed)} trial(s) failed (see Failed and stopped trials); most common error ({k}×): ",
                    Code(common)])
    if len(stopped):
        out.append([f"{len(stopped)} trial(s) were early-stopped; their truncated values are excluded from "
                    "all statistics and importances."])
