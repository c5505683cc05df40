"""Pass@k: the unbiased estimator of Chen et al. 2021 (arXiv 2107.03374) and its eval metrics.
(Intervals over prompts or seeds come from ``ablate.stats``.)

    pass@k = 1 − C(n−c, k) / C(n, k)          (n samples per prompt, c of them correct)

is the probability that a size-k subset drawn *without replacement* from the n samples holds at
least one correct answer. It is computed in the stable product form of OpenAI's human-eval,
1 − Π_{i=n−c+1..n} (1 − k/i), and is exactly 1 when n − c < k. It is *not* verl's ``best@k``
(a bootstrap *with* replacement whose expectation is 1 − (1 − c/n)^k, biased low: for n=4, c=1,
best@2 = 0.4375 where pass@2 = 0.5); see peer_semantics §1.9 / §8.8.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np

CorrectInput = Union[np.ndarray, Sequence[Sequence[float]], Sequence[np.ndarray]]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one prompt with ``n`` samples of which ``c`` are correct.

    Raises ``ValueError`` unless 0 ≤ c ≤ n and 1 ≤ k ≤ n.
    """
    n, c, k = _as_int("n", n), _as_int("c", c), _as_int("k", k)
    if n < 1:
        raise ValueError(f"pass_at_k: n must be >= 1, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c must be in [0, n={n}], got c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in [1, n={n}], got k={k} (need at least k samples)")
    if n - c < k:
        return 1.0
    # Π_{i=n−c+1..n} (1 − k/i): every factor is in [0, 1], nothing overflows.
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def k_grid(n: int) -> list[int]:
    """The k reported for n samples: 1, 2, 4, … ≤ n, plus n itself when n is not a power of two."""
    if n < 1:
        raise ValueError(f"k_grid: n must be >= 1, got {n}")
    ks = [1 << j for j in range(n.bit_length()) if (1 << j) <= n]
    if ks[-1] != n:
        ks.append(n)
    return ks


def _per_prompt_counts(correct: CorrectInput) -> tuple[np.ndarray, np.ndarray]:
    """(n_i, c_i) per prompt from a [P, n] array or a list of per-prompt 1-D arrays."""
    if isinstance(correct, np.ndarray) and correct.ndim == 2:
        rows = list(correct)
    elif hasattr(correct, "detach") and getattr(correct, "ndim", None) == 2:  # torch tensor
        rows = list(correct.detach().cpu().numpy())
    else:
        rows = [np.asarray(r.detach().cpu().numpy() if hasattr(r, "detach") else r) for r in correct]
    if not rows:
        raise ValueError("pass_at_k_metrics: no prompts (correct is empty)")
    ns, cs = [], []
    for i, r in enumerate(rows):
        r = np.asarray(r, dtype=np.float64).reshape(-1)
        if r.size == 0:
            raise ValueError(f"pass_at_k_metrics: prompt {i} has no samples")
        if not np.all((r == 0) | (r == 1)):
            raise ValueError(f"pass_at_k_metrics: prompt {i} has values other than 0/1 "
                             "(pass correctness, e.g. reward >= threshold, not raw rewards)")
        ns.append(r.size)
        cs.append(int(r.sum()))
    return np.asarray(ns, dtype=np.int64), np.asarray(cs, dtype=np.int64)


def pass_at_k_per_prompt(correct: CorrectInput, k: int) -> np.ndarray:
    """Per-prompt unbiased pass@k (float64 array of length P), e.g. for per-prompt models in ablate.stats."""
    ns, cs = _per_prompt_counts(correct)
    return np.asarray([pass_at_k(int(n), int(c), k) for n, c in zip(ns, cs)], dtype=np.float64)


def pass_at_k_metrics(correct: CorrectInput, prefix: str = "eval") -> dict[str, float]:
    """Eval metrics from per-sample correctness.

    ``correct`` is a [num_prompts, n] boolean/0-1 array, or a list of per-prompt 1-D arrays whose
    lengths may differ. Returns ``{prefix}/pass@k`` for k in :func:`k_grid` (1, 2, 4, … ≤ n, plus
    n when n is not a power of two), each the mean over prompts of the unbiased per-prompt
    pass@k, and ``{prefix}/mean@n`` (the literal n, e.g. ``eval/mean@8``): the mean over prompts
    of c_i/n_i, which equals pass@1.

    When n varies across prompts, pass@k is only defined for k ≤ n_i on every prompt, so the k
    grid (and the n written in ``mean@n``) is that of the smallest n_i; ``mean@n`` still averages
    each prompt's own c_i/n_i.
    """
    ns, cs = _per_prompt_counts(correct)
    n = int(ns.min())
    out: dict[str, float] = {}
    for k in k_grid(n):
        out[f"{prefix}/pass@{k}"] = float(np.mean([pass_at_k(int(a), int(b), k) for a, b in zip(ns, cs)]))
    out[f"{prefix}/mean@{n}"] = float(np.mean(cs / ns))
    return out


def _as_int(name: str, x: object) -> int:
    if isinstance(x, (bool, np.bool_)):
        raise ValueError(f"pass_at_k: {name} must be an integer, got {x!r}")
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, float) and math.isfinite(x) and x == int(x):
        return int(x)
    raise ValueError(f"pass_at_k: {name} must be an integer, got {x!r}")
