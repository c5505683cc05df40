"""Report statistics against known answers (coverage, IQM, probability of improvement)."""

import numpy as np
import pytest
from scipy.stats import trim_mean

from ablate.report.stats import (
    bootstrap_ci,
    bootstrap_diff_ci,
    bootstrap_mean_of_means_ci,
    iqm,
    probability_of_improvement,
    probability_of_improvement_ci,
    stable_seed,
    stratified_bootstrap_ci,
)


def test_bootstrap_ci_coverage_on_normal_data():
    rng = np.random.default_rng(123)
    mu, reps, hits = 1.3, 200, 0
    for r in range(reps):
        x = rng.normal(mu, 2.0, size=30)
        ci = bootstrap_ci(x, n_boot=1000, seed=r)
        hits += ci.lo <= mu <= ci.hi
    coverage = hits / reps
    assert 0.90 <= coverage <= 0.99, coverage


@pytest.mark.parametrize("shape", [(5,), (7, 3), (10, 4), (3, 1), (13, 2)])
def test_iqm_equals_scipy_trim_mean_flattened(shape):
    x = np.random.default_rng(0).normal(size=shape)
    assert iqm(x) == pytest.approx(trim_mean(x.ravel(), 0.25), abs=1e-12)
    ci = stratified_bootstrap_ci(x.reshape(shape[0], -1), "iqm", seed=1)
    assert ci.point == pytest.approx(trim_mean(x.ravel(), 0.25), abs=1e-12)
    if shape[0] >= 2:
        assert ci.lo <= ci.point + 1e-12 and ci.point - 1e-12 <= ci.hi


def test_stratified_bootstrap_resamples_within_tasks():
    # two tasks with very different scales: resampling within tasks keeps one run of each scale
    runs = np.array([[0.0, 100.0], [0.1, 100.1], [0.2, 100.2]])
    ci = stratified_bootstrap_ci(runs, "mean", n_boot=500, seed=0)
    assert 50.0 <= ci.lo <= ci.hi <= 50.3


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
    ci = probability_of_improvement_ci(hi, lo, seed=0)
    assert ci.point == pytest.approx(1.0) and ci.excludes(0.5)
    same = probability_of_improvement_ci(x[:30], y[:30], seed=0)
    assert same.lo < 0.5 < same.hi


def test_probability_of_improvement_averages_over_tasks():
    # task 0: x always better; task 1: x always worse -> 0.5
    x = [np.array([1.0, 1.1]), np.array([0.0, 0.1])]
    y = [np.array([0.0, 0.1]), np.array([1.0, 1.1])]
    assert probability_of_improvement(x, y) == pytest.approx(0.5)


def test_diff_ci_and_small_samples():
    rng = np.random.default_rng(2)
    a, b = rng.normal(1.0, 0.1, 10), rng.normal(0.0, 0.1, 10)
    assert bootstrap_diff_ci(a, b, seed=0).excludes(0.0)
    assert not bootstrap_diff_ci(a, a + 1e-3 * rng.normal(size=10), seed=0).excludes(0.0)
    one = bootstrap_ci([0.4])
    assert one.point == 0.4 and not one.has_ci and one.n == 1
    empty = bootstrap_ci([np.nan])
    assert empty.n == 0 and np.isnan(empty.point)
    assert not bootstrap_diff_ci([1.0], [0.0, 0.1]).has_ci


def test_mean_of_means_weights_strata_equally():
    strata = [np.array([1.0, 1.0, 1.0, 1.0]), np.array([0.0])]
    ci = bootstrap_mean_of_means_ci(strata, seed=0)
    assert ci.point == pytest.approx(0.5)
    assert ci.lo == pytest.approx(0.5) and ci.hi == pytest.approx(0.5)


def test_deterministic_given_seed():
    x = np.random.default_rng(3).normal(size=12)
    assert bootstrap_ci(x, seed=7) == bootstrap_ci(x, seed=7)
    assert stable_seed("a", 1) == stable_seed("a", 1) != stable_seed("a", 2)
