"""Verdicts on published claims (``claims:`` of a search space), computed by ``ablate.stats``.

For each claim: the per-run value of its metric (final / mean / slope / auc / last3 over the run)
on the full-budget trials of each arm. Arms share seeds (same warm start, same sampling streams),
so per seed an arm's value is the mean over its combinations at that seed, and a − b is tested with
a paired t over the shared seeds (Welch t over per-seed arm values when no seeds are shared). The
claims of one family (one sweep's report, or one ``ablate claims`` run) are Holm-corrected; the
verdict is reproduced / contradicted / equivalent (TOST within ±margin) / underpowered (MDE > the
declared effect) / inconclusive, or misspecified for a claim its sweep marks so.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ablate.errors import ConfigError
from ablate.render import value_text
from ablate.stats import ALPHA, Comparison, Interval, adjust, compare
from ablate.tracking.sweep_reader import Sweep

from .spec import Claim, parse_claims, parse_report
from .values import run_values

AGG_WORDS = {"final": "final value", "mean": "mean over the run", "slope": "slope per step over the run",
             "auc": "area under the curve (time-average)", "last3": "mean of the last 3 logged values"}
PROBE_WORDS = {"trace_cov": "trace of the covariance of one batch's gradient at a fixed policy",
               "rel_var": "trace of the covariance of one batch's gradient / ‖E g‖², at a fixed policy"}


def agg_words(c: Claim) -> str:
    """How the claim's per-replicate value is formed (a run's aggregation, or the probe's metric)."""
    return PROBE_WORDS[c.metric] if c.is_probe else AGG_WORDS[c.aggregation]


def what_text(c: Claim) -> str:
    return f"{c.metric} ({agg_words(c)})"


@dataclass
class ClaimResult:
    claim: Claim
    comparison: Comparison
    mean_a: float
    mean_b: float
    n_a: int  # runs in arm a
    n_b: int
    seeds: list  # seeds present in both arms
    sweep: str = ""
    looks: list = field(default_factory=list)  # ablate.stats.sequential.Look, one per look

    @property
    def verdict(self) -> str:
        return "misspecified" if self.claim.misspecified else self.comparison.verdict

    @property
    def diff(self) -> Interval:
        """a − b with its (unadjusted) interval."""
        return self.comparison.interval

    @property
    def n_seeds(self) -> int:
        return min(self.comparison.n_a, self.comparison.n_b)

    @property
    def sentence(self) -> str:
        return sentence(self)


def arm_text(arm: dict) -> str:
    return ", ".join(f"{k}={value_text(v)}" for k, v in arm.items())


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
        ok &= (frame[col].map(value_text) == value_text(want)).to_numpy()
    return ok


def per_seed(frame: pd.DataFrame, vals: pd.Series) -> pd.Series:
    """An arm's value per seed: the mean over the arm's combinations at that seed."""
    if frame.empty:
        return pd.Series(dtype=float)
    y = frame.assign(v=frame["trial_id"].map(vals).astype(float))
    return y.groupby("seed", sort=True)["v"].mean()


def arm_values(sweep: Sweep, c: Claim, max_seeds: int | None = None):
    """(per-seed values of a, of b, runs a, runs b) over the full-budget trials; ``max_seeds``
    keeps the first seeds in the sweep's seed order (a sequential look)."""
    vals = run_values(sweep, c.metric, c.aggregation)
    fb = sweep.full_budget()
    fb = fb[fb["trial_id"].isin(vals.index)] if not fb.empty else fb
    if max_seeds is not None and not fb.empty:
        keep = sorted(set(fb["seed"].dropna().tolist()))[:max_seeds]
        fb = fb[fb["seed"].isin(keep)]
    fa = fb[arm_mask(sweep, fb, c.a)] if not fb.empty else fb
    fbb = fb[arm_mask(sweep, fb, c.b)] if not fb.empty else fb
    return per_seed(fa, vals), per_seed(fbb, vals), len(fa), len(fbb)


def evaluate_claim(sweep: Sweep, c: Claim, alpha: float = ALPHA) -> ClaimResult:
    """One claim, uncorrected (``evaluate_family`` applies Holm over a family)."""
    sa, sb, na, nb = arm_values(sweep, c)
    shared = sorted(set(sa.index) & set(sb.index))
    paired = len(shared) >= 2
    x, y = (sa[shared].to_numpy(), sb[shared].to_numpy()) if paired else (sa.to_numpy(), sb.to_numpy())
    comp = compare(x, y, paired=paired, alpha=alpha, margin=c.margin, effect=c.effect, expect=c.expect)
    mean = lambda s: float(s.mean()) if len(s) else float("nan")  # noqa: E731
    return ClaimResult(claim=c, comparison=comp, mean_a=mean(sa), mean_b=mean(sb), n_a=na, n_b=nb,
                       seeds=shared, sweep=sweep.name)


