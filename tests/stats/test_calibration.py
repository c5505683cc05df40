"""Calibration of ablate.stats at the sizes ablate runs (issue 16, item 7): false-positive rate and
coverage of compare()'s intervals on null data, the null factorial report, sequential stopping.

Simulations run the vectorised cores that compare() itself calls (test_compare checks that they
agree with compare and scipy); 20 000 data sets per cell give a Monte Carlo s.e. of 0.0015 on a
rate of 0.05, so "≤ 0.06" holds with > 6 s.e. of room when the true rate is 0.05.
"""

import zlib

import numpy as np
import pytest

from ablate.stats import CellModel, SequentialPlan, adjust_p, compare
from ablate.stats.compare import paired_t, t_interval, welch_t
from ablate.stats.linear import factor_rows, interaction_rows
from ablate.stats.sequential import simulate
from bench.calibration import DISTS, draw  # one null-data generator for the bench and the test

REPS = 20_000


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("dist", DISTS)
def test_unpaired_false_positive_rate_and_coverage(dist, n):
    rng = np.random.default_rng(zlib.crc32(f"{dist}{n}".encode()))
    a, b = draw(rng, dist, (REPS, n), 0), draw(rng, dist, (REPS, n), 1)
    r = welch_t(a, b)
    fpr = float((r["p"] < 0.05).mean())
    shift = 0.7  # a true difference: coverage of the interval
    lo, hi = t_interval(r["estimate"] + shift, r["se"], r["df"])
    cover = float(((lo <= shift) & (shift <= hi)).mean())
    assert fpr <= 0.06, (dist, n, fpr)
    assert cover >= 0.93, (dist, n, cover)


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("dist", DISTS)
def test_paired_false_positive_rate_and_coverage(dist, n):
    # a shared seed effect (same warm start) plus run noise; no arm difference
    rng = np.random.default_rng(1 + zlib.crc32(f"{dist}{n}".encode()))
    seed_effect = rng.normal(0, 2, (REPS, n))
    a = seed_effect + draw(rng, dist, (REPS, n), 0)
    b = seed_effect + draw(rng, dist, (REPS, n), 1)
    r = paired_t(a - b)
    fpr = float((r["p"] < 0.05).mean())
    lo, hi = t_interval(r["estimate"], r["se"], r["df"])
    cover = float(((lo <= 0) & (0 <= hi)).mean())
    assert fpr <= 0.06, (dist, n, fpr)
    assert cover >= 0.93, (dist, n, cover)


def test_null_factorial_report_declares_few_effects_after_correction():
    """2^4 slot sweep × 3 seeds with no effect anywhere: main effects and two-way interactions
    from the cell-means model, BH over the table; on average ≤ 0.1 declared effects per report."""
    rng = np.random.default_rng(7)
    import itertools

    cells = list(itertools.product([0, 1], repeat=4))
    declared = []
    for _ in range(60):
        y, cs, ss = [], [], []
        seed_eff = rng.normal(0, 1, 3)
        for c in cells:
            for s in range(3):
                y.append(seed_eff[s] + rng.normal())
                cs.append(c)
                ss.append(s)
        m = CellModel(y, cs, ss)
        ps = []
        for f in range(4):
            ps.append(m.f_test(factor_rows({c: c[f] for c in cells}, [0, 1]))[1])
        for f, g in itertools.combinations(range(4), 2):
            rows = interaction_rows({c: c[f] for c in cells}, {c: c[g] for c in cells}, [0, 1], [0, 1])
            ps.append(m.f_test(rows)[1])
        declared.append(int((adjust_p(ps, "bh") < 0.05).sum()))
    assert np.mean(declared) <= 0.1, declared


def test_aa_claim_is_never_reproduced_or_contradicted():
    # identical arms, different labels: the per-seed values coincide (same seed, same config)
    rng = np.random.default_rng(3)
    for _ in range(50):
        x = rng.normal(size=5)
        c = compare(x, x.copy(), paired=True, expect="higher", effect=0.5)
        assert c.verdict not in ("reproduced", "contradicted"), c


@pytest.mark.parametrize("n_min,n_max,batch", [(3, 12, 1), (3, 20, 3)])
def test_sequential_stopping_keeps_its_error_rate(n_min, n_max, batch):
    plan = SequentialPlan(n_min, n_max, batch)
    null = simulate(plan, 0.0, reps=REPS, stop_within=0.8, seed=5)
    assert null["reject"] <= 0.06, null
    naive = SequentialPlan(n_min, n_max, batch)
    # the same looks at the unadjusted level 0.05 each: optional stopping inflates the error rate
    rng = np.random.default_rng(5)
    d = rng.normal(0, 1, (REPS, n_max))
    hit = np.zeros(REPS, bool)
    for n in naive.ns:
        hit |= paired_t(d[:, :n])["p"] < 0.05
    assert hit.mean() > 0.08
