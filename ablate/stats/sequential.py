"""Group-sequential seeds: add seed batches and stop when a claim is decided, with the error rate
kept by Lan–DeMets alpha spending (O'Brien–Fleming-type by default; Lan & DeMets 1983).

Looks are planned in advance: ``looks(min, max, batch)`` gives the seed counts n_1 < … < n_K and
the information fractions t_k = n_k / n_K. The two-sided boundaries c_k solve
P(|Z_1| < c_1, …, |Z_{k−1}| < c_{k−1}, |Z_k| ≥ c_k) = α(t_k) − α(t_{k−1}) for the canonical joint
distribution of the look statistics (independent increments), computed by numerical integration on
a grid (Armitage, McPherson & Rowe 1969; Jennison & Turnbull 2000, ch. 19). At a look the t test's
p-value is compared with a nominal level. The usual conversion 2(1 − Φ(c_k)) lets the error rate of
t statistics at 3–10 seeds creep to 0.055–0.059, so the levels are scaled by one common factor
chosen by a fixed-seed simulation of paired t tests under the null (``t_levels``) to spend exactly
α; the error rate is re-checked on fresh simulations in tests and bench/sequential.py.

Stopping for "no effect as large as Δ" (non-binding, so it cannot raise the false-positive rate):
the repeated confidence interval at the look's nominal level lies within ±Δ. Holm across a family
of claims: with r claims already rejected, the others are tested at α/(m − r) (Maurer & Bretz 2013).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import optimize
from scipy import stats as st

from .power import ALPHA

SPENDING = ("obf", "pocock")
GRID = 1201  # grid points per look; the boundaries are accurate to ~1e-4


def spent(t: float, alpha: float, kind: str = "obf") -> float:
    """Cumulative two-sided alpha spent at information fraction ``t`` (0 < t ≤ 1)."""
    if kind == "obf":  # each side spends α/2 with 2 − 2Φ(z_{1−α/4}/√t) (gsDesign's sfLDOF, rpact)
        return float(2 * (2 - 2 * st.norm.cdf(st.norm.ppf(1 - alpha / 4) / math.sqrt(t))))
    if kind == "pocock":
        return float(alpha * math.log(1 + (math.e - 1) * t))
    raise ValueError(f"spending {kind!r}; allowed: {', '.join(SPENDING)}")


@lru_cache(maxsize=256)
def boundaries(fracs: tuple[float, ...], alpha: float = ALPHA, kind: str = "obf") -> tuple[float, ...]:
    """Two-sided z boundaries c_1..c_K for looks at information fractions ``fracs`` (increasing,
    last = 1)."""
    c: list[float] = []
    prev_t, prev_a = 0.0, 0.0
    grid = dens = None  # density of the score S_k = Z_k·√t_k on the continuation region
    for t in fracs:
        a = spent(t, alpha, kind)
        target = a - prev_a
        if grid is None:
            ck = float(st.norm.isf(target / 2))
            b = ck * math.sqrt(t)
            grid = np.linspace(-b, b, GRID)
            dens = st.norm.pdf(grid, scale=math.sqrt(t))
        else:
            sd = math.sqrt(t - prev_t)
            w = _weights(grid) * dens

            def exit_mass(b: float) -> float:
                inside = st.norm.cdf((b - grid) / sd) - st.norm.cdf((-b - grid) / sd)
                return float(np.sum(w * (1 - inside)))

            if target <= 0:
                b = float("inf")
                ck = float("inf")
            else:
                hi = 10 * math.sqrt(t)
                b = optimize.brentq(lambda x: exit_mass(x) - target, 1e-6, hi, xtol=1e-10) \
                    if exit_mass(1e-6) > target else 1e-6
                ck = b / math.sqrt(t)
            new = np.linspace(-b, b, GRID) if np.isfinite(b) else np.linspace(-8, 8, GRID) * math.sqrt(t)
            dens = (w[None, :] * st.norm.pdf((new[:, None] - grid[None, :]) / sd) / sd).sum(axis=1)
            grid = new
        c.append(ck)
        prev_t, prev_a = t, a
    return tuple(c)


def _weights(x: np.ndarray) -> np.ndarray:
    """Trapezoid weights on an evenly spaced grid."""
    h = x[1] - x[0]
    w = np.full(x.size, h)
    w[0] = w[-1] = h / 2
    return w


def looks(n_min: int, n_max: int, batch: int = 1) -> tuple[int, ...]:
    """Seed counts at which the claims are looked at: n_min, n_min + batch, …, n_max."""
    if not (2 <= n_min <= n_max) or batch < 1:
        raise ValueError(f"looks: need 2 ≤ min ≤ max and batch ≥ 1, got {n_min}, {n_max}, {batch}")
    out = list(range(n_min, n_max + 1, batch))
    if out[-1] != n_max:
        out.append(n_max)
    return tuple(out)


def nominal_levels(ns: tuple[int, ...], alpha: float = ALPHA, kind: str = "obf") -> tuple[float, ...]:
    """Per-look two-sided nominal p-value thresholds 2(1 − Φ(c_k))."""
    fr = tuple(n / ns[-1] for n in ns)
    return tuple(float(2 * st.norm.sf(c)) for c in boundaries(fr, alpha, kind))


CALIBRATION_REPS = 20_000


@lru_cache(maxsize=256)
def t_levels(ns: tuple[int, ...], alpha: float = ALPHA, kind: str = "obf") -> tuple[float, ...]:
    """Per-look nominal p-value thresholds for paired t tests at ``ns`` seeds: the z-scale levels
    times the common factor (≤ 1) under which simulated null t tests cross with probability α."""
    from .compare import paired_t

    z = np.asarray(nominal_levels(ns, alpha, kind))
    d = np.random.default_rng(20261207).standard_normal((CALIBRATION_REPS, ns[-1]))
    p = np.stack([paired_t(d[:, :n])["p"] for n in ns], axis=1)
    rate = lambda s: float((p < s * z).any(axis=1).mean())  # noqa: E731
    if rate(1.0) <= alpha:
        return tuple(float(v) for v in z)
    lo, hi = 0.0, 1.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rate(mid) <= alpha else (lo, mid)
    return tuple(float(v) for v in lo * z)


REJECTIONS = ("reproduced", "contradicted", "higher", "lower")  # a look's decisions that reject


@dataclass
class Look:
    """One look at one claim: seeds so far, the nominal level, the test, what was decided."""

    n: int
    level: float
    estimate: float
    low: float  # repeated confidence interval at this look's level
    high: float
    p_value: float
    decision: str  # "continue" | "reproduced" | "contradicted" | "equivalent" | final verdict

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("n", "level", "estimate", "low", "high", "p_value", "decision")}


@dataclass
class SequentialPlan:
    n_min: int
    n_max: int
    batch: int = 1
    alpha: float = ALPHA
    spending: str = "obf"
    ns: tuple[int, ...] = field(init=False)

    def __post_init__(self):
        self.ns = looks(self.n_min, self.n_max, self.batch)

    def level(self, k: int, family_alpha: float | None = None) -> float:
        """Nominal two-sided level of the paired t test at look index ``k`` when testing at
        ``family_alpha``."""
        return t_levels(self.ns, family_alpha or self.alpha, self.spending)[k]


def look(d: np.ndarray, level: float, *, expect: str | None = None, stop_within: float | None = None,
         last: bool = False) -> Look:
    """Paired t on the per-seed differences ``d`` at one look, against its nominal ``level``."""
    from .compare import paired_t, t_interval

    r = paired_t(np.asarray(d, float)[None, :])
    est, se, df, p = (float(r[k][0]) for k in ("estimate", "se", "df", "p"))
    lo, hi = (float(v) for v in t_interval(est, se, df, level))
    dec = "continue"
    if p < level:
        side = "higher" if est > 0 else "lower"
        dec = side if expect is None else ("reproduced" if side == expect else "contradicted")
    elif stop_within is not None and -stop_within < lo and hi < stop_within:
        dec = "equivalent"
    elif last:
        dec = "undecided"
    return Look(int(np.asarray(d).size), level, est, lo, hi, p, dec)


def holm_look(family: dict[str, tuple[np.ndarray, dict]], plan: SequentialPlan, k: int, m: int,
              rejected: int, last: bool) -> tuple[dict[str, Look], int]:
    """One look of a family of ``m`` hypotheses under Holm-recycled alpha spending: the open ones
    (``family``: id -> (per-seed differences, ``look`` keywords)) in order of their unadjusted p,
    each at look ``k``'s boundary for α/(m − rejected), so a rejection passes its alpha on to the
    rest. Returns each one's look and the updated number rejected."""
    order = sorted(family, key=lambda i: look(family[i][0], plan.alpha).p_value)
    out: dict[str, Look] = {}
    for i in order:
        d, kw = family[i]
        out[i] = lk = look(d, plan.level(k, plan.alpha / max(m - rejected, 1)), last=last, **kw)
        rejected += lk.decision in REJECTIONS
    return out, rejected


