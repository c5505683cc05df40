"""The per-row branch of ``UPGE.surrogate_loss`` (``ROW_FORM`` slots) equals the token path (``per_token``).

A likelihood and a denominator that declare ``ROW_FORM`` (GSPO's) make log g − log π_ref one
value per row; the estimator then aggregates per-row sums instead of a [B, T] loss matrix
(bench/README.md, estimator section). Here the loss, its gradient and every diagnostic of that
path are checked against the token path on the same context, for every aggregation mode and
scope, with row and IS weights, a verl-style cap, empty rows and an empty microbatch.
"""

import pytest
import torch

from ablate import registry
from ablate.upge.aggregation import MODES, Aggregation, Normalizer
from ablate.upge.estimator import UPGE
from ablate.upge.slots.base import TokenContext
from ablate.upge.slots.denominator import GSPOSequence
from ablate.upge.slots.likelihood import SequenceMean
from ablate.upge.slots.mask import SequenceClip
from tests.upge.test_diagnostics import case

AGGREGATIONS = [Aggregation(mode) for mode in MODES] + [
    Aggregation("seq-mean-token-mean", scope="microbatch", count_empty_rows=True),
    Aggregation("token-mean", scope="microbatch"),
    Aggregation("seq-mean-token-sum-norm", constant=4.0, legacy_no_seq_mean=True),
]
CAPS = [None, 1.0]  # 1.0: the far row of ``case`` (log s = 1.5) exceeds it


def token_path(est: UPGE, ctx: TokenContext, norm: Normalizer):
    """``policy_loss`` as the token path computes it: loss matrix, weights, aggregation, diagnostics."""
    loss_mat, m, weight = est.per_token(ctx)
    if ctx.loss_weights is not None:
        loss_mat = loss_mat * ctx.loss_weights[:, None]
    iw = ctx.rows.get("is_weight")
    if iw is not None:
        loss_mat = loss_mat * iw
    loss = est.aggregation(loss_mat, ctx.response_mask, norm)
    with torch.no_grad():
        diags = est._diagnostics(ctx, m, weight, norm, pg_loss=None if iw is not None else loss)
    return loss, diags


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("empty", [False, True])
@pytest.mark.parametrize("with_extras", [False, True])
@pytest.mark.parametrize("cap", CAPS)
@pytest.mark.parametrize("agg", range(len(AGGREGATIONS)))
def test_row_path_equals_the_token_path(agg, cap, with_extras, empty, dtype):
    est = UPGE(SequenceClip(max_log_ratio=cap), GSPOSequence(max_log_ratio=cap), SequenceMean(),
               AGGREGATIONS[agg])
    assert est.likelihood.ROW_FORM and est.denominator.ROW_FORM
    batch, logp, _ = case(dtype, seed=3 + agg, empty=empty, with_extras=with_extras)
    norm = Normalizer.of(batch.response_mask, num_chunks=2)
    want_loss, want = token_path(est, TokenContext.from_batch(batch, logp), norm)
    (want_grad,) = torch.autograd.grad(want_loss, logp)
    got_loss, got = est.policy_loss(TokenContext.from_batch(batch, logp), norm)
    (got_grad,) = torch.autograd.grad(got_loss, logp)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert got_loss.item() == pytest.approx(want_loss.item(), rel=tol, abs=tol)
    scale = float(want_grad.abs().max().clamp_min(1e-30))
    assert float((got_grad - want_grad).abs().max()) <= 10 * tol * scale
    assert set(got) == set(want) | {"pg_loss"}
    for k, d in want.items():
        assert d.reduce == got[k].reduce, k
        assert float(got[k].value) == pytest.approx(float(d.value), rel=tol, abs=tol), k
    if not empty:
        assert float(want_grad.abs().max()) > 0 and float(want["mask_frac"].value) > 0  # clips act
        if cap is not None:
            assert float(want["mask/seq_ratio_cap_frac"].value) > 0  # the cap acts


def row_form_variants(family: str) -> list:
    slots = [registry.build(family, name) for name in registry.variant_names(family)]
    return [slot for slot in slots if slot.ROW_FORM]


def test_every_row_form_likelihood_is_its_token_form_on_each_row():
    """A ``ROW_FORM`` likelihood's token tensor is sg(log π) + u_i at every token of row i, with
    the same gradient."""
    batch, logp, _ = case(torch.float64, seed=11, empty=False, with_extras=False)
    rm = batch.response_mask
    slots = row_form_variants("likelihood")
    assert slots  # GSPO's
    for slot in slots:
        token = slot(TokenContext.from_batch(batch, logp))
        row = slot.row_term(TokenContext.from_batch(batch, logp))
        assert row.shape == (logp.shape[0],)
        assert torch.allclose(token, logp.detach() + row[:, None], rtol=0, atol=1e-12), slot
        (g_token,) = torch.autograd.grad((token * rm).sum(), logp)
        (g_row,) = torch.autograd.grad((row * rm.sum(-1)).sum(), logp)
        assert torch.allclose(g_token, g_row, rtol=1e-12, atol=1e-12) and g_row.abs().max() > 0, slot


def test_every_row_form_denominator_is_its_token_form_on_each_row():
    """A ``ROW_FORM`` denominator's token tensor is sg(log π) − log w_i at every token of row i."""
    batch, logp, _ = case(torch.float64, seed=12, empty=False, with_extras=False)
    slots = row_form_variants("denominator")
    assert len(slots) >= 2  # GSPO's, with and without verl's cap
    for slot in slots:
        token = slot(TokenContext.from_batch(batch, logp))
        row = slot.row_log_weight(TokenContext.from_batch(batch, logp))
        assert row.shape == (logp.shape[0],) and not row.requires_grad
        assert torch.allclose(token, logp.detach() - row[:, None], rtol=0, atol=1e-12), slot
