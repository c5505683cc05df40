"""`train/grad_var`, `train/grad_norm`, `train/grad_snr` from the gradient-accumulation microbatches
the trainer already runs: no extra forward or backward.

Protocol (per optimizer step)::

    opt.zero_grad(); meter.start()
    for each of the K microbatches:  loss_k.backward(); meter.after_backward()
    metrics = meter.finish()          # before grad clipping / unscaling and before opt.step()

``after_backward`` reads the accumulated ``.grad`` and differences it with the previous snapshot,
which yields that microbatch's contribution g_k; only ‖g_k‖² (a device scalar) is kept. Because
the loss is normalised by minibatch totals, Σ_k g_k = ĝ, the minibatch gradient in ``.grad``.

Estimator. Microbatch k holds a share w_k of the minibatch normaliser (Σ w_k = 1; w_k = 1/K for
equal chunks, the default). Then ĝ_k = g_k / w_k is an unbiased estimate of the expected
gradient from microbatch k alone, and ĝ = Σ_k w_k ĝ_k. We report

    train/grad_var = K/(K−1) · Σ_k w_k ‖ĝ_k − ĝ‖²  =  K/(K−1) · (Σ_k ‖g_k‖²/w_k − ‖ĝ‖²)

which for equal chunks is (1/(K−1)) Σ_k ‖K·g_k − ĝ‖², the unbiased sample estimate of the
trace of the covariance of one microbatch's gradient estimate K·g_k. If the minibatch's N samples
are i.i.d. with per-sample gradient covariance Σ, its expectation is tr(Σ)·K/N for *any* sizes
n_k = w_k·N (derivation: Var(ĝ_k − ĝ) = Σ(1/n_k − 1/N), and Σ_k w_k(1/n_k − 1/N) = (K−1)/N).

    train/grad_norm = ‖ĝ‖                 (pre-clip; equal to clip_grad_norm_'s return value)
    train/grad_snr  = ‖ĝ‖² / (grad_var/K)  (signal over the variance of the mean, tr Cov(ĝ) ≈ tr Σ/N)

(K: the number of units; ‖ĝ‖² in the SNR is itself ‖μ‖² + tr Cov(ĝ) in expectation, so the SNR
reads ≈ 1 + ‖μ‖²/tr Cov(ĝ): about 1, not 0, for a pure-noise gradient.)

grad_var scales like 1/(microbatch size), so compare it only between runs with the same
microbatch layout; grad_snr does not depend on K (both numerator and denominator refer to the
full minibatch) and is the number to compare across configurations. An SNR ≫ 1 means the
minibatch gradient direction is well determined; ≲ 1 means it is mostly noise.

Units: whole prompt groups (what the trainer does). The estimator needs the K chunks to be
independent draws. Responses of one prompt are not: they share the prompt and, through a group
advantage (GRPO z-score, RLOO, ...), each other's rewards. Prompts are drawn i.i.d., so *whole
groups* are the i.i.d. units: the trainer cuts the microbatches of a measured step along group
boundaries (``ablate.upge.partition.group_units``) and calls ``after_backward`` only where a
unit ends (when a minibatch has fewer groups than microbatches, a group spans several
microbatches and their contributions form one unit). Then E[grad_var/K] = tr Cov(ĝ) exactly for
equal group sizes and equal weights (each unit's ĝ_k has mean μ and variance V; Σ_k w_k‖ĝ_k − ĝ‖²
has mean (1 − 1/K)·V, and tr Cov(ĝ) = V/K); with unequal units it holds when Var(ĝ_k) ∝ 1/w_k
(units of equally sized groups). Checked against the covariance of the closed-form gradient over
20k independent batches of a softmax policy with group z-score advantages
(tests/test_metrics.py::test_grad_var_with_whole_group_units_is_unbiased_for_grpo_style_batches):
whole-group units are within MC error (±2%); random row chunks, which scatter a group over
microbatches, are off by −36% to −57% there (the sign depends on whether the within-group
correlation is positive, as there, or negative: +24% in the toy of reference/statistics.md §4).
Fewer than two units in a minibatch (e.g. one prompt) gives no variance information: grad_var
and grad_snr are omitted for that step.

Assumptions and biases.
* Units are exchangeable: a random set of prompts, whole groups each (see above). Chunks that
  split a group measure a variance that includes (or cancels) the within-group correlation.
* Unequal chunks: pass ``weight`` (the chunk's share of the normaliser: sequences for seq-mean
  aggregations, valid tokens for token-mean) to stay unbiased. Without it the equal-weight
  formula is biased upward by ‖μ‖²·Σ_k (K·w_k − 1)²/(K−1), μ the expected gradient (a spread
  of chunk sizes reads as variance): chunks of 3 and 1 samples add 0.5·‖μ‖² for K=2. With
  token-level normalisation the "samples" are sequences with random token counts, so the
  weights are themselves random and the estimate is approximate.
* K = 1 (no accumulation) gives no variance information: grad_var and grad_snr are ``None``
  (never NaN) and the trainer omits them; grad_norm is still reported. Microbatches with zero
  weight are ignored (they count as absent for K).
* If grad_var is exactly 0, grad_snr is +inf (written as null by the run store).
* Single process only: under DDP ``no_sync`` the last microbatch's ``.grad`` also carries the
  cross-rank average, so differences are not per-microbatch contributions. With AMP's
  GradScaler, call finish() before ``unscale_``: grad_var and grad_norm are then in scaled units
  (×S², ×S) and grad_snr is unaffected.

Cost. One extra gradient-sized buffer (the previous snapshot; float32 for half-precision grads),
and per microbatch an in-place subtract, a norm and a copy through ``torch._foreach_*`` kernels:
O(P) memory traffic per microbatch, O(K·P) per step, for P parameters; no forward/backward, no
per-parameter Python kernels beyond one foreach call per (device, dtype) group, and no host sync
until ``finish()`` (one ``.tolist()``). Per-tensor norms are taken in the gradient's dtype
(float32 for half grads) and their squares summed in float64 (float32 on MPS); the relative error
of each squared norm (~1e-7) keeps the subtraction Σ‖g_k‖²/w_k − ‖ĝ‖² accurate to about
1e-7·SNR, i.e. 1% at SNR 1e5, far beyond the SNRs of RL gradients. Measured on CPU (1 thread,
1.0M-param Llama, 64×48-token minibatch, busy 2-core machine): 0.9-1.5 ms per microbatch
(~1 ns per parameter), 0.5-3 % of the step time for K = 1, 2, 4.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch

_HALF = (torch.float16, torch.bfloat16)


class GradVarianceMeter:
    """Per-step gradient variance / norm / SNR from gradient-accumulation microbatches.

    ``params``: the trainable parameters (those with ``requires_grad``; others are ignored).
    ``record_contributions``: keep each microbatch's flat g_k in ``self.contributions`` (tests and
    debugging only: K extra gradient copies).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], record_contributions: bool = False):
        self.params: list[torch.nn.Parameter] = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("GradVarianceMeter: no parameters with requires_grad=True")
        for p in self.params:
            if p.layout != torch.strided:
                raise ValueError("GradVarianceMeter: only dense (strided) parameters are supported")
        self.record_contributions = bool(record_contributions)
        self.contributions: list[torch.Tensor] = []
        self._prev: list[Optional[torch.Tensor]] = [None] * len(self.params)
        self._have: list[bool] = [False] * len(self.params)  # prev holds this step's snapshot
        dev = self.params[0].device
        self._device = dev
        self._acc = torch.float32 if dev.type == "mps" else torch.float64
        self._sq: list[torch.Tensor] = []
        self._weights: list[Optional[float]] = []
        self._active = False

    # ------------------------------------------------------------------------------ protocol
    def start(self) -> None:
        """Begin an optimizer step; call right after ``zero_grad``."""
        self._have = [False] * len(self.params)
        self._sq = []
        self._weights = []
        self.contributions = []
        self._active = True

    def after_backward(self, weight: Optional[float] = None, last: bool = False) -> None:
        """Record the contribution of the microbatch whose backward just ran.

        ``weight``: this microbatch's share of the minibatch loss normaliser (any positive scale;
        normalised over the step). Give it for every microbatch of the step or for none.
        ``last``: no further backward before ``finish()``, so no snapshot of the gradient is kept
        (one gradient-sized copy less per step)."""
        if not self._active:
            raise RuntimeError("GradVarianceMeter.after_backward() called before start()")
        if weight is not None:
            weight = float(weight)
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"GradVarianceMeter: weight must be finite and >= 0, got {weight}")
        # groups: key -> (prev buffers that already hold a snapshot, their current grads)
        diff: dict[tuple, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        fresh: dict[tuple, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        vanished: list[torch.Tensor] = []  # grad set to None mid-step: contribution is −prev
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                if self._have[i]:
                    vanished.append(self._prev[i])
                    self._have[i] = False
                continue
            if g.layout != torch.strided:
                raise ValueError("GradVarianceMeter: sparse gradients are not supported")
            buf = self._prev[i]
            if buf is None or buf.shape != g.shape or buf.device != g.device:
                buf = torch.empty_like(g, dtype=torch.float32 if g.dtype in _HALF else g.dtype,
                                       memory_format=torch.contiguous_format)
                self._prev[i] = buf
                self._have[i] = False
            key = (g.device, g.dtype, buf.dtype)
            target = diff if self._have[i] else fresh
            bl, gl = target.setdefault(key, ([], []))
            bl.append(buf)
            gl.append(g)
            self._have[i] = True

        sq = torch.zeros((), dtype=self._acc, device=self._device)
        flat_parts: dict[int, torch.Tensor] = {}
        for bufs, grads in diff.values():
            torch._foreach_sub_(bufs, grads)  # buf = prev − grad = −g_k
            sq = sq + self._sq_norm(bufs)
            if self.record_contributions:
                for b in bufs:
                    flat_parts[id(b)] = (-b).reshape(-1).to(self._acc).to(self._device)
            if not last:
                torch._foreach_copy_(bufs, grads)
        for bufs, grads in fresh.values():  # previous snapshot is zero: g_k = grad
            sq = sq + self._sq_norm(grads)
            if not last:
                torch._foreach_copy_(bufs, grads)
            if self.record_contributions:
                for b, g in zip(bufs, grads):
                    flat_parts[id(b)] = g.reshape(-1).to(self._acc).to(self._device)
        if vanished:
            sq = sq + self._sq_norm(vanished)
            if self.record_contributions:
                for b in vanished:
                    flat_parts[id(b)] = (-b).reshape(-1).to(self._acc).to(self._device)
        self._sq.append(sq)
        self._weights.append(weight)
        if self.record_contributions:
            parts = []
            for i, p in enumerate(self.params):
                b = self._prev[i]
                part = flat_parts.get(id(b)) if b is not None else None
                parts.append(part if part is not None
                             else torch.zeros(p.numel(), dtype=self._acc, device=self._device))
            self.contributions.append(torch.cat(parts))

    def finish(self, reducer=None, scale: float = 1.0) -> dict[str, Optional[float]]:
        """Metrics of the step: ``train/grad_norm`` (float), ``train/grad_var`` and
        ``train/grad_snr`` (float, or None when fewer than two microbatches carried weight).
        One host sync. Leaves ``.grad`` untouched.

        Multi-worker (``reducer`` with ``all_reduce(t, op)``, called after the gradients were
        all-reduced): the microbatches of every worker count, each local contribution multiplied by
        ``scale`` (1/world when each worker's loss was scaled by the world size for DDP's average)."""
        if not self._active:
            raise RuntimeError("GradVarianceMeter.finish() called before start()")
        if reducer is not None:
            self._active = False
            return self._finish_distributed(reducer, scale)
        K = len(self._sq)
        if K == 0:
            raise RuntimeError("GradVarianceMeter.finish(): no after_backward() since start()")
        self._active = False
        ws = self._weights
        if all(w is None for w in ws):
            w = [1.0 / K] * K
        elif any(w is None for w in ws):
            raise ValueError("GradVarianceMeter: pass weight= for every microbatch of a step or for none")
        else:
            tot = sum(ws)  # type: ignore[arg-type]
            if tot <= 0:
                raise ValueError("GradVarianceMeter: microbatch weights sum to zero")
            w = [float(x) / tot for x in ws]  # type: ignore[arg-type]
        gnorm2 = self._sq_norm([p.grad for p in self.params if p.grad is not None])
        keep = [k for k in range(K) if w[k] > 0]
        k_eff = len(keep)
        if k_eff < 2:
            return {"train/grad_norm": math.sqrt(max(float(gnorm2), 0.0)),
                    "train/grad_var": None, "train/grad_snr": None}
        inv_w = torch.tensor([1.0 / w[k] for k in keep], dtype=self._acc, device=self._device)
        sq = torch.stack([self._sq[k] for k in keep])
        var = (k_eff / (k_eff - 1)) * ((sq * inv_w).sum() - gnorm2)
        var = var.clamp_min(0.0)
        gnorm_f, var_f = torch.stack([gnorm2, var]).tolist()  # the one host sync
        snr = gnorm_f / (var_f / k_eff) if var_f > 0 else math.inf
        return {"train/grad_norm": math.sqrt(max(gnorm_f, 0.0)), "train/grad_var": var_f,
                "train/grad_snr": snr}

    def _finish_distributed(self, reducer, scale: float) -> dict[str, Optional[float]]:
        """The estimator above over the microbatches of all workers (weights = each chunk's share of
        the global normaliser; equal weights when none were given)."""
        ws = self._weights
        given = [w for w in ws if w is not None]
        if given and len(given) != len(ws):
            raise ValueError("GradVarianceMeter: pass weight= for every microbatch of a step or for none")
        weighted = torch.tensor([1.0 if given else 0.0], dtype=torch.float64)
        any_weighted = float(reducer.all_reduce(weighted, "max")[0]) > 0
        raw = [float(w) if w is not None else 1.0 for w in ws] if any_weighted else [1.0] * len(ws)
        keep = [k for k in range(len(ws)) if raw[k] > 0]
        local = torch.zeros(3, dtype=torch.float64)  # [Σ sq_k / raw_k, Σ raw_k, K]
        if keep:
            inv = torch.tensor([1.0 / raw[k] for k in keep], dtype=self._acc, device=self._device)
            sq = torch.stack([self._sq[k] for k in keep]) * (scale * scale)
            local[0] = float((sq * inv).sum())
            local[1] = sum(raw[k] for k in keep)
            local[2] = len(keep)
        tot = reducer.all_reduce(local, "sum")
        gnorm2 = float(self._sq_norm([p.grad for p in self.params if p.grad is not None]))
        k_eff = int(tot[2])
        if k_eff < 2:
            return {"train/grad_norm": math.sqrt(max(gnorm2, 0.0)), "train/grad_var": None,
                    "train/grad_snr": None}
        var = max(0.0, (k_eff / (k_eff - 1)) * (float(tot[0]) * float(tot[1]) - gnorm2))
        snr = gnorm2 / (var / k_eff) if var > 0 else math.inf
        return {"train/grad_norm": math.sqrt(max(gnorm2, 0.0)), "train/grad_var": var,
                "train/grad_snr": snr}

    # ------------------------------------------------------------------------------ helpers
    def _sq_norm(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Σ‖t‖² over ``tensors`` as a 0-d accumulator-dtype tensor on the meter's device: one
        foreach norm per (device, dtype) group (float32 for half grads), then squares summed in
        float64."""
        by_dev: dict[tuple, list[torch.Tensor]] = {}
        for t in tensors:
            by_dev.setdefault((t.device, t.dtype), []).append(t)
        total = torch.zeros((), dtype=self._acc, device=self._device)
        for (_, dt), ts in by_dev.items():
            norms = torch._foreach_norm(ts, 2, dtype=torch.float32) if dt in _HALF else torch._foreach_norm(ts, 2)
            total = total + torch.stack(norms).to(self._device, self._acc).square().sum()
        return total
