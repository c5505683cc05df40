"""The report's location summaries (now in ablate.stats) against known answers: IQM, probability of
improvement, and where a bootstrap interval is allowed (from 20 runs) and where it is not."""

import numpy as np
import pytest
from scipy.stats import trim_mean

from ablate.stats import MIN_BOOTSTRAP, iqm, location_ci, mean_ci, probability_of_improvement


def test_t_interval_coverage_on_normal_data():
    rng = np.random.default_rng(123)
    mu, reps, hits = 1.3, 400, 0
    for _ in range(reps):
        ci = mean_ci(rng.normal(mu, 2.0, size=3))  # 3 seeds: the t interval keeps its level
        hits += ci.lo <= mu <= ci.hi
    assert 0.92 <= hits / reps <= 0.98, hits / reps


@pytest.mark.parametrize("shape", [(5,), (7, 3), (10, 4), (3, 1), (13, 2)])
def test_iqm_equals_scipy_trim_mean_flattened(shape):
    x = np.random.default_rng(0).normal(size=shape)
    assert iqm(x) == pytest.approx(trim_mean(x.ravel(), 0.25), abs=1e-12)
    ci = location_ci(x, "iqm")
    assert ci.point == pytest.approx(trim_mean(x.ravel(), 0.25), abs=1e-12)
    assert ci.has_ci == (x.size >= MIN_BOOTSTRAP)  # BCa only from 20 runs
    if ci.has_ci:
        assert ci.lo <= ci.point <= ci.hi


def test_probability_of_improvement_known_values():
    rng = np.random.default_rng(1)
    x = rng.normal(size=400)
    assert probability_of_improvement(x, x) == pytest.approx(0.5)
    y = rng.normal(size=400)
    assert probability_of_improvement(x, y) == pytest.approx(0.5, abs=0.05)
    hi = rng.normal(10.0, 1.0, size=20)
    lo = rng.normal(0.0, 1.0, size=20)
    assert probability_of_improvement(hi, lo) == pytest.approx(1.0)
    assert probability_of_improvement(lo, hi) == pytest.approx(0.0)


def test_edge_cases_and_determinism():
    one = mean_ci([0.4])
    assert one.point == 0.4 and not one.has_ci and one.n == 1
    empty = mean_ci([np.nan])
    assert empty.n == 0 and np.isnan(empty.point)
    x = np.random.default_rng(2).normal(size=30)
    assert location_ci(x, "median", seed=7) == location_ci(x, "median", seed=7)