def evaluate_family(results: list[ClaimResult], share: float = 1.0) -> list[ClaimResult]:
    """Holm over the family's testable, well-specified claims; verdicts use the adjusted p.
    ``share`` (≤ 1): the family's share of the run's alpha when a run has several families
    (``ablate claims``: Bonferroni across families, Holm within), applied as adjusted p / share."""
    fam = [i for i, r in enumerate(results) if not r.claim.misspecified]
    adj = adjust([results[i].comparison for i in fam], "holm")
    out = list(results)
    for i, comp in zip(fam, adj):
        if share < 1:
            tost = comp.p_tost_adjusted
            comp = comp.adjusted(min(1.0, comp.p_adjusted / share),
                                 min(1.0, tost / share) if np.isfinite(tost) else None)
        out[i] = replace(results[i], comparison=comp)
    return out


def evaluate_sweep(sweep: Sweep, extra: list[Claim] | None = None) -> list[ClaimResult]:
    return evaluate_family([evaluate_claim(sweep, c) for c in sweep_claims(sweep, extra)])


def _fmt(x: float) -> str:
    return f"{x:+.4g}" if np.isfinite(x) else "n/a"


def p_text(c: Comparison) -> str:
    adj = f", Holm-adjusted p = {c.p_adjusted:.3g}" if np.isfinite(c.p_adjusted) else ""
    return f"p = {c.p_value:.3g}{adj}" if np.isfinite(c.p_value) else "no test"


def sentence(r: ClaimResult) -> str:
    c, k = r.claim, r.comparison
    what = what_text(c)
    unit = "batches" if c.is_probe else "seeds"
    a, b = arm_text(c.a), arm_text(c.b)
    if not np.isfinite(k.estimate):
        return f"No full-budget runs with {what} in both arms ({a} / {b}): nothing to test."
    if k.verdict == "untestable":
        return (f"Not testable: fewer than 2 {unit} with {what} in an arm (a − b = {_fmt(k.estimate)}).")
    ci = f"{1 - k.alpha:.0%} CI [{_fmt(k.low)}, {_fmt(k.high)}]"
    over = "" if c.is_probe else f" over {k.n_a} seeds"
    stats = (f"a − b = {_fmt(k.estimate)}, {ci}, {p_text(k)}, {k.method}{over}; "
             f"MDE (80% power) {k.mde:.3g}")
    rel = "higher" if k.estimate > 0 else "lower"
    v = r.verdict
    if v == "misspecified":
        return f"Misspecified: {c.misspecified} (for the record: {stats})."
    if v == "reproduced":
        return f"As claimed, {a} gives a {rel} {what} than {b}: {stats}."
    if v == "contradicted":
        return f"Opposite to the claim, {a} gives a {rel} {what} than {b}: {stats}."
    if v == "equivalent":
        return (f"{a} and {b} are equivalent within ±{c.margin:g} on {what} (TOST p = "
                f"{k.p_tost_adjusted if np.isfinite(k.p_tost_adjusted) else k.p_tost:.3g}): {stats}.")
    if v == "underpowered":
        return (f"Underpowered: the smallest difference this design detects ({k.mde:.3g}) exceeds the "
                f"effect of interest ({c.effect:g}); no verdict: {stats}.")
    return (f"No separable difference in {what} between {a} and {b} (the claim expects a "
            f"{c.expect} value for a): {stats}.")


def sweep_claims(sweep: Sweep, extra: list[Claim] | None = None) -> list[Claim]:
    """Claims of the sweep's stored (resolved) search space; a stored file that no longer
    validates gives a loader note instead of an exception."""
    out: list[Claim] = list(extra or [])
    data = _space_data(sweep)
    raw = data.get("claims") if isinstance(data, dict) else None
    if raw:
        try:
            out += parse_claims(raw, _axes(data))
        except ConfigError as e:
            sweep.warnings.append(f"claims in search_space.yaml ignored: {e}")
    return out


def report_metrics(sweep: Sweep) -> list[str]:
    """``report.metrics`` of the stored search space (invalid entries become loader notes)."""
    data = _space_data(sweep)
    if not isinstance(data, dict) or not data.get("report"):
        return []
    try:
        return parse_report(data.get("report")).metrics
    except ConfigError as e:
        sweep.warnings.append(f"report: in search_space.yaml ignored: {e}")
        return []


def _space_data(sweep: Sweep) -> Any:
    import yaml

    try:
        return yaml.safe_load(sweep.search_space_text or "") or {}
    except yaml.YAMLError:
        return {}


def _axes(data: dict) -> dict[str, list]:
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
