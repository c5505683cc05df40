"""ablate.upge.functional: masked moments, whitening, vectorised group statistics, return-to-go,
zero-advantage group fraction. References are float64 numpy / naive Python loops."""

import numpy as np
import pytest
import torch

from ablate.errors import ConfigError
from ablate.upge import functional as F


def _rand_mask(gen, B, T, p=0.7):
    m = (torch.rand(B, T, generator=gen) < p).double()
    m[0] = 0.0  # one empty row
    return m


def test_masked_mean_and_var_match_numpy():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    m = _rand_mask(gen, 5, 7)
    vals = x.numpy()[m.numpy() == 1]
    assert F.masked_mean(x, m).item() == pytest.approx(vals.mean(), abs=1e-12)
    assert F.masked_var(x, m, unbiased=True).item() == pytest.approx(vals.var(ddof=1), abs=1e-12)
    assert F.masked_var(x, m, unbiased=False).item() == pytest.approx(vals.var(ddof=0), abs=1e-12)
    rows = F.masked_mean(x, m, dim=1)
    for i in range(5):
        sel = x[i].numpy()[m[i].numpy() == 1]
        assert rows[i].item() == pytest.approx(sel.mean() if sel.size else 0.0, abs=1e-12)


def test_masked_stats_ignore_nan_outside_mask_and_undefined_var_is_nan():
    x = torch.tensor([1.0, float("nan"), 3.0], dtype=torch.float64)
    m = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    assert F.masked_mean(x, m).item() == 2.0
    assert F.masked_var(x, m).item() == 2.0
    one = torch.tensor([1.0, 0.0, 0.0])
    assert torch.isnan(F.masked_var(x, one, unbiased=True))
    assert F.masked_var(x, one, unbiased=False).item() == 0.0
    assert F.masked_mean(x, torch.zeros(3)).item() == 0.0


@pytest.mark.parametrize("placement", ["std", "var", "max"])
def test_masked_whiten_matches_verl_and_openrlhf_formulas(placement):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    m = _rand_mask(gen, 4, 6)
    eps = 1e-3
    v = x.numpy()[m.numpy() == 1]
    mu, var = v.mean(), v.var(ddof=1)
    den = {"std": np.sqrt(var) + eps, "var": np.sqrt(var + eps), "max": np.sqrt(max(var, eps))}[placement]
    ref = np.where(m.numpy() == 1, (x.numpy() - mu) / den, 0.0)
    out = F.masked_whiten(x, m, unbiased=True, eps=eps, eps_placement=placement)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


def test_masked_whiten_single_token_gives_zero():
    x = torch.tensor([[5.0, 7.0]], dtype=torch.float64)
    m = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert F.masked_whiten(x, m).abs().max().item() == 0.0


def test_bad_eps_placement_names_parameter_and_allowed_values():
    with pytest.raises(ConfigError, match=r"eps_placement: unknown value 'bogus'; allowed: max, std, var"):
        F.check_eps_placement("bogus")
    with pytest.raises(ConfigError, match="eps_placement"):
        F.divide_by_std(torch.ones(2), torch.ones(2), 1e-6, "bogus")


def _naive_group(x, ids, mask, unbiased):
    out_mean, out_var, out_cnt = np.zeros(len(x)), np.zeros(len(x)), np.zeros(len(x))
    for g in set(ids.tolist()):
        sel = [i for i in range(len(x)) if ids[i] == g and mask[i]]
        vals = np.array([x[i] for i in sel], dtype=np.float64)
        n = len(vals)
        mean = vals.mean() if n else 0.0
        ddof = 1 if unbiased else 0
        var = vals.var(ddof=ddof) if n - ddof > 0 else np.nan
        for i in range(len(x)):
            if ids[i] == g:
                out_mean[i], out_var[i], out_cnt[i] = mean, var, n
    return out_mean, out_var, out_cnt


