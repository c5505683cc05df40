"""CAPO's curvature mask (Melo, Abate & Gal, arXiv 2510.00819, ICLR 2026): reject the tokens whose
modelled update would move the objective or the policy too far.

CAPO models the LM head as a linear logit model z = W·h and the optimizer as Adam. For each response
token t (top-k subspace of the vocabulary, k = the sampler's top-k) it forms the head gradient
g_t = Â·(e_a − π)⊗h_t, the Adam step direction ĝ_t that the optimizer's moments would give it, and
u_t = ĝ_t·h_t (the logit change per unit step). With the coming step's learning rate η:

  objective shift  δJ_t = η⟨g_t, ĝ_t⟩ + ½η²·Â·[(v·u)² − uᵀF u],   v = e_a − π,  F = diag(π) − ππᵀ
  policy shift     δKL_t = ½η²·(v·u)²

and keeps the token iff |δJ_t| < τ_H (``symmetric``; else 0 ≤ δJ_t < τ_H) and δKL_t < τ_F (a τ of 0
switches that test off). The Adam moments are the mask's own model of the optimizer (one m, v per
vocabulary row, as the authors' SparseAdamModel): after each call they take one Adam moment update
with the mean head gradient per vocabulary id over the kept tokens; ids absent from a batch keep
their moments. Before the first update (no moments yet) ĝ = g.

Transcribed from the authors' code, luckeciano/stable-pg-llm@933fe01
(src/open_r1/grpo_entropy_trainer.py: _compute_token_level_gradients, _compute_and_log_hessian_coefficient,
_compute_and_log_fisher_curvature, _compute_{hessian,fisher}_token_mask, _sparsify_global_gradients,
aggregate_global_dict; src/open_r1/sparse_optim_models/sparse_adam_model.py).
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import torch
import torch.nn.functional as F

from ablate.component import Needs
from ablate.spec.params import Frac, NonNeg, OpenProb, PosInt, Positive
from ablate.upge.slots.base import Mask, MaskResult, TokenContext
from ablate.upge.slots.mask import valid_tokens


class CurvatureMask(Mask):
    """CAPO token-level curvature mask (see the module docstring). Reads ``ctx.logits``,
    ``ctx.hidden`` and ``ctx.lr``; keeps Adam moments of the LM-head rows in ``state_dict``."""

    NEEDS: ClassVar[Needs] = Needs(full_logits=True, hidden_states=True)

    def __init__(self, tau_hessian: NonNeg = 0.01, tau_fisher: NonNeg = 1e-4, symmetric: bool = True,
                 top_k: PosInt = 50, beta1: Frac = 0.9, beta2: OpenProb = 0.999, eps: Positive = 1e-8):
        self.tau_hessian, self.tau_fisher, self.symmetric, self.top_k = tau_hessian, tau_fisher, symmetric, top_k
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self._ids = torch.zeros(0, dtype=torch.long)  # vocabulary ids with moments (sorted)
        self._m = torch.zeros(0, 0)
        self._v = torch.zeros(0, 0)
        self._t = 0

    # ------------------------------------------------------------------ the optimizer model
    def _moments_at(self, ids: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, v) of each id in ``ids`` ([..., k] → [..., k, H], dtype and device of ``like``);
        zeros for ids without moments."""
        m = like.new_zeros(*ids.shape, like.shape[-1])
        v = torch.zeros_like(m)
        if self._ids.numel():
            known = self._ids.to(ids.device)
            pos = torch.searchsorted(known, ids).clamp_max(known.numel() - 1)
            hit = known[pos] == ids
            m[hit] = self._m.to(m)[pos[hit]]
            v[hit] = self._v.to(m)[pos[hit]]
        return m, v

    def effective(self, g: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Adam direction of each token's gradient g [..., k, H] from the prospective moments
        (state unchanged): the raw gradient while no moments exist (the authors' first step)."""
        if not self._ids.numel():
            return g
        m, v = self._moments_at(ids, g)
        t = self._t + 1
        m = (self.beta1 * m + (1 - self.beta1) * g) / (1 - self.beta1 ** t)
        v = (self.beta2 * v + (1 - self.beta2) * g * g) / (1 - self.beta2 ** t)
        return m / (v.sqrt() + self.eps)

    def update_moments(self, g: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor) -> None:
        """One Adam moment update with the mean gradient per vocabulary id over the tokens ``rows``
        (bool [B, T]); ids not among them keep their moments."""
        self._t += 1
        g_sel = g[rows].reshape(-1, g.shape[-1]).cpu()  # [N·k, H]
        id_sel = ids[rows].reshape(-1).cpu()
        if not id_sel.numel():
            return
        uniq, inv = torch.unique(id_sel, return_inverse=True)
        mean = g_sel.new_zeros(uniq.numel(), g.shape[-1]).index_add_(0, inv, g_sel)
        mean /= torch.bincount(inv, minlength=uniq.numel()).unsqueeze(-1).to(mean.dtype)
        m, v = self._moments_at(uniq, mean)
        m = self.beta1 * m + (1 - self.beta1) * mean
        v = self.beta2 * v + (1 - self.beta2) * mean * mean
        ids_all = torch.cat([self._ids, uniq])
        hd = g.shape[-1]
        m_all = torch.cat([self._m.reshape(-1, hd).to(m), m])
        v_all = torch.cat([self._v.reshape(-1, hd).to(v), v])
        keep_old = ~torch.isin(self._ids, uniq)
        keep = torch.cat([keep_old, torch.ones_like(uniq, dtype=torch.bool)])
        order = torch.argsort(ids_all[keep])
        self._ids, self._m, self._v = ids_all[keep][order], m_all[keep][order], v_all[keep][order]

    # ------------------------------------------------------------------ the shifts
    def shifts(self, ctx: TokenContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(δJ [B, T], δKL [B, T], head gradients g [B, T, k, H], top-k ids [B, T, k])."""
        if ctx.logits is None or ctx.hidden is None or ctx.lr is None:
            raise RuntimeError("CurvatureMask needs ctx.logits, ctx.hidden and ctx.lr; the trainer "
                               "provides them when a component declares Needs(full_logits, hidden_states)")
        dt = torch.promote_types(ctx.logits.dtype, torch.float32)  # float32 at least
        with torch.no_grad():
            top, ids = ctx.logits.detach().to(dt).topk(min(self.top_k, ctx.logits.shape[-1]), dim=-1)
            pi = F.softmax(top, dim=-1)  # [B, T, k]: renormalised over the top-k (authors' _compute_entropy)
            v = (ids == ctx.response_ids.unsqueeze(-1)).to(pi.dtype) - pi
            h = ctx.hidden.to(dt)
            a = ctx.advantages.detach().to(dt)
            g = a[..., None, None] * v.unsqueeze(-1) * h.unsqueeze(-2)  # [B, T, k, H]
            ge = self.effective(g, ids)
            u = torch.einsum("btkh,bth->btk", ge, h)
            vu = (v * u).sum(-1)
            u_f_u = (pi * u * u).sum(-1) - (pi * u).sum(-1) ** 2
            lr = float(ctx.lr)
            # ⟨g, ĝ⟩ = Σ_k Â·v_k·(ĝ_k·h) = Â·(v·u): no second [B, T, k, H] product
            d_obj = lr * a * vu + 0.5 * lr ** 2 * a * (vu ** 2 - u_f_u)
            d_kl = 0.5 * lr ** 2 * vu ** 2
        return d_obj, d_kl, g, ids

    def __call__(self, ctx: TokenContext) -> MaskResult:
        d_obj, d_kl, g, ids = self.shifts(ctx)
        valid = valid_tokens(ctx)
        events = {}
        if self.tau_hessian:
            bad = d_obj.abs() >= self.tau_hessian if self.symmetric else \
                (d_obj >= self.tau_hessian) | (d_obj < 0)
            events["curvature_objective"] = bad & valid
        if self.tau_fisher:
            events["curvature_kl"] = (d_kl >= self.tau_fisher) & valid
        keep = torch.ones_like(valid)
        for ev in events.values():
            keep = keep & ~ev
        self.update_moments(g, ids, keep & valid)
        return MaskResult(keep=keep, events=events)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"t": self._t, "ids": self._ids.clone(), "m": self._m.clone(), "v": self._v.clone()} \
            if self._t else {}

    def load_state_dict(self, state: Mapping) -> None:
        if not state:
            return
        self._t = int(state["t"])
        self._ids, self._m, self._v = state["ids"].clone(), state["m"].clone(), state["v"].clone()

    def extra_repr(self) -> str:
        return (f"tau_hessian={self.tau_hessian!r}, tau_fisher={self.tau_fisher!r}, "
                f"symmetric={self.symmetric!r}, top_k={self.top_k!r}, beta1={self.beta1!r}, "
                f"beta2={self.beta2!r}, eps={self.eps!r}")
