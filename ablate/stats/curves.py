"""Curve summaries for claims: one eval is noisy; the area under the eval curve and the mean of the
last k evals use every eval of a run (reference/statistics.md §4)."""

from __future__ import annotations

import numpy as np


def auc(steps, values) -> float:
    """Normalised area under the curve: the trapezoid integral over the logged steps divided by the
    step span (a time-average of the metric, in the metric's units). One point gives its value."""
    x, y = np.asarray(steps, float), np.asarray(values, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size == 0:
        return float("nan")
    o = np.argsort(x, kind="mergesort")
    x, y = x[o], y[o]
    if x.size == 1 or np.ptp(x) == 0:
        return float(y.mean())
    return float(np.trapezoid(y, x) / np.ptp(x))


def last_k_mean(steps, values, k: int = 3) -> float:
    """Mean of the last ``k`` logged values (by step)."""
    x, y = np.asarray(steps, float), np.asarray(values, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size == 0:
        return float("nan")
    return float(y[np.argsort(x, kind="mergesort")][-k:].mean())
