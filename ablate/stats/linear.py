"""Factorial sweeps as a linear model: each combination (cell) has its own mean, seeds are a block
effect when the cells share them (same warm start and sampling streams), and one residual variance
is pooled over all cells. Marginal means, level differences and interactions are linear contrasts
of the cell means, tested with statsmodels' OLS ``t_test`` / ``f_test`` on the pooled residual
degrees of freedom, instead of resampling 3 values inside each cell.

    y_{c,s} = μ_c + β_s + ε,  Σ_s β_s = 0,  ε ~ N(0, σ²)
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
import statsmodels.api as sm

from .interval import NAN, Interval
from .power import ALPHA


class CellModel:
    """OLS of per-run values on cell indicators (+ sum-coded seed blocks when ``blocked``)."""

    def __init__(self, y: Sequence[float], cells: Sequence[Hashable], seeds: Sequence | None = None,
                 *, blocked: bool = True, alpha: float = ALPHA):
        y = np.asarray(y, dtype=float)
        ok = np.isfinite(y)
        self.y = y[ok]
        self.cells_of = [c for c, k in zip(cells, ok) if k]
        self.cells = sorted(set(self.cells_of), key=str)
        self.index = {c: i for i, c in enumerate(self.cells)}
        self.alpha = alpha
        sd = [s for s, k in zip(seeds, ok) if k] if seeds is not None else None
        self.blocked = bool(blocked and sd is not None and self._blockable(sd))
        x = np.zeros((self.y.size, len(self.cells)))
        x[np.arange(self.y.size), [self.index[c] for c in self.cells_of]] = 1.0
        if self.blocked:
            levels = sorted(set(sd), key=str)
            blk = np.zeros((self.y.size, len(levels) - 1))
            for r, s in enumerate(sd):
                j = levels.index(s)
                if j < len(levels) - 1:
                    blk[r, j] = 1.0
                else:
                    blk[r, :] = -1.0
            x = np.hstack([x, blk])
        self.x = x
        self.df_resid = int(self.y.size - np.linalg.matrix_rank(x)) if self.y.size else 0
        self.fit = sm.OLS(self.y, x).fit() if self.df_resid > 0 else None

    def _blockable(self, seeds: list) -> bool:
        """Seeds are a block effect when there are ≥ 2 of them and each appears in ≥ 2 cells."""
        by_seed: dict = {}
        for s, c in zip(seeds, self.cells_of):
            by_seed.setdefault(s, set()).add(c)
        return len(by_seed) >= 2 and all(len(v) >= 2 for v in by_seed.values())

    @property
    def sigma(self) -> float:
        """Pooled residual (seed) SD of one run."""
        return float(np.sqrt(self.fit.scale)) if self.fit is not None else NAN

    def cell_mean(self, cell) -> float:
        m = [yy for yy, c in zip(self.y, self.cells_of) if c == cell]
        return float(np.mean(m)) if m else NAN

    def _vector(self, weights: dict) -> np.ndarray:
        L = np.zeros(self.x.shape[1])
        for c, w in weights.items():
            L[self.index[c]] = w
        return L

    def contrast(self, weights: dict) -> Interval:
        """Σ w_c μ_c with a t interval and p-value (pooled residual variance)."""
        weights = {c: w for c, w in weights.items() if c in self.index}
        n = int(sum(1 for c in self.cells_of if c in weights))
        if not weights:
            return Interval(NAN, NAN, NAN, 0)
        L = self._vector(weights)
        if self.fit is None or not self._variance(L[None, :]).any():
            point = float(L @ self.fit.params) if self.fit is not None else float(
                sum(w * self.cell_mean(c) for c, w in weights.items()))
            return Interval(point, NAN, NAN, n)  # no residual variance: nothing to test against
        r = self.fit.t_test(L[None, :])
        lo, hi = np.asarray(r.conf_int(alpha=self.alpha)).ravel()
        return Interval(float(np.ravel(r.effect)[0]), float(lo), float(hi), n, float(np.ravel(r.pvalue)[0]))

    def mean(self, cells: Sequence) -> Interval:
        """Equal-weighted mean of the cell means of ``cells`` (a marginal mean)."""
        cs = [c for c in cells if c in self.index]
        return self.contrast({c: 1 / len(cs) for c in cs}) if cs else Interval(NAN, NAN, NAN, 0)

    def diff(self, cells_a: Sequence, cells_b: Sequence) -> Interval:
        """Marginal mean of ``cells_a`` minus that of ``cells_b``."""
        a = [c for c in cells_a if c in self.index]
        b = [c for c in cells_b if c in self.index]
        if not a or not b:
            return Interval(NAN, NAN, NAN, 0)
        w = {c: 1 / len(a) for c in a}
        for c in b:
            w[c] = w.get(c, 0.0) - 1 / len(b)
        return self.contrast(w)

    def _variance(self, L: np.ndarray) -> np.ndarray:
        """Per-row variance of the contrasts (True where it is estimably positive)."""
        v = np.einsum("ij,jk,ik->i", L, np.asarray(self.fit.cov_params()), L)
        return v > 1e-12 * max(1.0, float(np.abs(self.y).max(initial=0.0)) ** 2)

    def _independent(self, L: np.ndarray) -> np.ndarray | None:
        """The rows of L whose contrasts are estimable and linearly independent in the fitted
        covariance (None when none is): statsmodels would warn on a rank-deficient constraint."""
        cov = np.asarray(self.fit.cov_params())
        keep: list[int] = []
        for i in range(len(L)):
            cand = L[keep + [i]]
            if np.linalg.matrix_rank(cand @ cov @ cand.T, tol=1e-10 * max(1.0, np.abs(cov).max())) == len(keep) + 1:
                keep.append(i)
        return L[keep] if keep else None

    def f_test(self, rows: list[dict]) -> tuple[float, float, int]:
        """(F, p, numerator df) of the joint hypothesis that every contrast in ``rows`` is 0."""
        if self.fit is None or not rows:
            return NAN, NAN, 0
        L = self._independent(np.vstack([self._vector(r) for r in rows]))
        if L is None:
            return NAN, NAN, 0
        r = self.fit.f_test(L)
        return float(np.ravel(r.fvalue)[0]), float(r.pvalue), int(r.df_num)


def factor_rows(levels_of: dict, levels: list) -> list[dict]:
    """Contrasts 'level i − last level' (marginal over the other factors) for a main-effect F test.
    ``levels_of``: cell → this factor's level (cells without it are ignored)."""
    groups = {lv: [c for c, l in levels_of.items() if l == lv] for lv in levels}
    groups = {lv: cs for lv, cs in groups.items() if cs}
    lvls = list(groups)
    rows = []
    for lv in lvls[:-1]:
        w = {c: 1 / len(groups[lv]) for c in groups[lv]}
        for c in groups[lvls[-1]]:
            w[c] = w.get(c, 0.0) - 1 / len(groups[lvls[-1]])
        rows.append(w)
    return rows


def interaction_rows(a_of: dict, b_of: dict, rows_a: list, cols_b: list) -> list[dict]:
    """Interaction contrasts of two factors: (ij − iJ − Ij + IJ) of the two-way marginal cell means,
    for i < I, j < J. ``a_of`` / ``b_of``: cell → level of each factor."""
    def cells(i, j):
        return [c for c in a_of if c in b_of and a_of[c] == i and b_of[c] == j]

    out = []
    last_a, last_b = rows_a[-1], cols_b[-1]
    for i in rows_a[:-1]:
        for j in cols_b[:-1]:
            w: dict = {}
            for (ii, jj), sign in (((i, j), 1), ((i, last_b), -1), ((last_a, j), -1), ((last_a, last_b), 1)):
                cs = cells(ii, jj)
                if not cs:
                    return []
                for c in cs:
                    w[c] = w.get(c, 0.0) + sign / len(cs)
            out.append(w)
    return out
