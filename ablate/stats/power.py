"""Power and minimum detectable effect (MDE) of a t test, from the noncentral t distribution.

For a test with standard error ``se`` and ``df`` degrees of freedom, the power against a true
difference δ is P(|T'| > t_{1−α/2}) with T' ~ nct(df, δ/se). The MDE is the δ that gives the target
power (80% by default); the seeds needed are the smallest n whose MDE is at most the effect of
interest. Paired designs use the SD of the per-seed differences, σ_d² = σ_a² + σ_b² − 2ρσ_aσ_b.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize
from scipy import stats as st

ALPHA = 0.05  # the level every test, interval, finding and claim decides at unless told otherwise
POWER = 0.8
MAX_SEEDS = 10_000


def power(delta: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """Two-sided power of a t test against a true difference ``delta``."""
    if not (se > 0 and df > 0):
        return float("nan")
    crit = st.t.ppf(1 - alpha / 2, df)
    nc = abs(delta) / se
    upper = float(st.nct.sf(crit, df, nc))
    lower = float(st.nct.cdf(-crit, df, nc))  # the far tail; scipy gives NaN where it underflows
    return upper + (lower if np.isfinite(lower) else 0.0)


def mde(se: float, df: float, alpha: float = ALPHA, target: float = POWER) -> float:
    """Smallest |δ| a two-sided t test with this ``se`` and ``df`` detects with power ``target``."""
    if not (np.isfinite(se) and se > 0 and df > 0):
        return float("nan") if not (np.isfinite(se) and se == 0 and df > 0) else 0.0
    f = lambda nc: power(nc, 1.0, df, alpha) - target  # noqa: E731  (in units of se)
    hi = 1.0
    while f(hi) < 0:
        hi *= 2
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-10) * se)


def paired_sd(sd_a: float, sd_b: float, rho: float) -> float:
    """SD of the per-seed difference a − b when the arms' values correlate with ``rho``."""
    return math.sqrt(max(sd_a**2 + sd_b**2 - 2 * rho * sd_a * sd_b, 0.0))


def design_se(sd: float, n: int, paired: bool, sd_b: float | None = None) -> tuple[float, float]:
    """(se, df) of the difference with ``n`` seeds per arm: paired (``sd`` = SD of the differences)
    or Welch (``sd``, ``sd_b`` = the arms' SDs; Welch–Satterthwaite df)."""
    if paired:
        return sd / math.sqrt(n), n - 1
    sb = sd if sd_b is None else sd_b
    va, vb = sd**2 / n, sb**2 / n
    df = (va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (n - 1)) if va + vb > 0 else n - 1
    return math.sqrt(va + vb), df


def seeds_needed(effect: float, sd: float, *, paired: bool = True, sd_b: float | None = None,
                 alpha: float = ALPHA, target: float = POWER) -> int:
    """Smallest seeds per arm (≥ 2) whose t test detects ``effect`` with power ``target``."""
    if not (effect and np.isfinite(sd)):
        return -1
    if sd == 0 and (sd_b in (None, 0)):
        return 2
    ok = lambda n: power(effect, *design_se(sd, n, paired, sd_b), alpha) >= target  # noqa: E731
    lo, hi = 1, 2
    while not ok(hi):  # power grows with n: double, then bisect
        lo, hi = hi, hi * 2
        if hi > MAX_SEEDS:
            return -1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi
