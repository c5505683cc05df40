"""``compare(a, b)``: the difference a − b of two arms' per-seed values with a small-sample-correct
interval, a p-value, the minimum detectable effect and a verdict.

- paired t when the arms share seeds (``paired=True``: same position = same seed), Welch t
  otherwise (``method="auto"`` or ``"t"``);
- ``method="bootstrap"``: BCa interval (scipy.stats.bootstrap), only from ``MIN_BOOTSTRAP`` values
  per arm; the p-value stays the t test's;
- ``method="permutation"``: exact (or, for large n, Monte Carlo) permutation p-value
  (scipy.stats.permutation_test); ``min_p`` is the smallest p the design can attain (3 vs 3: 0.1);
- ``margin``: two one-sided tests (TOST, Schuirmann 1987) for equivalence within ±margin;
- ``effect``: the effect of interest; a test whose MDE exceeds it is "underpowered".

The vectorised cores ``paired_t`` / ``welch_t`` take a batch of data sets (rows) so that the
calibration tests and benches run the very arithmetic ``compare`` uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import optimize
from scipy import stats as st

from .interval import MIN_BOOTSTRAP, NAN, Interval, clean, t_interval, t_p
from .power import ALPHA, POWER, mde as _mde

METHODS = ("auto", "t", "bootstrap", "permutation")
VERDICTS = ("reproduced", "contradicted", "equivalent", "underpowered", "inconclusive", "untestable",
            "misspecified")
MAX_EXACT = 100_000  # permutations enumerated exactly up to this many


def paired_t(d: np.ndarray) -> dict[str, np.ndarray]:
    """Paired t on a (rows, n) matrix of per-seed differences: estimate, se, df, t, p."""
    d = np.atleast_2d(np.asarray(d, float))
    n = d.shape[1]
    est = d.mean(axis=1)
    se = d.std(axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.full(len(d), NAN)
    return _finish(est, se, np.full(len(d), n - 1.0))


def welch_t(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Welch t on (rows, n_a) and (rows, n_b) matrices: estimate, se, df (Welch–Satterthwaite), t, p."""
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    na, nb = a.shape[1], b.shape[1]
    va = a.var(axis=1, ddof=1) / na if na > 1 else np.full(len(a), NAN)
    vb = b.var(axis=1, ddof=1) / nb if nb > 1 else np.full(len(b), NAN)
    se2 = va + vb
    with np.errstate(invalid="ignore", divide="ignore"):
        df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    df = np.where(se2 > 0, df, na + nb - 2.0)
    return _finish(a.mean(axis=1) - b.mean(axis=1), np.sqrt(se2), df)


def _finish(est, se, df) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(se > 0, est / se, np.where(est == 0, 0.0, np.sign(est) * np.inf))
    p = t_p(t, df)
    return {"estimate": est, "se": se, "df": df, "t": t, "p": p}


def tost_p(est, se, df, margin: float):
    """p-value of TOST for |δ| < margin: the larger of the two one-sided p-values."""
    est, se = np.asarray(est, dtype=float), np.asarray(se, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):  # se = 0: ±inf, p exactly 0 or 1
        p_low = st.t.sf((est + margin) / se, df)   # H0: δ ≤ −margin
        p_high = st.t.cdf((est - margin) / se, df)  # H0: δ ≥ +margin
    return np.maximum(p_low, p_high)