@pytest.mark.parametrize("unbiased", [True, False])
def test_vectorised_group_stats_equal_naive_per_group_loop(unbiased):
    gen = torch.Generator().manual_seed(2)
    for trial in range(5):
        B = 40
        ids = torch.randint(0, 9, (B,), generator=gen) * 1000 + 7  # sparse, interleaved ids
        x = torch.randn(B, generator=gen, dtype=torch.float64)
        mask = torch.rand(B, generator=gen) < 0.8
        gs = F.group_stats(x, ids, mask, unbiased=unbiased)
        mean, var, cnt = _naive_group(x.numpy(), ids.numpy(), mask.numpy(), unbiased)
        np.testing.assert_allclose(gs.mean.numpy(), mean, atol=1e-12)
        np.testing.assert_allclose(gs.var.numpy(), var, atol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(gs.count.numpy(), cnt)


def test_group_mean_weighted_and_sum_count_match_naive():
    gen = torch.Generator().manual_seed(3)
    ids = torch.tensor([3, 1, 3, 2, 1, 3, 2, 9])
    x = torch.randn(8, generator=gen, dtype=torch.float64)
    w = torch.tensor([2.0, 4, 3, 1, 5, 0, 2, 0], dtype=torch.float64)
    out = F.group_mean(x, ids, weights=w)
    for i in range(8):
        sel = ids == ids[i]
        den = w[sel].sum()
        ref = (w[sel] * x[sel]).sum() / den if den > 0 else 0.0
        assert out[i].item() == pytest.approx(float(ref), abs=1e-12)
    np.testing.assert_array_equal(F.group_count(ids).numpy(), [3, 2, 3, 2, 2, 3, 2, 1])
    assert F.group_sum(x, ids)[0].item() == pytest.approx(float(x[[0, 2, 5]].sum()), abs=1e-12)


def test_group_all_equal_is_exact_and_needs_two_members():
    x = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 5.0, 2.0, 2.0], dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    out = F.group_all_equal(x, ids)
    assert out.tolist() == [True, True, True, False, False, False, True, True]
    mask = torch.tensor([1, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)  # group 1 → singleton
    assert F.group_all_equal(x, ids, mask)[3].item() is False
    assert F.group_max(x, ids)[3].item() == 1.0 and F.group_min(x, ids)[3].item() == 0.0


def _naive_rtg(r, m, gamma):
    out = np.zeros_like(r)
    for i in range(r.shape[0]):
        run = 0.0
        for t in range(r.shape[1] - 1, -1, -1):
            if m[i, t]:
                run = r[i, t] + gamma * run
                out[i, t] = run
    return out


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.0])
def test_return_to_go_matches_naive_loop_with_mask_holes(gamma):
    gen = torch.Generator().manual_seed(4)
    r = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    m = torch.ones(5, 8, dtype=torch.float64)
    m[0] = 0.0  # zero-length
    m[1, 5:] = 0.0  # right padding
    m[2, 2:4] = 0.0  # tool tokens inside the response carry the return through
    out = F.return_to_go(r, m, gamma)
    np.testing.assert_allclose(out.numpy(), _naive_rtg(r.numpy(), m.numpy(), gamma), atol=1e-12)
    if gamma == 1.0:
        full = torch.flip(torch.cumsum(torch.flip(r[3:], [1]), 1), [1])
        np.testing.assert_allclose(out[3:].numpy(), full.numpy(), atol=1e-12)


def test_place_on_last_token_and_zero_length_rows():
    m = torch.tensor([[1.0, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 0, 1, 0]])
    assert F.last_token_index(m).tolist() == [1, -1, 3, 2]
    out = F.place_on_last_token(torch.tensor([1.0, 2.0, 3.0, 4.0]), m)
    assert out.tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 3], [0, 0, 4, 0]]


def test_zero_advantage_group_fraction():
    adv = torch.tensor([[1.0, 1, 0], [0, 0, 0], [0, 0, 9], [0, 0, 0], [0.5, 0, 0], [2.0, 2, 2]])
    mask = torch.tensor([[1.0, 1, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]])
    ids = torch.tensor([5, 7, 7, 5, 11, 11])  # groups: 5 → nonzero; 7 → zero (9 is padding); 11 → no tokens
    frac = F.zero_advantage_group_fraction(adv, ids, mask)
    assert frac.dtype == torch.float32 and frac.dim() == 0
    assert frac.item() == pytest.approx(2 / 3)
    assert F.zero_advantage_group_fraction(adv * 1e-9, ids, mask, atol=1e-6).item() == 1.0
