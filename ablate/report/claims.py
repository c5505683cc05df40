"""Verdicts on published claims stated in a search space (``claims:``, see ablate/sweep/claims.py).

For each claim: the per-run value of its metric (final / mean / slope over the run) on the
full-budget trials of each arm, the difference of the arms' marginal means a − b (combinations in
an arm weighted equally, seeds resampled within combinations: the statistic of the report's slot
effects) and its 95% bootstrap CI. Verdict rule:

- reproduced: the CI excludes 0 on the expected side;
- contradicted: the CI excludes 0 on the other side;
- inconclusive: the CI contains 0, or there is no CI (fewer than 2 runs in an arm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ablate.errors import ConfigError
from ablate.sweep.claims import Claim, parse_claims

from .aggregate import _fmt_value
from .load import Sweep
from .metric_stats import run_values
from .stats import Interval, bootstrap_mean_of_means_diff_ci, stable_seed

VERDICTS = ("reproduced", "contradicted", "inconclusive")
AGG_WORDS = {"final": "final value", "mean": "mean over the run", "slope": "slope per step over the run"}


@dataclass
class ClaimResult:
    claim: Claim
    verdict: str
    diff: Interval  # marginal mean(a) − marginal mean(b)
    mean_a: float
    mean_b: float
    n_a: int  # runs (seeds) in arm a
    n_b: int
    seeds: list  # seeds present in both arms
    sentence: str
    sweep: str = ""

    @property
    def n_seeds(self) -> int:
        return min(self.n_a, self.n_b)


def verdict(diff: Interval, expect: str) -> str:
    """reproduced only when the CI excludes 0 in the expected direction."""
    if not diff.has_ci:
        return "inconclusive"
    if diff.lo > 0:
        return "reproduced" if expect == "higher" else "contradicted"
    if diff.hi < 0:
        return "reproduced" if expect == "lower" else "contradicted"
    return "inconclusive"


def arm_text(arm: dict) -> str:
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in arm.items())


def _column(sweep: Sweep, axis: str) -> str | None:
    if axis in sweep.slot_names:
        return "slot." + axis
    if axis in sweep.param_names:
        return "param." + axis
    return None


def arm_mask(sweep: Sweep, frame: pd.DataFrame, arm: dict) -> np.ndarray:
    """Rows of ``frame`` whose trial matches every axis → option of the arm."""
    ok = np.ones(len(frame), dtype=bool)
    for axis, want in arm.items():
        col = _column(sweep, axis)
        if col is None or col not in frame.columns:
            return np.zeros(len(frame), dtype=bool)
        ok &= (frame[col].map(_fmt_value) == _fmt_value(want)).to_numpy()
    return ok


def _strata(frame: pd.DataFrame, vals: pd.Series) -> list[np.ndarray]:
    y = frame["trial_id"].map(vals).to_numpy(float)
    combos = frame["combo"].to_numpy()
    return [y[combos == k] for k in sorted(set(combos.tolist()))]


def _sentence(c: Claim, v: str, diff: Interval, n: int) -> str:
    what = f"{c.metric} ({AGG_WORDS[c.aggregation]})"
    a, b = arm_text(c.a), arm_text(c.b)
    if not np.isfinite(diff.point):
        return f"No full-budget runs with {what} in both arms ({a} / {b}): nothing to test."
    d = f"{diff.point:+.4g}"
    ci = f"[{diff.lo:+.4g}, {diff.hi:+.4g}]" if diff.has_ci else "(no CI)"
    rel = "higher" if diff.point > 0 else "lower"
    if v == "reproduced":
        return (f"As claimed, {a} gives a {rel} {what} than {b}: a − b = {d}, 95% CI {ci}, "
                f"{n} seeds per arm.")
    if v == "contradicted":
        return (f"Opposite to the claim, {a} gives a {rel} {what} than {b}: a − b = {d}, 95% CI "
                f"{ci}, {n} seeds per arm.")
    if not diff.has_ci:
        return f"Not testable: an arm has fewer than 2 runs (a − b = {d})."
    return (f"No separable difference in {what} between {a} and {b}: a − b = {d}, 95% CI {ci} "
            f"contains 0 ({n} seeds per arm; the claim expects a {c.expect} value for a).")


def evaluate_claim(sweep: Sweep, c: Claim) -> ClaimResult:
    vals = run_values(sweep, c.metric, c.aggregation)
    fb = sweep.full_budget()
    fb = fb[fb["trial_id"].isin(vals.index)] if not fb.empty else fb
    fa = fb[arm_mask(sweep, fb, c.a)] if not fb.empty else fb
    fbb = fb[arm_mask(sweep, fb, c.b)] if not fb.empty else fb
    sa, sb = _strata(fa, vals), _strata(fbb, vals)
    diff = bootstrap_mean_of_means_diff_ci(sa, sb, seed=stable_seed("claim", sweep.name, c.id))
    v = verdict(diff, c.expect)
    mean = (lambda ss: float(np.mean([s.mean() for s in ss])) if ss else float("nan"))
    seeds = sorted(set(fa["seed"].dropna().tolist()) & set(fbb["seed"].dropna().tolist())) if len(fa) and len(fbb) else []
    n = min(len(fa), len(fbb))
    return ClaimResult(claim=c, verdict=v, diff=diff, mean_a=mean(sa), mean_b=mean(sb),
                       n_a=len(fa), n_b=len(fbb), seeds=seeds, sentence=_sentence(c, v, diff, n),
                       sweep=sweep.name)


def sweep_claims(sweep: Sweep, extra: list[Claim] | None = None) -> list[Claim]:
    """Claims of the sweep's stored (resolved) search space; a stored file that no longer
    validates gives a loader note instead of an exception."""
    out: list[Claim] = list(extra or [])
    data = _space_data(sweep)
    raw = data.get("claims") if isinstance(data, dict) else None
    if raw:
        axes = _axes(sweep, data)
        try:
            out += parse_claims(raw, axes)
        except ConfigError as e:
            sweep.warnings.append(f"claims in search_space.yaml ignored: {e}")
    return out


def report_metrics(sweep: Sweep) -> list[str]:
    """``report.metrics`` of the stored search space (invalid entries become loader notes)."""
    from ablate.sweep.claims import parse_report

    data = _space_data(sweep)
    if not isinstance(data, dict) or not data.get("report"):
        return []
    try:
        return parse_report(data.get("report")).metrics
    except ConfigError as e:
        sweep.warnings.append(f"report: in search_space.yaml ignored: {e}")
        return []


def _space_data(sweep: Sweep) -> Any:
    try:
        return yaml.safe_load(sweep.search_space_text or "") or {}
    except yaml.YAMLError:
        return {}


def _axes(sweep: Sweep, data: dict) -> dict[str, list]:
    """Swept axes of the stored space (slots, methods, choice params) → options."""
    axes: dict[str, list] = {}
    if data.get("methods"):
        axes["method"] = list(data["methods"])
    for g, opts in (data.get("slots") or {}).items():
        axes[str(g)] = list(opts or [])
    for k, p in (data.get("params") or {}).items():
        if isinstance(p, dict) and p.get("type") == "choice":
            axes[str(k)] = list(p.get("values") or [])
        elif isinstance(p, list):
            axes[str(k)] = list(p)
    return axes


__all__ = ["ClaimResult", "VERDICTS", "arm_mask", "evaluate_claim", "report_metrics",
           "sweep_claims", "verdict"]