@dataclass(frozen=True)
class Comparison:
    """a − b with its interval, test, MDE and verdict. ``p_adjusted`` is set by a family
    correction (``ablate.stats.adjust``); the verdict always uses the adjusted p when present."""

    estimate: float
    low: float
    high: float
    p_value: float
    method: str
    n_a: int
    n_b: int
    mde: float
    verdict: str
    paired: bool = False
    alpha: float = ALPHA
    se: float = NAN
    df: float = NAN
    expect: str | None = None  # "higher" | "lower": turns higher/lower into reproduced/contradicted
    effect: float | None = None
    margin: float | None = None
    p_tost: float = NAN
    p_adjusted: float = NAN
    p_tost_adjusted: float = NAN
    min_p: float = NAN
    hedges_g: Interval | None = None

    @property
    def p(self) -> float:
        """The p-value the verdict uses: adjusted when a family correction was applied."""
        return self.p_adjusted if np.isfinite(self.p_adjusted) else self.p_value

    @property
    def interval(self) -> Interval:
        return Interval(self.estimate, self.low, self.high, min(self.n_a, self.n_b), self.p_value)

    @property
    def decided(self) -> bool:
        return self.verdict in ("reproduced", "contradicted", "higher", "lower", "equivalent")

    def adjusted(self, p_adjusted: float, p_tost_adjusted: float | None = None) -> "Comparison":
        c = replace(self, p_adjusted=float(p_adjusted),
                    p_tost_adjusted=NAN if p_tost_adjusted is None else float(p_tost_adjusted))
        return replace(c, verdict=decide(c))


def decide(c: Comparison) -> str:
    """reproduced / contradicted (a − b differs from 0, on the expected / other side), equivalent
    (TOST within ±margin), underpowered (MDE > effect of interest), else inconclusive."""
    if not (np.isfinite(c.p_value) and np.isfinite(c.low)):
        return "untestable"
    if c.p < c.alpha:
        side = "higher" if c.estimate > 0 else "lower"
        if c.expect is None:
            return side
        return "reproduced" if side == c.expect else "contradicted"
    pt = c.p_tost_adjusted if np.isfinite(c.p_tost_adjusted) else c.p_tost
    if c.margin is not None and np.isfinite(pt) and pt < c.alpha:
        return "equivalent"
    if c.effect is not None and not (c.mde <= abs(c.effect)):
        return "underpowered"
    return "inconclusive"


def _pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if x.size != y.size:
        raise ValueError(f"compare(paired=True): arms have {x.size} and {y.size} values; "
                         "paired arms need one value per shared seed, in the same order")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def compare(a, b, *, paired: bool = False, alpha: float = ALPHA, margin: float | None = None,
            effect: float | None = None, method: str = "auto", expect: str | None = None,
            seed: int = 0, detail: bool = True) -> Comparison:
    """Compare two arms' per-seed values (a − b). See the module docstring. ``detail=False`` skips
    the MDE and Hedges' g (root finding) when only the test is needed, e.g. for a large family."""
    if method not in METHODS:
        raise ValueError(f"compare: method {method!r}; allowed: {', '.join(METHODS)}")
    if margin is not None and not margin > 0:
        raise ValueError(f"compare: margin must be > 0, got {margin!r}")
    if paired:
        x, y = _pairs(a, b)
        r = paired_t((x - y)[None, :]) if x.size else None
    else:
        x, y = clean(a), clean(b)
        r = welch_t(x[None, :], y[None, :]) if x.size and y.size else None
    na, nb = int(x.size), int(y.size)
    name = "paired t" if paired else "Welch t"
    if r is None or min(na, nb) < 2:
        est = float(x.mean() - y.mean()) if na and nb else NAN
        c = Comparison(est, NAN, NAN, NAN, name, na, nb, NAN, "untestable", paired, alpha,
                       expect=expect, effect=effect, margin=margin)
        return c
    est, se, df, p = (float(r[k][0]) for k in ("estimate", "se", "df", "p"))
    lo, hi = (float(v) for v in t_interval(est, se, df, alpha))
    min_p = NAN
    if method == "bootstrap":
        lo, hi = _bca(x, y, paired, alpha, seed)
        name = "BCa bootstrap (p from " + name + ")"
    elif method == "permutation":
        p, min_p = _permutation(x, y, paired, seed)
        name = "exact permutation" if np.isfinite(min_p) else "Monte Carlo permutation"
        name += " (interval from " + ("paired t)" if paired else "Welch t)")
    c = Comparison(est, lo, hi, p, name, na, nb, _mde(se, df, alpha, POWER) if detail else NAN, "",
                   paired, alpha, se, df, expect, effect, margin,
                   float(tost_p(est, se, df, margin)) if margin is not None else NAN,
                   min_p=min_p, hedges_g=hedges_g(x, y, paired=paired, alpha=alpha) if detail else None)
    return replace(c, verdict=decide(c))


