"""ablate.stats.prompts: pass@k between arms from per-prompt counts with seeds as the replication
unit; calibrated on simulated null data; variance decomposition; agreement with scipy/statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from ablate.metrics.passk import pass_at_k
from ablate.stats.prompts import (
    compare_prompts,
    eval_sampling_var,
    mean_squares,
    pass_at_k_array,
    variance_decomposition,
)


def simulate(rng, S, P, n=8, delta=0.0, seed_sd=0.3, run_sd=0.1, prompt_sd=1.0, arm_prompt_sd=0.0,
             cell_sd=0.2):
    """Two arms sharing S seeds (shared seed effect) on P fixed prompts, logit scale; returns the
    arms as {seed: [{"prompt_id", "n", "c"}]} (the run store's per-prompt rows)."""
    b = rng.normal(0, prompt_sd, P)
    u = rng.normal(0, seed_sd, S)
    arms = []
    for a in range(2):
        w = rng.normal(0, arm_prompt_sd, P) if arm_prompt_sd else 0.0
        v = rng.normal(0, run_sd, S)
        logit = (delta if a == 0 else 0.0) + b[None] + w + (u + v)[:, None] + rng.normal(0, cell_sd, (S, P))
        c = rng.binomial(n, 1 / (1 + np.exp(-logit)))
        arms.append({s: [{"prompt_id": f"p{j}", "n": n, "c": int(c[s, j])} for j in range(P)]
                     for s in range(S)})
    return arms


def _rate(S, P, sims, seed, prompts="fixed", **kw):
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(sims):
        a, b = simulate(rng, S, P, **kw)
        r = compare_prompts(a, b, prompts=prompts)
        hits += r.low > 0 or r.high < 0
    return hits / sims


@pytest.mark.parametrize("S,P", [(3, 16), (5, 64), (10, 32)])
def test_null_false_positive_rate_is_nominal(S, P):
    """No arm effect: the 95% interval excludes 0 at most ~5% of the time (≤ 0.06 + 2 MC SE)."""
    sims = 1200
    fpr = _rate(S, P, sims, seed=100 + S)
    assert fpr <= 0.06 + 2 * math.sqrt(0.05 * 0.95 / sims), fpr


def test_random_prompts_mode_is_calibrated_when_arms_differ_prompt_by_prompt():
    """An arm × prompt interaction with mean 0 over the prompt population: the fixed-prompt test
    answers a different question (this eval set) and rejects often; prompts='random' stays
    calibrated."""
    sims = 800
    fixed = _rate(5, 32, sims, seed=7, arm_prompt_sd=0.8)
    rand = _rate(5, 32, sims, seed=7, prompts="random", arm_prompt_sd=0.8)
    assert rand <= 0.06 + 2 * math.sqrt(0.05 * 0.95 / sims), rand
    assert fixed > rand + 0.1, (fixed, rand)


def test_power_against_a_real_effect():
    """0.3 logit at 10 seeds × 64 prompts (the pairing removes the shared seed effect)."""
    power = _rate(10, 64, 300, seed=3, delta=0.3)
    assert power > 0.8, power


def test_paired_fixed_equals_scipy_ttest_rel_on_per_seed_means():
    a, b = simulate(np.random.default_rng(0), 6, 20, delta=0.2)
    r = compare_prompts(a, b, k=2)
    ma = np.array([np.mean([pass_at_k(x["n"], x["c"], 2) for x in a[s]]) for s in range(6)])
    mb = np.array([np.mean([pass_at_k(x["n"], x["c"], 2) for x in b[s]]) for s in range(6)])
    t = sps.ttest_rel(ma, mb)
    assert r.p_value == pytest.approx(t.pvalue, rel=1e-9)
    ci = t.confidence_interval(0.95)
    assert (r.low, r.high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    w = compare_prompts(a, b, k=2, paired=False)
    tw = sps.ttest_ind(ma, mb, equal_var=False)
    assert w.p_value == pytest.approx(tw.pvalue, rel=1e-9)


def test_mean_squares_agree_with_statsmodels_anova():
    import pandas as pd
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    rng = np.random.default_rng(1)
    d = rng.normal(size=(4, 7)) + rng.normal(size=(4, 1))
    ms = mean_squares(d)
    df = pd.DataFrame([(s, p, d[s, p]) for s in range(4) for p in range(7)], columns=["s", "p", "y"])
    tab = anova_lm(smf.ols("y ~ C(s) + C(p)", df).fit())
    assert ms.seed == pytest.approx(tab.loc["C(s)", "mean_sq"])
    assert ms.prompt == pytest.approx(tab.loc["C(p)", "mean_sq"])
    assert ms.resid == pytest.approx(tab.loc["Residual", "mean_sq"])


def test_pass_at_k_array_and_jackknife_match_direct_computation():
    for n in (3, 5, 8):
        for c in range(n + 1):
            for k in range(1, n):
                assert pass_at_k_array(np.array([n]), np.array([c]), k)[0] == pytest.approx(pass_at_k(n, c, k))
                x = np.array([1] * c + [0] * (n - c))  # jackknife over the n samples, by brute force
                loo = np.array([pass_at_k(n - 1, int(x.sum() - x[i]), k) for i in range(n)])
                direct = (n - 1) / n * float(((loo - loo.mean()) ** 2).sum())
                assert eval_sampling_var(np.array([n]), np.array([c]), k)[0] == pytest.approx(direct, abs=1e-12)
            if n > 1:  # k = 1: the unbiased binomial variance c(n−c)/(n²(n−1))
                assert eval_sampling_var(np.array([n]), np.array([c]), 1)[0] == pytest.approx(
                    c * (n - c) / (n * n * (n - 1)))


def test_variance_decomposition_tells_seeds_from_eval_samples():
    """Only eval sampling (no seed effects): the eval share is ~1 and the seed part ~0; large seed
    effects with many samples: the seed part dominates."""
    rng = np.random.default_rng(5)
    a, b = simulate(rng, 40, 32, n=4, seed_sd=0.0, run_sd=0.0, cell_sd=0.0)
    dec = variance_decomposition(a, b)
    assert dec.eval_share > 0.75 and "eval samples" in dec.advice()
    assert dec.projected_se(40, math.inf) < 0.5 * dec.projected_se(40)
    a, b = simulate(rng, 40, 32, n=64, seed_sd=0.3, run_sd=0.5)
    dec = variance_decomposition(a, b)
    assert dec.eval_share < 0.25 and "buy seeds;" in dec.advice()
    one = variance_decomposition(a, k=4)
    assert one.metric == "pass@4" and one.seed_var > 0 and one.n_seeds == 40


def test_misaligned_runs_keep_common_prompts_and_seeds_and_bad_input_raises():
    a, b = simulate(np.random.default_rng(2), 4, 10)
    a[9] = a[0]  # a seed only arm a has
    b[1] = b[1][:-2]  # two prompts missing in one run
    r = compare_prompts(a, b)
    assert r.n_seeds == 4 and r.n_prompts == 8 and r.dropped == {"prompts": 2, "seeds": 1}
    with pytest.raises(ValueError, match="allowed: fixed, random"):
        compare_prompts(a, b, prompts="both")
    with pytest.raises(ValueError, match="share no seed"):
        compare_prompts({0: a[0]}, {1: b[1]})
    with pytest.raises(ValueError, match="needs at least 9 samples"):
        compare_prompts(a, b, k=9)


def test_cli_reads_run_dirs(tmp_path, capsys):
    import yaml

    from ablate.stats.prompts import main
    from ablate.tracking.run_store import RunStore

    a, b = simulate(np.random.default_rng(4), 3, 12, delta=0.5)
    dirs = {"a": [], "b": []}
    for name, arm in (("a", a), ("b", b)):
        for s, rows in arm.items():
            rd = tmp_path / f"{name}{s}"
            st = RunStore(rd)
            st.write_config({"seed": s})
            st.log_eval_prompts([r["prompt_id"] for r in rows], [0 * r["n"] + 8 for r in rows],
                                [0 for _ in rows], step=0)  # an earlier eval step, ignored
            st.log_eval_prompts([r["prompt_id"] for r in rows], [r["n"] for r in rows],
                                [r["c"] for r in rows], step=5)
            st.close()
            dirs[name].append(str(rd))
    assert main(["--a", *dirs["a"], "--b", *dirs["b"]]) == 0
    out = capsys.readouterr().out
    expect = compare_prompts(a, b)
    assert f"{expect.estimate:+.4f}" in out and "3 seeds, 12 prompts" in out
    assert main(["--a", *dirs["a"], "--b", *dirs["b"], "--step", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: eval step 3") and "\n" not in err
    assert yaml.safe_load((tmp_path / "a0" / "config.yaml").read_text())["seed"] == 0


def test_shared_eval_streams_do_not_inflate_the_projected_se():
    """Arms whose eval samples share random numbers (ablate's arms of one seed do) and barely
    differ: the difference's eval noise cancels. The decomposition must not project the
    independent-sampling SE: at the current sizes it equals the comparison's SE."""
    rng = np.random.default_rng(8)
    S, P, n = 4, 24, 8
    p = 1 / (1 + np.exp(-rng.normal(0, 1, (S, P))))
    u = rng.random((S, P, n))  # the shared stream
    arms = [{s: [{"prompt_id": f"p{j}", "n": n, "c": int((u[s, j] < p[s, j] + 0.01 * a).sum())}
                 for j in range(P)] for s in range(S)} for a in range(2)]
    res = compare_prompts(*arms)
    dec = res.variance
    assert dec.eval_var > dec.observed_var  # independent sampling would claim much more noise
    assert dec.projected_se(S) == pytest.approx(res.se, rel=1e-9)
    assert dec.eval_share == pytest.approx(1.0) and "at most" in dec.advice()
