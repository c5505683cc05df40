"""CAPO (arXiv 2510.00819) against an independent transcription of the authors' code,
luckeciano/stable-pg-llm@933fe0176b140ffa4390e021feb6e8d7da1bd735:

- src/open_r1/grpo_entropy_trainer.py: ``_compute_entropy`` (top-k renormalised probabilities),
  ``_compute_token_level_gradients`` (g = A·(v⊗h)), ``_compute_grad_norm_sq`` (token: ⟨g, ĝ⟩),
  ``compute_per_sample_hessian_contributions`` (F = diag(π) − ππᵀ built densely),
  ``compute_fisher_token_level``, ``_compute_hessian_token_mask`` / ``_compute_fisher_token_mask``,
  ``_sparsify_global_gradients`` + ``aggregate_global_dict`` (per-id mean of g over masked tokens);
- src/open_r1/sparse_optim_models/sparse_adam_model.py (``batch_compute_effective_token_gradients``,
  ``update_effective_gradient_moments``) and sparse_grad_ops.densify_gradient_dict.

The transcription keeps the authors' dict-of-rows state and dense Fisher matrices; the component
keeps sorted tensors and closed forms, so agreement checks the formulas, not shared code.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ablate.component import Needs, load_tree_state, tree_state
from ablate.upge.slots.base import TokenContext
from ablate.upge.slots.capo import CurvatureMask

REFERENCED = {"capo"}


# ------------------------------------------------------------------------------------------------
# transcription of the authors' code
# ------------------------------------------------------------------------------------------------

class SparseAdamModel:
    """sparse_adam_model.py: Adam moments per logit key (dict of [H] rows)."""

    def __init__(self, beta1=0.9, beta2=0.999, eps=1e-8):
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m, self.v, self.t = {}, {}, 0

    def compute_effective_token_gradients(self, g, token_ids):
        m, v = densify_gradient_dict(self.m, token_ids), densify_gradient_dict(self.v, token_ids)
        if m is None or v is None:
            return g
        t_next = self.t + 1
        m = m * self.beta1 + g * (1.0 - self.beta1)
        v = v * self.beta2 + g * g * (1.0 - self.beta2)
        m = m / (1.0 - self.beta1 ** t_next)
        v = v / (1.0 - self.beta2 ** t_next)
        return m / (v.sqrt() + self.eps)

    def update_effective_gradient_moments(self, grads_by_logit):
        self.t += 1
        for key, g in grads_by_logit.items():
            if key not in self.m:
                self.m[key] = torch.zeros_like(g)
                self.v[key] = torch.zeros_like(g)
            self.m[key] = self.m[key] * self.beta1 + g * (1.0 - self.beta1)
            self.v[key] = self.v[key] * self.beta2 + g * g * (1.0 - self.beta2)


def densify_gradient_dict(grad_dict, token_ids):
    if not grad_dict:
        return None
    B, T, K = token_ids.shape
    first = next(iter(grad_dict.values()))
    out = torch.zeros(B * T * K, first.numel(), dtype=first.dtype)
    for n, tid in enumerate(token_ids.flatten().tolist()):
        if tid in grad_dict:
            out[n] = grad_dict[tid]
    return out.view(B, T, K, -1)


def global_mean_dict(g, token_ids, mask):
    """_sparsify_global_gradients + aggregate_global_dict on one process: Σ g / count per id."""
    B, T, K = token_ids.shape
    sums, counts = {}, {}
    for b in range(B):
        for t in range(T):
            if mask[b, t] <= 0:
                continue
            for k in range(K):
                key = int(token_ids[b, t, k])
                sums[key] = sums.get(key, 0) + g[b, t, k]
                counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


def authors_capo_step(opt, logits, input_ids, hidden, advantages, completion_mask, lr, top_k,
                      tau_h, tau_f, symmetric=True):
    """compute_loss's curvature path (sequential_masking False): masks, then the moment update
    with the masked global gradient (the second _compute_and_log_gradients_linear_model call)."""
    top_k_logits, top_k_indices = torch.topk(logits, k=top_k, dim=-1)
    probs = torch.exp(F.log_softmax(top_k_logits, dim=-1))
    action_one_hot = (input_ids.unsqueeze(-1) == top_k_indices).float()
    pi, h = probs, hidden
    v = action_one_hot - pi
    A = advantages.unsqueeze(1)
    g = A.unsqueeze(-1).unsqueeze(-1) * v.unsqueeze(-1) * h.unsqueeze(2)
    eff = opt.compute_effective_token_gradients(g, top_k_indices)
    B, T, V, H = g.shape
    grad_norm_sq = torch.bmm(g.reshape(B * T, 1, V * H), eff.reshape(B * T, V * H, 1)).reshape(B, T)
    u = torch.einsum('btvh,bth->btv', eff, h)
    first = ((v * u).sum(dim=-1)) ** 2
    Fm = torch.diag_embed(pi) - pi.unsqueeze(-1) @ pi.unsqueeze(-2)
    second = (torch.matmul(Fm, u.unsqueeze(-1)).squeeze(-1) * u).sum(dim=-1)
    hessian = A * (first - second)
    full_update_term = lr * grad_norm_sq + 0.5 * hessian * lr ** 2
    s = torch.einsum('btv,btvh,bth->bt', v, eff, h)
    approx_kl = 0.5 * s ** 2 * lr ** 2
    mask = torch.ones_like(completion_mask)
    if tau_h != 0.0:
        if symmetric:
            mask = mask * ((full_update_term < tau_h) * (full_update_term > -tau_h))
        else:
            mask = mask * ((full_update_term < tau_h) * (full_update_term >= 0.0))
    if tau_f != 0.0:
        mask = mask * (approx_kl < tau_f)
    updated_mask = completion_mask * mask
    opt.update_effective_gradient_moments(global_mean_dict(g, top_k_indices, updated_mask))
    return updated_mask, full_update_term, approx_kl


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------

def _case(seed, B=4, T=5, V=12, H=6, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * scale
    ids = torch.multinomial(F.softmax(logits.reshape(-1, V), -1), 1, generator=gen).reshape(B, T)
    hidden = torch.randn(B, T, H, generator=gen, dtype=torch.float64)
    adv = torch.randn(B, generator=gen, dtype=torch.float64)
    rm = torch.ones(B, T, dtype=torch.float64)
    rm[0, 3:] = 0
    rm[2, 4:] = 0
    return logits, ids, hidden, adv, rm


def _ctx(logits, ids, hidden, adv, rm, lr):
    B, T = ids.shape
    return TokenContext(logp=torch.zeros(B, T, dtype=logits.dtype), old_logp=torch.zeros(B, T, dtype=logits.dtype),
                        advantages=adv[:, None].expand(B, T) * rm, response_mask=rm,
                        is_demo=torch.zeros(B, dtype=torch.bool), logits=logits, hidden=hidden, lr=lr,
                        response_ids=ids)


# ------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("symmetric", [True, False])
def test_shifts_masks_and_moments_match_the_authors_code_over_three_steps(symmetric):
    """Three calls: the first with no moments (ĝ = g), then Adam directions from the moments the
    kept tokens built. Thresholds sit at the shifts' median so both tests reject some tokens."""
    k, lr = 5, 0.3
    mask = CurvatureMask(tau_hessian=1.0, tau_fisher=1.0, symmetric=symmetric, top_k=k)
    ref = SparseAdamModel()
    rejected = 0
    for step in range(3):
        logits, ids, hidden, adv, rm = _case(step)
        ctx = _ctx(logits, ids, hidden, adv, rm, lr)
        d_obj, d_kl, _, _ = mask.shifts(ctx)
        valid = rm > 0
        mask.tau_hessian = float(d_obj[valid].abs().median())
        mask.tau_fisher = float(d_kl[valid].median()) + 1e-12
        want_mask, want_obj, want_kl = authors_capo_step(
            ref, logits, ids, hidden, adv, rm, lr, k, mask.tau_hessian, mask.tau_fisher, symmetric)
        torch.testing.assert_close(d_obj[valid], want_obj[valid], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(d_kl[valid], want_kl[valid], rtol=1e-9, atol=1e-12)
        out = mask(ctx)
        assert torch.equal(out.keep & valid, want_mask.bool())
        rejected += int((~out.keep & valid).sum())
        assert set(ref.m) == set(mask._ids.tolist())
        for n, key in enumerate(mask._ids.tolist()):
            torch.testing.assert_close(mask._m[n].double(), ref.m[key].double(), rtol=1e-5, atol=1e-9)
            torch.testing.assert_close(mask._v[n].double(), ref.v[key].double(), rtol=1e-5, atol=1e-12)
    assert rejected > 0 and mask._t == ref.t == 3


def test_zero_tau_switches_a_test_off_and_padding_is_never_an_event():
    logits, ids, hidden, adv, rm = _case(7)
    out = CurvatureMask(tau_hessian=0.0, tau_fisher=1e-12, top_k=4)(_ctx(logits, ids, hidden, adv, rm, 1.0))
    assert set(out.events) == {"curvature_kl"}
    assert not (out.events["curvature_kl"] & (rm == 0)).any()
    out = CurvatureMask(tau_hessian=0.0, tau_fisher=0.0, top_k=4)(_ctx(logits, ids, hidden, adv, rm, 1.0))
    assert out.events == {} and bool(out.keep.all())


def test_state_survives_a_checkpoint_and_changes_the_next_step():
    logits, ids, hidden, adv, rm = _case(3)
    a = CurvatureMask(tau_hessian=10.0, tau_fisher=10.0, top_k=4)
    a(_ctx(logits, ids, hidden, adv, rm, 0.5))
    state = tree_state(a)
    b = CurvatureMask(tau_hessian=10.0, tau_fisher=10.0, top_k=4)
    load_tree_state(b, state)
    nxt = _ctx(*_case(4), 0.5)
    fresh = CurvatureMask(tau_hessian=10.0, tau_fisher=10.0, top_k=4).shifts(nxt)[0]
    torch.testing.assert_close(a.shifts(nxt)[0], b.shifts(nxt)[0])
    assert not torch.allclose(a.shifts(nxt)[0], fresh)  # the moments matter


def test_declares_its_needs_and_rejects_bad_parameters():
    assert CurvatureMask().needs() == Needs(full_logits=True, hidden_states=True)
    for bad in (dict(tau_hessian=-1.0), dict(top_k=0), dict(top_k=2.5), dict(beta2=1.0),
                dict(symmetric="yes"), dict(eps=0.0), dict(beta1=1.0)):
        with pytest.raises(ValueError):
            CurvatureMask(**bad)
    with pytest.raises(RuntimeError, match="ctx.hidden"):
        logits, ids, hidden, adv, rm = _case(0)
        CurvatureMask()(_ctx(logits, ids, None, adv, rm, 1.0))


def test_trainer_gives_the_lm_head_inputs_and_the_coming_learning_rate(monkeypatch):
    """method=capo trains; ctx.hidden is the LM head's input (head(hidden)/T = the logits) and ctx.lr
    the scheduler's rate for the coming optimizer step."""
    from tests.test_machinery import _trainer

    seen = []
    orig = CurvatureMask.__call__

    def spy(self, ctx):
        head = tr.model.get_output_embeddings()
        with torch.no_grad():
            z = head(ctx.hidden.to(head.weight.dtype)).float() / tr.temperature
        seen.append((float((z - ctx.logits.detach()).abs().max()), ctx.lr, float(tr.sched.get_last_lr()[0])))
        return orig(self, ctx)

    monkeypatch.setattr(CurvatureMask, "__call__", spy)
    tr = _trainer("method=capo", "train.steps=2")
    assert tr.plan.hidden_states and tr.plan.full_logits
    tr.run(progress=False)
    assert seen and all(err < 1e-4 and lr == cur for err, lr, cur in seen)
    assert math.isfinite(tr.state.last_metrics["train/pg_loss"])
    capo = [c for _, c in tr.algo.walk() if isinstance(c, CurvatureMask)]
    assert capo and capo[0]._t == len(seen)