def _bca(x, y, paired: bool, alpha: float, seed: int) -> tuple[float, float]:
    if min(x.size, y.size) < MIN_BOOTSTRAP:
        raise ValueError(f"compare(method='bootstrap'): needs ≥ {MIN_BOOTSTRAP} values per arm "
                         f"(got {x.size}, {y.size}); below that a bootstrap interval under-covers")
    rng = np.random.default_rng(seed)
    if paired:
        res = st.bootstrap((x - y,), np.mean, confidence_level=1 - alpha, method="BCa", rng=rng)
    else:
        res = st.bootstrap((x, y), lambda u, v, axis=-1: u.mean(axis) - v.mean(axis),
                           confidence_level=1 - alpha, method="BCa", rng=rng)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _permutation(x, y, paired: bool, seed: int) -> tuple[float, float]:
    """(two-sided p, smallest attainable p or NaN when not enumerated exactly)."""
    if paired:
        total = 2 ** x.size
        res_kw = {"permutation_type": "samples"}
        data = (x, y)
    else:
        total = math.comb(x.size + y.size, x.size)
        res_kw = {"permutation_type": "independent"}
        data = (x, y)
    exact = total <= MAX_EXACT
    res = st.permutation_test(data, lambda u, v, axis=-1: u.mean(axis) - v.mean(axis),
                              n_resamples=np.inf if exact else 9999, rng=np.random.default_rng(seed),
                              **res_kw)
    return float(res.pvalue), (min(1.0, 2.0 / total) if exact else NAN)


def hedges_g(a, b, *, paired: bool = False, alpha: float = ALPHA) -> Interval:
    """Standardised difference with the small-sample correction J = 1 − 3/(4·df − 1) and an exact
    interval from inverting the noncentral t. Paired: g_z = mean(d)/sd(d); else the pooled SD."""
    x, y = (_pairs(a, b) if paired else (clean(a), clean(b)))
    if paired:
        d = x - y
        n = d.size
        df, scale = n - 1, math.sqrt(n)
        s = d.std(ddof=1) if n > 1 else NAN
        raw = d.mean() / s if s > 0 else NAN
    else:
        na, nb = x.size, y.size
        df, scale = na + nb - 2, math.sqrt(na * nb / (na + nb)) if na and nb else NAN
        s = math.sqrt(((na - 1) * x.var(ddof=1) + (nb - 1) * y.var(ddof=1)) / df) if df > 0 and min(na, nb) > 1 else NAN
        raw = (x.mean() - y.mean()) / s if s > 0 else NAN
    n = min(x.size, y.size)
    if not (df > 0 and np.isfinite(raw)):
        return Interval(NAN, NAN, NAN, int(n))
    j = 1 - 3 / (4 * df - 1)
    tobs = raw * scale
    lo = _nc_for(tobs, df, 1 - alpha / 2)
    hi = _nc_for(tobs, df, alpha / 2)
    return Interval(float(j * raw), float(j * lo / scale), float(j * hi / scale), int(n))


def _nc_for(tobs: float, df: float, q: float) -> float:
    """The noncentrality whose nct cdf at ``tobs`` is ``q`` (cdf falls as nc grows); NaN when the
    bracket cannot be found numerically."""
    f = lambda nc: float(st.nct.cdf(tobs, df, nc)) - q  # noqa: E731
    lo, hi, w = tobs - 1.0, tobs + 1.0, 1.0
    for _ in range(60):
        flo, fhi = f(lo), f(hi)
        if not (np.isfinite(flo) and np.isfinite(fhi)):
            return NAN
        if flo >= 0 >= fhi:
            try:
                return float(optimize.brentq(f, lo, hi, xtol=1e-10))
            except ValueError:  # scipy's nct.cdf is NaN inside the bracket (extreme |tobs|)
                return NAN
        w *= 2
        lo, hi = (lo - w, hi) if flo < 0 else (lo, hi + w)
    return NAN