def simulate(plan: SequentialPlan, delta: float, sd: float = 1.0, reps: int = 20_000,
             stop_within: float | None = None, seed: int = 0) -> dict[str, float]:
    """Monte Carlo of the sequential paired t design (vectorised over ``reps``): rejection rate,
    expected seeds, and the rate of stopping for 'within ±stop_within'."""
    from .compare import paired_t, t_interval

    rng = np.random.default_rng(seed)
    d = rng.normal(delta, sd, size=(reps, plan.n_max))
    levels = t_levels(plan.ns, plan.alpha, plan.spending)
    alive = np.ones(reps, bool)
    reject = np.zeros(reps, bool)
    within = np.zeros(reps, bool)
    n_used = np.full(reps, plan.n_max, float)
    for n, lv in zip(plan.ns, levels):
        r = paired_t(d[:, :n])
        rej = alive & (r["p"] < lv)
        stop = rej.copy()
        if stop_within is not None:
            lo, hi = t_interval(r["estimate"], r["se"], r["df"], lv)
            w = alive & ~rej & (lo > -stop_within) & (hi < stop_within)
            within |= w
            stop |= w
        reject |= rej
        n_used[stop] = n
        alive &= ~stop
    return {"reject": float(reject.mean()), "expected_n": float(n_used.mean()),
            "within": float(within.mean()), "reps": reps}
