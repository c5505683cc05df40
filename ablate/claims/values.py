"""The per-run value of a metric that a claim (or a report's metric table) compares: one number
per trial under one of the claim format's aggregations (``ablate.claims.spec.AGGREGATIONS``), for
a logged metric or a per-run difference ``"M1 - M2"`` (taken step by step where both are logged).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ablate.stats.curves import auc, last_k_mean
from ablate.tracking.sweep_reader import Sweep

from .spec import AGGREGATIONS, metric_terms


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


__all__ = ["run_values"]
