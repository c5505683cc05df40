"""Metrics: unbiased pass@k (vs enumeration and peer numbers), entropy, gradient variance meter."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from ablate.metrics import (
    GradVarianceMeter,
    k_grid,
    pass_at_k,
    pass_at_k_metrics,
    pass_at_k_per_prompt,
    token_entropy_mean,
    token_entropy_sum_count,
)

# ----------------------------------------------------------------------------------------- pass@k


def test_pass_at_k_reference_values_peer_semantics_8_8():
    # peer_semantics §8.8 / upge_catalog (e): n=4, c=1
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25, abs=1e-15)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5, abs=1e-15)
    assert pass_at_k(4, 1, 4) == 1.0
    # check values: pass@1 = c/n, pass@k = 0 if c = 0, 1 if c > n − k
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 6, 5) == 1.0


def _brute_force_pass_at_k(n: int, c: int, k: int) -> Fraction:
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(1 for s in subsets if any(samples[i] for i in s))
    return Fraction(hits, len(subsets))


def test_pass_at_k_equals_subset_enumeration_for_small_n():
    for n in range(1, 9):
        for c in range(0, n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(float(_brute_force_pass_at_k(n, c, k)),
                                                           abs=1e-12), (n, c, k)


def test_pass_at_k_differs_from_verl_biased_best_at_k():
    """verl's best@k is a bootstrap *with replacement*: E = 1 − (1 − c/n)^k (peer_semantics §1.9).
    Enumerate all ordered draws with replacement to get that expectation exactly, and show pass@k
    (without replacement) is a different, larger number for k ≥ 2."""
    n, c = 4, 1
    samples = [1] * c + [0] * (n - c)
    for k, best_expected in [(1, 0.25), (2, 0.4375), (4, 0.68359375)]:
        draws = list(itertools.product(range(n), repeat=k))
        best = sum(any(samples[i] for i in d) for d in draws) / len(draws)
        assert best == pytest.approx(best_expected, abs=1e-12)
        assert best == pytest.approx(1 - (1 - c / n) ** k, abs=1e-12)
        if k == 1:
            assert pass_at_k(n, c, k) == pytest.approx(best)
        else:
            assert pass_at_k(n, c, k) > best + 0.05
    assert pass_at_k(4, 1, 2) == 0.5 and pass_at_k(4, 1, 4) == 1.0


def test_pass_at_k_stable_for_large_n_matches_exact_combinatorics():
    for n, c, k in [(2048, 3, 1024), (2048, 100, 16), (1000, 1, 999), (512, 511, 1)]:
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        got = pass_at_k(n, c, k)
        assert 0.0 <= got <= 1.0
        assert got == pytest.approx(float(exact), rel=1e-10, abs=1e-12)


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(4, 1, 5)  # k > n
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(4, 1, 0)
    with pytest.raises(ValueError, match="c must be"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="c must be"):
        pass_at_k(4, -1, 1)
    with pytest.raises(ValueError, match="integer"):
        pass_at_k(4, 1.5, 1)


def test_k_grid_powers_of_two_plus_n():
    assert k_grid(1) == [1]
    assert k_grid(8) == [1, 2, 4, 8]
    assert k_grid(6) == [1, 2, 4, 6]
    assert k_grid(16) == [1, 2, 4, 8, 16]
    assert k_grid(3) == [1, 2, 3]


def test_pass_at_k_metrics_key_names_and_values():
    rng = np.random.default_rng(0)
    correct = rng.random((5, 8)) < 0.3
    m = pass_at_k_metrics(correct)
    assert list(m) == ["eval/pass@1", "eval/pass@2", "eval/pass@4", "eval/pass@8", "eval/mean@8"]
    cs = correct.sum(1)
    for k in (1, 2, 4, 8):
        assert m[f"eval/pass@{k}"] == pytest.approx(np.mean([pass_at_k(8, int(c), k) for c in cs]))
    assert m["eval/mean@8"] == pytest.approx(correct.mean())
    assert m["eval/mean@8"] == pytest.approx(m["eval/pass@1"])
    # monotone in k
    vals = [m[f"eval/pass@{k}"] for k in (1, 2, 4, 8)]
    assert vals == sorted(vals)
    # n not a power of two: n itself is reported
    m6 = pass_at_k_metrics(np.ones((2, 6), dtype=bool))
    assert list(m6) == ["eval/pass@1", "eval/pass@2", "eval/pass@4", "eval/pass@6", "eval/mean@6"]
    # torch input and 0/1 floats
    mt = pass_at_k_metrics(torch.tensor(correct, dtype=torch.float32))
    assert mt == pytest.approx(m)


def test_pass_at_k_metrics_reference_prompt_and_varying_n():
    m = pass_at_k_metrics(np.array([[1, 0, 0, 0]]))
    assert m == {"eval/pass@1": 0.25, "eval/pass@2": 0.5, "eval/pass@4": 1.0, "eval/mean@4": 0.25}
    # list of prompts with different n: k grid of the smallest n; mean uses each prompt's own n
    rows = [np.array([1, 0, 0, 0]), np.array([1, 1, 0, 0, 0, 0, 0, 0])]
    mv = pass_at_k_metrics(rows)
    assert list(mv) == ["eval/pass@1", "eval/pass@2", "eval/pass@4", "eval/mean@4"]
    assert mv["eval/pass@2"] == pytest.approx((0.5 + pass_at_k(8, 2, 2)) / 2)
    assert mv["eval/mean@4"] == pytest.approx((0.25 + 0.25) / 2)
    assert pass_at_k_per_prompt(rows, 2) == pytest.approx([0.5, pass_at_k(8, 2, 2)])


def test_pass_at_k_metrics_rejects_raw_rewards_and_empty():
    with pytest.raises(ValueError, match="0/1"):
        pass_at_k_metrics(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="no prompts"):
        pass_at_k_metrics([])


def test_entropy_mean_ignores_padding():
    ent = torch.tensor([[1.0, 2.0, 99.0, float("nan")],
                        [3.0, 4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    got = token_entropy_mean(ent, mask)
    assert got.dtype == torch.float32 and got.ndim == 0
    assert float(got) == pytest.approx((1 + 2 + 3 + 4 + 5 + 6) / 6)
    s, n = token_entropy_sum_count(ent, mask.bool())
    assert float(s) == pytest.approx(21.0) and float(n) == 6.0
    assert math.isnan(float(token_entropy_mean(ent, torch.zeros_like(mask))))


def test_entropy_is_token_mean_not_verl_loss_agg_mode():
    """verl's actor/entropy inherits loss_agg_mode; ours is the token mean whatever the aggregation:
    response A has 1 token of entropy 4, response B has 3 tokens of entropy 0."""
    ent = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    ours = float(token_entropy_mean(ent, mask))
    assert ours == pytest.approx(1.0)
    seq_mean_token_mean = float(((ent * mask).sum(1) / mask.sum(1)).mean())  # verl with that mode
    seq_mean_token_sum = float((ent * mask).sum(1).mean())
    assert seq_mean_token_mean == pytest.approx(2.0) and seq_mean_token_sum == pytest.approx(2.0)
    assert ours != pytest.approx(seq_mean_token_mean)


# ----------------------------------------------------------------------------------------- grad var


class _TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(3, 4)
        self.head_a = torch.nn.Linear(4, 1)
        self.head_b = torch.nn.Linear(4, 1)
        self.frozen = torch.nn.Linear(2, 2).requires_grad_(False)

    def forward(self, x, use_b: bool):
        h = torch.tanh(self.body(x))
        out = self.head_a(h).squeeze(-1)
        return out + self.head_b(h).squeeze(-1) if use_b else out


def _flat_grad(params):
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).double()
                      for p in params])


def test_grad_meter_contributions_sum_to_accumulated_grad_and_match_autograd():
    torch.manual_seed(0)
    model = _TwoHeads()
    params = [p for p in model.parameters() if p.requires_grad]
    meter = GradVarianceMeter(model.parameters(), record_contributions=True)
    assert len(meter.params) == len(params)  # the frozen layer is ignored
    x, y = torch.randn(10, 3), torch.randn(10)
    chunks = [slice(0, 5), slice(5, 8), slice(8, 10)]  # unequal sizes
    use_b = [False, True, True]  # head_b's grad first appears in microbatch 2
    N = 10
    expected = []
    for sl, ub in zip(chunks, use_b):
        loss = ((model(x[sl], ub) - y[sl]) ** 2).sum() / N
        gs = torch.autograd.grad(loss, params, allow_unused=True)
        expected.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                                   for g, p in zip(gs, params)]))
    model.zero_grad(set_to_none=True)
    meter.start()
    for sl, ub in zip(chunks, use_b):
        (((model(x[sl], ub) - y[sl]) ** 2).sum() / N).backward()
        meter.after_backward()
    assert len(meter.contributions) == 3
    for got, exp in zip(meter.contributions, expected):
        torch.testing.assert_close(got, exp, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sum(meter.contributions), _flat_grad(params), rtol=1e-5, atol=1e-6)
    grad_before = _flat_grad(params).clone()
    out = meter.finish()
    torch.testing.assert_close(_flat_grad(params), grad_before)  # .grad untouched
    # equal-weight estimator, computed directly from the independent per-microbatch gradients
    K = 3
    g_hat = sum(expected)
    direct = sum(float(((K * g - g_hat) ** 2).sum()) for g in expected) / (K - 1)
    assert out["train/grad_var"] == pytest.approx(direct, rel=1e-5)
    total_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm=1e9))
    assert out["train/grad_norm"] == pytest.approx(total_norm, rel=1e-6)
    assert out["train/grad_snr"] == pytest.approx(out["train/grad_norm"] ** 2 / (direct / K), rel=1e-5)


def test_grad_meter_weighted_formula_matches_definition():
    torch.manual_seed(1)
    lin = torch.nn.Linear(5, 1)
    x, y = torch.randn(9, 5), torch.randn(9)
    sizes = [2, 3, 4]
    meter = GradVarianceMeter(lin.parameters(), record_contributions=True)
    lin.zero_grad()
    meter.start()
    s = 0
    for n in sizes:
        (((lin(x[s:s + n]).squeeze(-1) - y[s:s + n]) ** 2).sum() / 9).backward()
        meter.after_backward(weight=n)  # raw counts; normalised by the meter
        s += n
    out = meter.finish()
    w = [n / 9 for n in sizes]
    g = meter.contributions
    g_hat = sum(g)
    direct = 3 / 2 * sum(wk * float(((gk / wk - g_hat) ** 2).sum()) for wk, gk in zip(w, g))
    assert out["train/grad_var"] == pytest.approx(direct, rel=1e-6)


def _linreg_meter_estimates(rng: np.random.Generator, w_star, d, sigma, sizes, reps, weighted):
    D = w_star.shape[0]
    N = sum(sizes)
    lin = torch.nn.Linear(D, 1, bias=False, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w_star + d)[None])
    meter = GradVarianceMeter(lin.parameters())
    est = []
    for _ in range(reps):
        X = torch.from_numpy(rng.standard_normal((N, D)))
        y = X @ torch.from_numpy(w_star) + sigma * torch.from_numpy(rng.standard_normal(N))
        lin.zero_grad(set_to_none=True)
        meter.start()
        s = 0
        for n in sizes:
            loss = 0.5 * ((lin(X[s:s + n]).squeeze(-1) - y[s:s + n]) ** 2).sum() / N
            loss.backward()
            meter.after_backward(weight=n if weighted else None)
            s += n
        est.append(meter.finish()["train/grad_var"])
    return np.asarray(est)


def _empirical_per_sample_cov_trace(rng, w_star, d, sigma, draws=200_000):
    """tr Cov of per-sample gradients g = (x·w − y) x, from many independent draws."""
    D = w_star.shape[0]
    X = rng.standard_normal((draws, D))
    eps = sigma * rng.standard_normal(draws)
    G = ((X @ d) - eps)[:, None] * X
    return float(np.trace(np.cov(G, rowvar=False)))


def test_grad_var_unbiased_on_linear_regression_with_known_covariance():
    """Loss ½(x·w − y)², x ~ N(0, I_D), y = x·w* + N(0, σ²): the per-sample gradient (x·d − ε)x,
    d = w − w*, has tr Cov = (D+1)‖d‖² + σ²D. A microbatch of m samples has tr Cov/m; grad_var
    averaged over many minibatches must match it (and the empirical per-sample covariance)."""
    rng = np.random.default_rng(0)
    D, sigma = 4, 0.7
    w_star = rng.standard_normal(D)
    d = np.array([0.5, -0.3, 0.2, 0.1])
    analytic = (D + 1) * float(d @ d) + sigma ** 2 * D
    empirical = _empirical_per_sample_cov_trace(rng, w_star, d, sigma)
    assert empirical == pytest.approx(analytic, rel=0.03)  # the reference itself is right
    K, m = 4, 4
    est = _linreg_meter_estimates(rng, w_star, d, sigma, [m] * K, reps=400, weighted=False)
    target = empirical / m
    se = est.std(ddof=1) / math.sqrt(len(est))
    assert abs(est.mean() - target) < 4 * se + 0.01 * target, (est.mean(), target, se)
    # the tolerance has power: the biased 1/K normalisation (25% low for K=4) is rejected
    biased = est * (K - 1) / K
    assert abs(biased.mean() - target) > 4 * se + 0.01 * target
    # and so is a per-sample (rather than per-microbatch) reading of grad_var
    assert abs(est.mean() - empirical) > 4 * se + 0.01 * empirical


def test_grad_var_weights_remove_unequal_microbatch_bias():
    """Chunks of 6 and 2 samples: with weight= the estimate is unbiased for tr Σ·K/N; without it,
    it is biased up by ‖μ‖²·Σ_k(K·w_k − 1)²/(K−1) as documented in gradvar.py."""
    rng = np.random.default_rng(1)
    D, sigma = 4, 0.5
    w_star = rng.standard_normal(D)
    d = np.full(D, 1.0)
    mu2 = float(d @ d)
    tr_sigma = (D + 1) * mu2 + sigma ** 2 * D
    sizes, N, K = [6, 2], 8, 2
    target = tr_sigma * K / N
    wk = np.array(sizes) / N
    bias = mu2 * float(((K * wk - 1) ** 2).sum()) / (K - 1)
    weighted = _linreg_meter_estimates(rng, w_star, d, sigma, sizes, reps=1000, weighted=True)
    plain = _linreg_meter_estimates(rng, w_star, d, sigma, sizes, reps=1000, weighted=False)
    se_w = weighted.std(ddof=1) / math.sqrt(len(weighted))
    se_p = plain.std(ddof=1) / math.sqrt(len(plain))
    assert abs(weighted.mean() - target) < 4 * se_w, (weighted.mean(), target, se_w)
    assert abs(plain.mean() - (target + bias)) < 4 * se_p, (plain.mean(), target + bias, se_p)
    assert abs(plain.mean() - target) > 4 * se_p


def test_grad_meter_single_microbatch_gives_none_not_nan():
    lin = torch.nn.Linear(3, 2)
    meter = GradVarianceMeter(lin.parameters())
    lin.zero_grad()
    meter.start()
    lin(torch.randn(4, 3)).pow(2).sum().backward()
    meter.after_backward()
    out = meter.finish()
    assert out["train/grad_var"] is None and out["train/grad_snr"] is None
    expected = math.sqrt(sum(float((p.grad ** 2).sum()) for p in lin.parameters()))
    assert out["train/grad_norm"] == pytest.approx(expected, rel=1e-6)
    # identical microbatches: zero variance, infinite SNR (never NaN)
    lin.zero_grad()
    meter.start()
    x = torch.randn(4, 3)
    for _ in range(2):
        lin(x).pow(2).sum().backward()
        meter.after_backward()
    out = meter.finish()
    assert out["train/grad_var"] == pytest.approx(0.0, abs=1e-9)
    assert out["train/grad_snr"] > 1e6


def test_grad_meter_protocol_errors_and_reuse():
    lin = torch.nn.Linear(2, 1)
    meter = GradVarianceMeter(lin.parameters())
    with pytest.raises(RuntimeError, match="before start"):
        meter.after_backward()
    meter.start()
    with pytest.raises(RuntimeError, match="no after_backward"):
        meter.finish()
    with pytest.raises(ValueError, match="no parameters"):
        GradVarianceMeter([torch.nn.Parameter(torch.ones(2), requires_grad=False)])
    # weights for some microbatches but not others
    meter.start()
    lin(torch.ones(1, 2)).sum().backward()
    meter.after_backward(weight=1.0)
    lin(torch.ones(1, 2)).sum().backward()
    meter.after_backward()
    with pytest.raises(ValueError, match="every microbatch"):
        meter.finish()
    # the meter is reusable step after step, buffers kept
    for _ in range(2):
        lin.zero_grad()
        meter.start()
        for _ in range(2):
            lin(torch.randn(3, 2)).sum().backward()
            meter.after_backward()
        assert meter.finish()["train/grad_var"] is not None


def test_grad_meter_bf16_params():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 4).to(torch.bfloat16)
    meter = GradVarianceMeter(lin.parameters(), record_contributions=True)
    lin.zero_grad()
    meter.start()
    for _ in range(3):
        lin(torch.randn(5, 8, dtype=torch.bfloat16)).float().pow(2).mean().backward()
        meter.after_backward()
    total = sum(meter.contributions)
    torch.testing.assert_close(total, _flat_grad(list(lin.parameters())), rtol=2e-2, atol=1e-2)
    out = meter.finish()
    assert out["train/grad_var"] is not None and math.isfinite(out["train/grad_var"])


# ------------------------------------------------- grad_var with whole-group units (GRPO-style)
_GV_A, _GV_D = 4, 3


def _gv_draw(rng, W, V, P, G):
    """P prompts x ~ N(0, I), G actions each from softmax(W x), reward 1 for argmax(V x), group
    z-score advantages: a prompt's G responses are coupled through their shared x and advantage."""
    X = rng.standard_normal((P, _GV_D))
    logits = X @ W.T
    pi = np.exp(logits - logits.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    a = np.stack([rng.choice(_GV_A, size=G, p=pi[j]) for j in range(P)])
    r = (a == (X @ V.T).argmax(1)[:, None]).astype(float)
    adv = (r - r.mean(1, keepdims=True)) / (r.std(1, ddof=1, keepdims=True) + 1e-6)
    return X, a, adv, pi


def _gv_direct_grad(X, a, adv, pi):
    """The minibatch gradient of −Σ A·log π(a|x)/N in closed form: −Σ A (e_a − π) xᵀ / N."""
    P, G = a.shape
    coef = -(adv[..., None] * (np.eye(_GV_A)[a] - pi[:, None, :])).sum(1) / (P * G)
    return (coef.T @ X).ravel()


def _gv_meter(W, V, P, G, k, draws, seed, layout):
    """grad_var / (units) per draw through the meter and the trainer's microbatch choice."""
    from ablate.upge.partition import group_units, partition

    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(_GV_D, _GV_A, bias=False, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
    meter, out, N = GradVarianceMeter(lin.parameters()), [], P * G
    for i in range(draws):
        X, a, adv, pi = _gv_draw(rng, W, V, P, G)
        xs, acts = torch.from_numpy(np.repeat(X, G, 0)), torch.from_numpy(a.reshape(-1))
        ad = torch.from_numpy(adv.reshape(-1))
        perm = torch.randperm(N, generator=gen)  # the minibatch's shuffled rows, as in the trainer
        chunks = ([(perm[c], cl) for c, cl in group_units(torch.arange(P).repeat_interleave(G)[perm], k)]
                  if layout == "units" else [(c, True) for c in partition(N, k, gen)])
        lin.zero_grad(set_to_none=True)
        meter.start()
        units = 0
        for rows, closes in chunks:
            lp = torch.log_softmax(lin(xs[rows]), -1).gather(1, acts[rows, None]).squeeze(1)
            (-(ad[rows] * lp).sum() / N).backward()
            if closes:
                meter.after_backward()
                units += 1
        if i == 0:  # autograd through the chunks = the closed form
            np.testing.assert_allclose(lin.weight.grad.numpy().ravel(), _gv_direct_grad(X, a, adv, pi),
                                       rtol=1e-10, atol=1e-12)
        out.append(meter.finish()["train/grad_var"] / units)
    return np.asarray(out)


@pytest.mark.parametrize("P,G,k", [(8, 4, 4), (3, 8, 4)])
def test_grad_var_with_whole_group_units_is_unbiased_for_grpo_style_batches(P, G, k):
    """grad_var/K (K = whole-group units) estimates tr Cov(ĝ) of the minibatch gradient, checked
    against the covariance of the closed-form gradient over many independent batches. The
    scattered layout (random row chunks: a prompt's group split over microbatches) is biased,
    so the tolerance has power. (8 prompts ≥ k: whole-group chunks; 3 < k: split groups, units
    closed at group ends.)"""
    rng = np.random.default_rng(0)
    W, V = rng.standard_normal((_GV_A, _GV_D)) * 0.8, rng.standard_normal((_GV_A, _GV_D))
    ref_rng = np.random.default_rng(1)
    gs = np.stack([_gv_direct_grad(*_gv_draw(ref_rng, W, V, P, G)) for _ in range(20_000)])
    ref = float(np.trace(np.cov(gs, rowvar=False)))
    ref_se = ref * math.sqrt(2.0 / len(gs))  # ≥ the SE of a trace of a sample covariance
    units = _gv_meter(W, V, P, G, k, 1000, 2, "units")
    tol = 4 * math.hypot(units.std(ddof=1) / math.sqrt(len(units)), ref_se)
    assert abs(units.mean() - ref) < tol, (units.mean(), ref, tol)
    scattered = _gv_meter(W, V, P, G, k, 400, 3, "scattered")
    assert abs(scattered.mean() - ref) > tol + 4 * scattered.std(ddof=1) / math.sqrt(len(scattered))


def test_group_units_keep_groups_whole_and_cover_every_row_once():
    from ablate.upge.partition import group_units

    gid = torch.tensor([3, 1, 3, 0, 1, 0, 3, 1, 0, 2, 2, 2])
    for k in (1, 2, 3, 4, 6, 12):
        units = group_units(gid, k)
        rows = torch.cat([r for r, _ in units])
        assert sorted(rows.tolist()) == list(range(12))
        closed, members = [], []
        for r, closes in units:  # a unit = the chunks up to a closing one
            members.extend(r.tolist())
            if closes:
                closed.append(sorted(members))
                members = []
        assert not members and units[-1][1]
        for u in closed:  # each unit is a union of whole groups
            gs = set(gid[u].tolist())
            assert sorted(u) == sorted(i for i in range(12) if int(gid[i]) in gs)
        if k > 4:  # fewer groups than microbatches: each group its own unit, chunks ≈ 12/k rows
            assert len(closed) == 4 and max(r.numel() for r, _ in units) <= math.ceil(12 / k) + 1


@pytest.mark.parametrize("weighted", [False, True])
def test_grad_meter_last_call_keeps_no_snapshot_and_gives_the_same_metrics(weighted):
    """``after_backward(last=True)`` skips the final snapshot copy (the trainer's last microbatch):
    the same contributions and metrics as without it, and the snapshot buffers are left as they were."""
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    x, y = torch.randn(9, 4), torch.randn(9)
    outs = []
    for last in (False, True):
        meter = GradVarianceMeter(net.parameters(), record_contributions=True)
        net.zero_grad(set_to_none=True)
        meter.start()
        for k, sl in enumerate((slice(0, 2), slice(2, 5), slice(5, 9))):
            (((net(x[sl]).squeeze(-1) - y[sl]) ** 2).sum() / 9).backward()
            before = [b.clone() for b in meter._prev] if k == 2 else None
            meter.after_backward(weight=sl.stop - sl.start if weighted else None, last=last and k == 2)
        if last:  # buffers hold −g_3 (the in-place difference), not a copy of the final gradient
            assert not any(torch.equal(b, p.grad) for b, p in zip(meter._prev, net.parameters()))
            assert all(not torch.equal(a, b) for a, b in zip(before, meter._prev))
        outs.append((meter.finish(), [c.clone() for c in meter.contributions]))
    (m0, c0), (m1, c1) = outs
    assert m0 == m1 and m0["train/grad_var"] is not None
    assert all(torch.equal(a, b) for a, b in zip(c0, c1))
