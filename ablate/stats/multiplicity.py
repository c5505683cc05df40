"""Family corrections: Holm (family-wise error) for a declared family such as the claims of one
``ablate claims`` run, Benjamini–Hochberg (false discovery rate) for exploratory tables. Both
through statsmodels' ``multipletests``; NaN p-values (untestable) are left out and stay NaN."""

from __future__ import annotations

import gc
from typing import Sequence

import numpy as np
from statsmodels.stats.multitest import multipletests

from .compare import Comparison
from .power import ALPHA

KINDS = {"holm": "holm", "bh": "fdr_bh"}


def rejects(p: float, alpha: float = ALPHA) -> bool:
    """Whether an (adjusted) p-value rejects at ``alpha``; an untestable (NaN) p never does."""
    return bool(np.isfinite(p) and p < alpha)


def adjust_p(pvalues: Sequence[float], kind: str = "holm", alpha: float = ALPHA) -> np.ndarray:
    """Adjusted p-values (``kind``: holm | bh) of the finite entries; NaN elsewhere."""
    if kind not in KINDS:
        raise ValueError(f"adjust_p: kind {kind!r}; allowed: {', '.join(KINDS)}")
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        # statsmodels' Holm branch calls gc.collect(), which walks every live object (~0.2 s in a
        # report holding figures and frames); frozen objects are skipped, the values are the same
        gc.freeze()
        try:
            out[ok] = multipletests(p[ok], alpha=alpha, method=KINDS[kind])[1]
        finally:
            gc.unfreeze()
    return out


def adjust(comparisons: Sequence[Comparison], kind: str = "holm") -> list[Comparison]:
    """The comparisons with ``p_adjusted`` (and the TOST p, as its own family) corrected over the
    family, and their verdicts recomputed from the adjusted values."""
    if not comparisons:
        return []
    alpha = comparisons[0].alpha
    p = adjust_p([c.p_value for c in comparisons], kind, alpha)
    pt = adjust_p([c.p_tost for c in comparisons], kind, alpha)
    return [c.adjusted(p[i], pt[i] if np.isfinite(pt[i]) else None) for i, c in enumerate(comparisons)]
