"""Report statistics in plain numpy: percentile bootstrap CIs, IQM with stratified bootstrap,
probability of improvement (rliable's methodology, Agarwal et al. 2021, re-implemented here).

Every function takes an explicit ``seed`` so that a report is byte-identical across runs.
Intervals are percentile intervals of ``n_boot`` resamples (rliable's default kind); with very few
runs (n < 3) they are optimistic, which the report says next to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

DEFAULT_N_BOOT = 2000
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class Interval:
    """A point estimate with a (1 - alpha) interval; ``lo``/``hi`` are NaN when not estimable."""

    point: float
    lo: float
    hi: float
    n: int

    @property
    def has_ci(self) -> bool:
        return bool(np.isfinite(self.lo) and np.isfinite(self.hi))

    def excludes(self, value: float) -> bool:
        """True when the interval exists and lies entirely on one side of ``value``."""
        return self.has_ci and (self.lo > value or self.hi < value)


def _clean(x) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    return a[np.isfinite(a)]


def _percentiles(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def iqm(x) -> float:
    """Interquartile mean of the flattened data: the mean after trimming ⌊n/4⌋ values from each end
    (same convention as ``scipy.stats.trim_mean(x, 0.25)``)."""
    a = np.sort(_clean(x))
    if a.size == 0:
        return float("nan")
    k = int(0.25 * a.size)
    return float(a[k : a.size - k].mean())


def _iqm_rows(samples: np.ndarray) -> np.ndarray:
    """IQM of each row of a (B, n) matrix."""
    n = samples.shape[1]
    k = int(0.25 * n)
    s = np.sort(samples, axis=1)
    return s[:, k : n - k].mean(axis=1)


_ROW_STATS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda s: s.mean(axis=1),
    "median": lambda s: np.median(s, axis=1),
    "iqm": _iqm_rows,
}


def bootstrap_ci(
    x,
    stat: str = "mean",
    *,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``stat`` (mean | median | iqm) of the finite values of ``x``.

    n = 0 gives NaN everywhere; n = 1 gives the value with no interval."""
    a = _clean(x)
    fn = _ROW_STATS[stat]
    if a.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    point = float(fn(a[None, :])[0])
    if a.size == 1:
        return Interval(point, float("nan"), float("nan"), 1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    lo, hi = _percentiles(fn(a[idx]), alpha)
    return Interval(point, lo, hi, int(a.size))


def bootstrap_diff_ci(
    x,
    y,
    stat: str = "mean",
    *,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> Interval:
    """Interval of stat(x) − stat(y) from independent bootstrap resamples of x and y (unpaired)."""
    a, b = _clean(x), _clean(y)
    fn = _ROW_STATS[stat]
    if a.size == 0 or b.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    point = float(fn(a[None, :])[0] - fn(b[None, :])[0])
    n = int(min(a.size, b.size))
    if a.size < 2 or b.size < 2:
        return Interval(point, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, a.size, size=(n_boot, a.size))
    ib = rng.integers(0, b.size, size=(n_boot, b.size))
    lo, hi = _percentiles(fn(a[ia]) - fn(b[ib]), alpha)
    return Interval(point, lo, hi, n)


def _as_strata(scores) -> list[np.ndarray]:
    """Accepts a (runs, tasks) matrix, a 1-D array (one task) or a list of per-task run arrays.
    Non-finite values are dropped; a stratum may come back empty."""
    is_list_of_arrays = isinstance(scores, (list, tuple)) and any(
        not np.isscalar(s) for s in scores
    )
    if is_list_of_arrays:
        strata = [np.asarray(s, dtype=float).ravel() for s in scores]
    else:
        arr = np.asarray(scores, dtype=float)
        if arr.ndim == 1:
            arr = arr[:, None]
        strata = [arr[:, j] for j in range(arr.shape[1])]
    return [s[np.isfinite(s)] for s in strata]


def _stratified_resample(strata: list[np.ndarray], n_boot: int, rng) -> np.ndarray:
    """(B, total_runs): each stratum's runs resampled with replacement within the stratum."""
    parts = []
    for s in strata:
        idx = rng.integers(0, s.size, size=(n_boot, s.size))
        parts.append(s[idx])
    return np.concatenate(parts, axis=1)


def stratified_bootstrap_ci(
    scores,
    stat: str = "iqm",
    *,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> Interval:
    """rliable's stratified bootstrap: runs are resampled within each task (stratum) and the
    aggregate (``iqm`` | ``mean`` | ``median``) is taken over all resampled (run, task) scores."""
    strata = [s for s in _as_strata(scores) if s.size]
    fn = _ROW_STATS[stat]
    if not strata:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    flat = np.concatenate(strata)
    point = float(fn(flat[None, :])[0])
    if max(s.size for s in strata) < 2:  # nothing to resample
        return Interval(point, float("nan"), float("nan"), int(flat.size))
    rng = np.random.default_rng(seed)
    lo, hi = _percentiles(fn(_stratified_resample(strata, n_boot, rng)), alpha)
    return Interval(point, lo, hi, int(flat.size))


def _paired_strata(x, y) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Tasks present (non-empty) for both x and y, in order; [] when the task counts differ."""
    sx, sy = _as_strata(x), _as_strata(y)
    if len(sx) != len(sy):
        return [], []
    keep = [i for i in range(len(sx)) if sx[i].size and sy[i].size]
    return [sx[i] for i in keep], [sy[i] for i in keep]


def bootstrap_mean_of_means_ci(
    strata,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> Interval:
    """Mean of the per-stratum means (each stratum weighted equally, e.g. each combination of a
    factorial design), with runs resampled within each stratum. Strata with one run contribute a
    fixed value; no interval when no stratum has two runs."""
    ss = [s for s in _as_strata(list(strata)) if s.size]
    if not ss:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    point = float(np.mean([s.mean() for s in ss]))
    n = int(sum(s.size for s in ss))
    if max(s.size for s in ss) < 2:
        return Interval(point, float("nan"), float("nan"), n)
    lo, hi = _percentiles(_mean_of_means_draws(ss, n_boot, np.random.default_rng(seed)), alpha)
    return Interval(point, lo, hi, n)


def _mean_of_means_draws(ss: list[np.ndarray], n_boot: int, rng) -> np.ndarray:
    """(n_boot,) bootstrap draws of the mean of per-stratum means (runs resampled within strata)."""
    acc = np.zeros(n_boot)
    for s in ss:
        if s.size == 1:
            acc += s[0]
        else:
            acc += s[rng.integers(0, s.size, size=(n_boot, s.size))].mean(axis=1)
    return acc / len(ss)


def bootstrap_mean_of_means_diff_ci(
    strata_a,
    strata_b,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> Interval:
    """Difference of two marginal means, A − B, each the mean of its per-stratum means (the
    statistic of ``bootstrap_mean_of_means_ci``), with runs resampled within every stratum of both
    sides independently. ``n`` is the smaller side's number of runs. No interval unless both sides
    have a stratum with two runs."""
    sa = [s for s in _as_strata(list(strata_a)) if s.size]
    sb = [s for s in _as_strata(list(strata_b)) if s.size]
    if not sa or not sb:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    point = float(np.mean([s.mean() for s in sa]) - np.mean([s.mean() for s in sb]))
    n = int(min(sum(s.size for s in sa), sum(s.size for s in sb)))
    if max(s.size for s in sa) < 2 or max(s.size for s in sb) < 2:
        return Interval(point, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    draws = _mean_of_means_draws(sa, n_boot, rng) - _mean_of_means_draws(sb, n_boot, rng)
    lo, hi = _percentiles(draws, alpha)
    return Interval(point, lo, hi, n)


def _poi_batch(xb: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """Mann–Whitney P(X > Y) + ½P(X = Y) for each row pair of (B, n) and (B, m)."""
    gt = (xb[:, :, None] > yb[:, None, :]).mean(axis=(1, 2))
    eq = (xb[:, :, None] == yb[:, None, :]).mean(axis=(1, 2))
    return gt + 0.5 * eq


def probability_of_improvement(x, y) -> float:
    """P(X > Y) averaged over tasks, each task's term being the normalised Mann–Whitney U statistic.
    ``x``/``y`` are per-task run scores in any form ``stratified_bootstrap_ci`` accepts, with the
    same task order."""
    sx, sy = _paired_strata(x, y)
    if not sx:
        return float("nan")
    return float(np.mean([_poi_batch(a[None, :], b[None, :])[0] for a, b in zip(sx, sy)]))


def probability_of_improvement_ci(
    x,
    y,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> Interval:
    """Probability of improvement with a stratified-bootstrap percentile interval (rliable)."""
    sx, sy = _paired_strata(x, y)
    if not sx:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    point = probability_of_improvement(sx, sy)
    n = int(min(min(a.size for a in sx), min(b.size for b in sy)))
    if n < 2:
        return Interval(point, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    acc = np.zeros(n_boot)
    for a, b in zip(sx, sy):
        ia = rng.integers(0, a.size, size=(n_boot, a.size))
        ib = rng.integers(0, b.size, size=(n_boot, b.size))
        acc += _poi_batch(a[ia], b[ib])
    lo, hi = _percentiles(acc / len(sx), alpha)
    return Interval(point, lo, hi, n)


def standard_error(x) -> float:
    a = _clean(x)
    if a.size < 2:
        return float("nan")
    return float(a.std(ddof=1) / np.sqrt(a.size))


def stable_seed(*parts) -> int:
    """A deterministic 32-bit seed from strings/numbers (Python's hash() is salted per process)."""
    import zlib

    return zlib.crc32("\x1f".join(str(p) for p in parts).encode("utf-8")) & 0x7FFFFFFF
