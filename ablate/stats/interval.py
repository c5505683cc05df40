"""Point estimates with intervals: the one ``Interval`` type the report and claims print, and
small-sample-correct intervals for a location (t for the mean; BCa bootstrap only from
``MIN_BOOTSTRAP`` values, where it is calibrated)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy import stats as st

from .power import ALPHA

MIN_BOOTSTRAP = 20  # below this a percentile/BCa bootstrap under-covers (reference/statistics.md §1)
NAN = float("nan")


@dataclass(frozen=True)
class Interval:
    """A point estimate with a (1 - alpha) interval; ``lo``/``hi`` are NaN when not estimable.
    ``p`` is the p-value of "the quantity is 0" when the interval comes with a test."""

    point: float
    lo: float
    hi: float
    n: int
    p: float = NAN

    @property
    def has_ci(self) -> bool:
        return bool(np.isfinite(self.lo) and np.isfinite(self.hi))

    def excludes(self, value: float) -> bool:
        """True when the interval exists and lies entirely on one side of ``value``."""
        return self.has_ci and (self.lo > value or self.hi < value)


def clean(x) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    return a[np.isfinite(a)]


def iqm(x) -> float:
    """Interquartile mean: ``scipy.stats.trim_mean(x, 0.25)`` of the finite values."""
    a = clean(x)
    return float(st.trim_mean(a, 0.25)) if a.size else NAN


_POINT = {"mean": np.mean, "median": np.median, "iqm": lambda a: st.trim_mean(a, 0.25)}


def mean_ci(x, alpha: float = ALPHA) -> Interval:
    """Student-t interval of the mean of the finite values of ``x`` (exact for normal data, the
    small-sample default); no interval from fewer than 2 values."""
    a = clean(x)
    if a.size == 0:
        return Interval(NAN, NAN, NAN, 0)
    m = float(a.mean())
    if a.size < 2:
        return Interval(m, NAN, NAN, 1)
    se = float(a.std(ddof=1) / np.sqrt(a.size))
    lo, hi = (float(v) for v in t_interval(m, se, a.size - 1, alpha))
    # the one-sample t test's two-sided p-value (st.ttest_1samp)
    p = float(t_p(m / se, a.size - 1)) if se > 0 else (0.0 if m != 0 else 1.0)
    return Interval(m, lo, hi, int(a.size), p)


# st.t.ppf / st.t.sf through the special functions they call (stdtrit, stdtr), without the
# distribution object's per-call overhead (hundreds of calls per report); both take arrays
def t_interval(est, se, df, alpha: float = ALPHA):
    """``est ± t_{1−α/2, df}·se``: the Student-t interval every comparison and mean reports."""
    h = special.stdtrit(df, 1 - alpha / 2) * se
    return est - h, est + h


def t_p(t, df):
    """Two-sided p-value of a t statistic, ``2·st.t.sf(|t|, df)``."""
    return 2 * special.stdtr(df, -np.abs(t))


def location_ci(x, stat: str = "mean", alpha: float = ALPHA, seed: int = 0) -> Interval:
    """``mean`` gets a t interval; ``median``/``iqm`` get a BCa bootstrap interval
    (scipy.stats.bootstrap) from ``MIN_BOOTSTRAP`` values on, and only a point estimate below."""
    if stat == "mean":
        return mean_ci(x, alpha)
    a = clean(x)
    if a.size == 0:
        return Interval(NAN, NAN, NAN, 0)
    fn = _POINT[stat]
    point = float(fn(a))
    if a.size < MIN_BOOTSTRAP or np.ptp(a) == 0:
        return Interval(point, NAN, NAN, int(a.size))
    res = st.bootstrap((a,), lambda v, axis=-1: np.apply_along_axis(fn, axis, v), vectorized=True,
                       confidence_level=1 - alpha, method="BCa", n_resamples=2000,
                       rng=np.random.default_rng(seed))
    return Interval(point, float(res.confidence_interval.low), float(res.confidence_interval.high),
                    int(a.size))


def probability_of_improvement(x, y) -> float:
    """P(X > Y) + ½P(X = Y) over all pairs of runs (the normalised Mann–Whitney U): a descriptive
    point estimate; its uncertainty at a few seeds is that of the mean difference."""
    a, b = clean(x), clean(y)
    if a.size == 0 or b.size == 0:
        return NAN
    return float(st.mannwhitneyu(a, b).statistic / (a.size * b.size))
