"""Slot 1, the stabilisation mask M: which tokens keep their gradient (PPO clip and its relatives).

Every mask reads detached quantities only (ratio, advantages, entropy, ...) and returns a
``MaskResult``: ``keep`` (bool [B, T]) and named ``events`` (bool [B, T], each a subset of the
valid tokens that ``keep`` drops). This module also holds ``DemoRouting``, the one implementation
of "on-policy rows use one slot, demonstration rows another" shared by the mask, denominator and
likelihood ``DemoSplit`` variants.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, Callable, ClassVar, Literal, Mapping, Optional, Sequence

import torch

from ablate.spec.params import Frac, Ge, Gt, NonNeg, NonNegInt, Num, PosFrac, Positive, Prob, require
from ablate.component import ACTS_NEUTRAL, ACTS_ON_DRIFT, Acts, Needs, acts_of_all
from ablate.upge.slots.base import FAMILIES, Mask, MaskResult, Slot, TokenContext, flags

# --------------------------------------------------------------------------------------------
# Shared helpers (also used by denominator.py, likelihood.py and regularizers.py)
# --------------------------------------------------------------------------------------------


def valid_tokens(ctx: TokenContext) -> torch.Tensor:
    """bool [B, T]: the response tokens that count (``response_mask > 0``)."""
    return ctx.valid


def _result(events: dict[str, torch.Tensor], like: torch.Tensor) -> MaskResult:
    """keep = not any event (padding is kept: the aggregation ignores it anyway). One fresh
    buffer, the rest in place: at [B, T] sizes the cost is the buffers, not the logic."""
    evs = list({id(t): t for t in events.values()}.values())  # a tensor under two names: OR it once
    if not evs:
        return MaskResult(keep=torch.ones_like(like, dtype=torch.bool), events=events)
    dropped = evs[0] | evs[1] if len(evs) > 1 else evs[0].clone()
    for ev in evs[2:]:
        dropped |= ev
    return MaskResult(keep=dropped.logical_not_(), events=events)


def as_slot(family: str, name: str, value: Any) -> Slot:
    """A slot instance of ``family``: pass instances through, build variant names and
    ``{_target_: ...}`` mappings with the registry."""
    base = FAMILIES[family]
    if isinstance(value, base):
        return value
    if isinstance(value, (str, Mapping)):
        from ablate.registry import build  # lazy: the registry imports slot modules by name
        return build(family, value, field=name)
    raise ValueError(f"{name} must be a {base.__name__} (an instance, a conf/{family}/ variant name "
                     f"or a {{_target_: ...}} mapping), got {type(value).__name__}")


def restrict_rows(ctx: TokenContext, rows: torch.Tensor) -> TokenContext:
    """The same context with ``response_mask`` zeroed outside ``rows`` ([B] bool), so batch
    statistics (quantiles, covariances, sequence means) only see those rows."""
    rm = ctx.response_mask * rows.to(ctx.response_mask.dtype)[:, None]
    return dataclasses.replace(ctx, response_mask=rm)


class DemoRouting:
    """Mixin: route on-policy rows (``ctx.is_demo`` False) to ``on_policy`` and demonstration rows
    to ``demo``. Each part is evaluated on a context restricted to its own rows; rows are merged
    with ``merge``. Shared by ``mask.DemoSplit``, ``denominator.DemoSplit``, ``likelihood.DemoSplit``.
    """

    def acts(self) -> Acts:
        return acts_of_all([self.on_policy, self.demo])

    family: ClassVar[str]

    def __init__(self, on_policy: Any, demo: Any):
        self.on_policy = as_slot(self.family, "on_policy", on_policy)
        self.demo = as_slot(self.family, "demo", demo)

    def route(self, ctx: TokenContext, merge: Callable[[Any, Any, torch.Tensor], Any]) -> Any:
        is_demo = ctx.is_demo.to(device=ctx.response_mask.device).bool()
        n_demo = int(is_demo.sum())
        if n_demo == 0:
            return self.on_policy(ctx)
        if n_demo == is_demo.numel():
            return self.demo(ctx)
        on = self.on_policy(restrict_rows(ctx, ~is_demo))
        off = self.demo(restrict_rows(ctx, is_demo))
        return merge(on, off, is_demo[:, None])

    @staticmethod
    def merge_tensors(on: torch.Tensor, off: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return torch.where(rows, off, on)


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


class NoMask(Mask):
    """M ≡ 1: every token keeps its gradient (REINFORCE, SFT, GPG, CISPO, the UPGE paper's "1")."""

    ACTS = ACTS_NEUTRAL

    def __call__(self, ctx: TokenContext) -> MaskResult:
        return MaskResult(keep=torch.ones_like(ctx.response_mask, dtype=torch.bool), events={})


def _ppo_events(ctx: TokenContext, low: float, high: float,
                dual_clip: Optional[float]) -> tuple[dict[str, torch.Tensor], list]:
    """The clip events on ratio bounds ``low`` ≤ 1 ≤ ``high`` (and ``dual_clip`` > 1) and the
    (event, float flags) pairs for ``MaskResult.with_flags``."""
    # ρ is exactly 1 on padding (log ρ is zeroed there) and the strict comparisons with those
    # bounds are false at 1, so no event needs the valid mask; conjunctions are products of float
    # flags (see ``flags``)
    ratio, adv = ctx.ratio, ctx.advantages
    neg = flags(torch.lt, adv, 0)
    fl = {"clip_low": flags(torch.lt, ratio, low).mul_(neg),
          "clip_high": flags(torch.gt, ratio, high).mul_(flags(torch.gt, adv, 0))}
    if dual_clip is not None:
        fl["clip_dual"] = flags(torch.gt, ratio, dual_clip).mul_(neg)
    events = {k: f.bool() for k, f in fl.items()}
    return events, [(events[k], f) for k, f in fl.items()]


def _clip_mask(ctx: TokenContext, low: float, high: float, dual_clip: Optional[float]) -> MaskResult:
    """The PPO clip mask on ratio bounds [low, high] (``_ppo_events``), with the peer's clipped
    values (``clipped_bounds``); its events partition the dropped tokens (ρ = 1 on padding)."""
    events, pairs = _ppo_events(ctx, low, high, dual_clip)
    out = _result(events, ctx.response_mask).with_flags(pairs)
    bounds = [(events["clip_high"], high), (events["clip_low"], low)]
    if "clip_dual" in events:
        bounds.append((events["clip_dual"], float(dual_clip)))
    out.clipped_bounds, out.events_partition = bounds, True
    return out


class PPOClip(Mask):
    """PPO clip as a mask (PPO 1707.06347; DAPO clip-higher 2503.14476; verl `vanilla` dual clip).

    M = 0 where (A>0 ∧ ρ>1+ε_high) [``clip_high``], (A<0 ∧ ρ<1−ε_low) [``clip_low``] or, with
    ``dual_clip`` c > 1, (A<0 ∧ ρ>c) [``clip_dual``]. With π_ref = π_old and the identity likelihood
    −M·ρ·A has the gradient of −min(ρA, clip(ρ, 1−ε_l, 1+ε_h)A) (and of verl's min(·, −cA) for A<0).
    ``eps_high`` None means ε_high = ε_low (verl ``clip_ratio``, TRL ``epsilon_high=None``).
    """

    ACTS = ACTS_ON_DRIFT  # ρ ≡ 1 on-policy: nothing is clipped

    def __init__(self, eps_low: Frac = 0.2, eps_high: Optional[NonNeg] = None,
                 dual_clip: Optional[Annotated[Num, Gt(1)]] = None):
        self.eps_low, self.eps_high = eps_low, eps_low if eps_high is None else eps_high
        self.dual_clip = dual_clip

    def __call__(self, ctx: TokenContext) -> MaskResult:
        return _clip_mask(ctx, 1.0 - self.eps_low, 1.0 + self.eps_high, self.dual_clip)


class SequenceClip(Mask):
    """GSPO sequence-level clip (2507.18071; verl `gspo`, TRL importance_sampling_level="sequence").

    On s_i = exp(mean_t log ρ_{i,t}) broadcast to every token of row i: M = 0 where
    (A>0 ∧ s>1+ε_high) or (A<0 ∧ s<1−ε_low), with the token's own advantage (GSPO-token form).
    Events ``seq_clip_high``/``seq_clip_low``; the same tensors are also reported as
    ``clip_high``/``clip_low`` so ``train/clip_frac_*`` dashboards line up with token-level clips.

    ``max_log_ratio`` (verl ``compute_policy_loss_gspo``: 10.0; TRL: none, the default) reproduces
    verl's ``clamp(log s, max=10)``, which caps the weight *and* zeroes the gradient of every token
    of a row with log s_i > cap (event ``seq_ratio_cap``; only A < 0 rows are not already clipped).
    Pair it with ``denominator.max_log_ratio`` at the same cap for verl's weight value.
    """

    ACTS = ACTS_ON_DRIFT  # ρ ≡ 1 on-policy: nothing is clipped

    def __init__(self, eps_low: Frac = 3e-4, eps_high: Optional[NonNeg] = 4e-4,
                 max_log_ratio: Optional[Num] = None):
        self.eps_low, self.eps_high = eps_low, eps_low if eps_high is None else eps_high
        self.max_log_ratio = max_log_ratio

    def __call__(self, ctx: TokenContext) -> MaskResult:
        log_s = ctx.seq_log_ratio[:, None]
        s = torch.exp(log_s)
        adv, valid = ctx.advantages, ctx.valid_flags
        low_f = flags(torch.lt, adv, 0).mul_(valid).mul_((s < 1.0 - self.eps_low).to(valid.dtype))
        high_f = flags(torch.gt, adv, 0).mul_(valid).mul_((s > 1.0 + self.eps_high).to(valid.dtype))
        low, high = low_f.bool(), high_f.bool()
        events = {"seq_clip_low": low, "seq_clip_high": high, "clip_low": low, "clip_high": high}
        if self.max_log_ratio is not None:
            events["seq_ratio_cap"] = valid_tokens(ctx) & (log_s > self.max_log_ratio) & ~low & ~high
        out = _result(events, ctx.response_mask).with_flags([(low, low_f), (high, high_f)])
        # the peer's min/clip value on a clipped row: clip(s)·Â with s at its bound (pg_loss_peer)
        out.clipped_bounds = [(high, 1.0 + self.eps_high), (low, 1.0 - self.eps_low)]
        out.events_partition = True  # events are valid-flag products; A's sign and ~low, ~high split them
        return out


class ClipCov(Mask):
    """Clip-Cov (Entropy Mechanism, 2505.22617; verl `clip_cov`): PPO clip plus random high-cov drops.

    Among valid tokens not already clipped, cov = (logp − mean logp)(A − mean A) (means over the
    valid tokens of the microbatch); up to max(⌊clip_ratio·N_valid⌋, 1) tokens (verl's count; the
    paper writes ⌈·⌉, equal whenever clip_ratio·N < 2) with cov_lb < cov < cov_ub are drawn
    uniformly at random and dropped (event ``cov``). The draw uses a ``torch.Generator`` seeded
    with ``seed`` at construction, so a fresh instance reproduces the same sequence of masks.
    """

    def __init__(self, eps_low: Frac = 0.2, eps_high: Optional[NonNeg] = None, clip_ratio: PosFrac = 2e-4,
                 cov_lb: Num = 1.0, cov_ub: Num = 5.0, seed: NonNegInt = 0):
        require(cov_ub > cov_lb, self, "cov_ub", cov_ub, f"a number > cov_lb ({cov_lb:g})")
        self.eps_low, self.eps_high = eps_low, eps_low if eps_high is None else eps_high
        self.clip_ratio, self.cov_lb, self.cov_ub, self.seed = clip_ratio, cov_lb, cov_ub, seed
        self._gen = torch.Generator().manual_seed(seed)

    def __call__(self, ctx: TokenContext) -> MaskResult:
        events, _ = _ppo_events(ctx, 1.0 - self.eps_low, 1.0 + self.eps_high, None)
        valid = valid_tokens(ctx)
        cov_ev = torch.zeros_like(valid)
        n_valid = int(valid.sum())
        if n_valid > 0:
            lp = torch.where(valid, ctx.logp.detach(), torch.zeros_like(ctx.response_mask))
            adv = torch.where(valid, ctx.advantages, torch.zeros_like(ctx.response_mask))
            cov = (adv - adv.sum() / n_valid) * (lp - lp.sum() / n_valid)
            cand = valid & ~events["clip_low"] & ~events["clip_high"] & (cov > self.cov_lb) & (cov < self.cov_ub)
            idx = cand.flatten().nonzero().squeeze(1)
            k = min(max(int(self.clip_ratio * n_valid), 1), idx.numel())
            if k > 0:
                perm = torch.randperm(idx.numel(), generator=self._gen)[:k].to(idx.device)
                flat = cov_ev.flatten()
                flat[idx[perm]] = True
                cov_ev = flat.view_as(valid)
        events["cov"] = cov_ev
        return _result(events, ctx.response_mask)


class TopEntropy(Mask):
    """Keep only high-entropy tokens ("Beyond the 80/20 rule", 2506.01939; TRL top_entropy_quantile).

    keep ⇔ H ≥ quantile(H over valid tokens, 1 − quantile) with linear interpolation (torch.quantile,
    as TRL); ties at the threshold are kept. Statistics are over the microbatch the estimator sees.
    Event ``entropy``. Declares ``Needs(entropy=True)`` so the trainer computes ``ctx.entropy``.
    """

    NEEDS: ClassVar[Needs] = Needs(entropy=True)
    _QUANTILE_MAX_NUMEL = 1 << 24  # torch.quantile's input limit; larger inputs use a sort

    def __init__(self, quantile: PosFrac = 0.2):
        self.quantile = quantile

    @classmethod
    def _threshold(cls, vals: torch.Tensor, q: float) -> torch.Tensor:
        if vals.numel() <= cls._QUANTILE_MAX_NUMEL:
            return torch.quantile(vals, q)
        s = vals.sort().values  # same linear interpolation as torch.quantile
        pos = q * (s.numel() - 1)
        lo, hi = int(math.floor(pos)), int(math.ceil(pos))
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)

    def __call__(self, ctx: TokenContext) -> MaskResult:
        if ctx.entropy is None:
            raise ValueError("TopEntropy needs ctx.entropy (per-token entropy of the current policy); "
                             "the trainer computes it when a component declares Needs(entropy=True)")
        valid = valid_tokens(ctx)
        h = ctx.entropy.detach()
        if h.dtype not in (torch.float32, torch.float64):
            h = h.float()
        if not bool(valid.any()):
            return _result({"entropy": torch.zeros_like(valid)}, ctx.response_mask)
        thr = self._threshold(h[valid], 1.0 - self.quantile)
        return _result({"entropy": valid & ~(h >= thr)}, ctx.response_mask)


class DivergenceMask(Mask):
    """DPPO divergence mask ("Rethinking the Trust Region in LLM RL", 2602.04879; verl dppo_tv/dppo_kl).

    Anchored to the behaviour policy, on probabilities p = π_θ(y_t), q = π_old(y_t):
    ``tv``: keep if A>0 ∧ p−q ≤ δ_high, or A<0 ∧ p−q ≥ −δ_low;
    ``kl``: with b = KL(Bern(q) ‖ Bern(p)) = q·log(q/p) + (1−q)·log((1−q+1e-8)/(1−p+1e-8)) (verl),
    drop only moves in the direction the advantage pushes: A>0 drops p>q ∧ b>δ_high, A<0 drops
    p<q ∧ b>δ_low. A = 0 tokens are kept (verl sends them to the A<0 branch; they carry no gradient
    either way, only ``mask_frac`` differs). Event ``divergence``. Pair with a DPPO denominator
    (``dppo_truncated``: sg(min(ρ, 20)); ``dppo_truncated_verl_example``: C = 10000) for verl's loss.
    """

    ACTS = ACTS_ON_DRIFT  # ρ ≡ 1 on-policy: nothing is clipped

    def __init__(self, kind: Literal["tv", "kl"] = "tv", delta_low: Positive = 0.1,
                 delta_high: Positive = 0.1):
        self.kind = kind
        self.delta_low = delta_low
        self.delta_high = delta_high

    def __call__(self, ctx: TokenContext) -> MaskResult:
        valid = valid_tokens(ctx)
        zeros = torch.zeros_like(ctx.response_mask)
        lp = torch.where(valid, ctx.logp.detach(), zeros)  # padding → p = q = 1, never dropped
        old = torch.where(valid, ctx.old_logp, zeros)
        p, q = torch.exp(lp), torch.exp(old)
        if self.kind == "tv":
            ok_pos = (p - q) <= self.delta_high
            ok_neg = (p - q) >= -self.delta_low
        else:
            b = q * (old - lp) + (1.0 - q) * torch.log((1.0 - q + 1e-8) / (1.0 - p + 1e-8))
            ok_pos = (b <= self.delta_high) | (p <= q)
            ok_neg = (b <= self.delta_low) | (p >= q)
        adv = ctx.advantages
        drop = ((adv > 0) & ~ok_pos) | ((adv < 0) & ~ok_neg)
        return _result({"divergence": valid & drop}, ctx.response_mask)


class AdaptiveClip(Mask):
    """BAPO adaptive clip bounds ("BAPO: Stabilizing Off-Policy RL for LLMs via Balanced Policy
    Optimization with Adaptive Clipping", 2510.18927; WooooDyy/BAPO recipe/bapo/policy_loss.py).

    Bounds are ratio bounds [c_low, c_high] (not 1±ε), chosen anew on every call (verl calls its
    loss once per micro-batch; no state across calls). Contributions use the clipped value
    ρ̃·Â with ρ̃ = min(ρ, c_high) for Â ≥ 0 and max(ρ, c_low) for Â < 0 over the valid tokens;
    P = Σ max(ρ̃Â, 0), N = Σ max(−ρ̃Â, 0), ratio = P/(N + eps) (inf when N = 0). While ratio <
    ``target``: raise c_low by ``low_step`` up to ``low_max``; then, while still below, raise c_high by
    ``high_step`` up to ``high_max`` (the released loop, float arithmetic as written there).
    Then PPO clip on those bounds plus verl's dual clip (A<0 ∧ ρ>``dual_clip``), as in the recipe.

    As released, raising c_low can only lower P/N (the clipped value max(ρ, c_low)·Â of a negative
    token grows in magnitude), so whenever the target is unmet at the start c_low ends at low_max.
    """

    ACTS = ACTS_ON_DRIFT  # ρ ≡ 1 on-policy: nothing is clipped

    def __init__(self, low_start: PosFrac = 0.8, low_max: Prob = 0.95, low_step: NonNeg = 0.05,
                 high_start: Annotated[Num, Ge(1)] = 1.2, high_max: Num = 2.0, high_step: NonNeg = 0.1,
                 target: NonNeg = 0.5, eps: NonNeg = 1e-8, dual_clip: Optional[Annotated[Num, Gt(1)]] = 3.0):
        require(low_max >= low_start, self, "low_max", low_max, f"a number >= low_start ({low_start:g})")
        require(high_max >= high_start, self, "high_max", high_max, f"a number >= high_start ({high_start:g})")
        self.low_start = low_start
        self.low_max = low_max
        self.low_step = low_step
        self.high_start = high_start
        self.high_max = high_max
        self.high_step = high_step
        self.target = target
        self.eps = eps
        self.dual_clip = dual_clip

    def _pos_neg_ratio(self, ratio: torch.Tensor, adv: torch.Tensor, rm: torch.Tensor,
                       low: float, high: float) -> float:
        eff = torch.where(adv >= 0, ratio.clamp(max=high), ratio.clamp(min=low))
        contrib = eff * adv * rm
        pos = float(contrib.clamp(min=0).sum())
        neg = float((-contrib.clamp(max=0)).sum())
        return math.inf if neg <= 0 else pos / (neg + self.eps)

    def bounds(self, ctx: TokenContext) -> tuple[float, float]:
        """(c_low, c_high) the released search picks for this microbatch."""
        ratio, adv, rm = ctx.ratio, ctx.advantages, ctx.response_mask
        low, high = self.low_start, self.high_start
        r = self._pos_neg_ratio(ratio, adv, rm, low, high)
        while r < self.target and low < self.low_max and self.low_step > 0:
            low = min(low + self.low_step, self.low_max)
            r = self._pos_neg_ratio(ratio, adv, rm, low, high)
        while r < self.target and high < self.high_max and self.high_step > 0:
            high = min(high + self.high_step, self.high_max)
            r = self._pos_neg_ratio(ratio, adv, rm, low, high)
        return low, high

    def __call__(self, ctx: TokenContext) -> MaskResult:
        low, high = self.bounds(ctx)  # low ≤ low_max ≤ 1 ≤ high_start ≤ high, as _ppo_events needs
        return _clip_mask(ctx, low, high, self.dual_clip)


def _merge_events(results: Sequence[MaskResult]) -> dict[str, torch.Tensor]:
    events: dict[str, torch.Tensor] = {}
    for r in results:
        for name, ev in r.events.items():
            events[name] = events[name] | ev if name in events else ev
    return events


class OffPolicySequenceMask(Mask):
    """Off-policy sequence masking (DeepSeek-V3.2; TRL ``off_policy_mask_threshold``): drop every token
    of a row whose advantage is negative and whose mean per-token log π_old − log π_θ exceeds δ.

    TRL ``get_off_policy_mask``: seq_kl = Σ_t (log π_sampling − log π_θ) / max(|o|, 1) over the
    completion mask; keep = Â ≥ 0 ∨ seq_kl ≤ δ (per token with the token's advantage). Event
    ``off_policy``."""

    ACTS = ACTS_ON_DRIFT  # log π_old − log π_θ ≡ 0 on-policy

    def __init__(self, threshold: Num = 0.5):
        self.threshold = threshold

    def __call__(self, ctx: TokenContext) -> MaskResult:
        seq_kl = (-ctx.log_ratio).sum(-1) / ctx.response_mask.sum(-1).clamp_min(1.0)
        drop = valid_tokens(ctx) & (ctx.advantages < 0) & (seq_kl[:, None] > self.threshold)
        return _result({"off_policy": drop}, ctx.response_mask)


class AllOf(Mask):
    """Logical AND of several masks (e.g. clip-higher ∧ top-entropy); events OR-ed per name."""

    def acts(self) -> Acts:
        return acts_of_all(self.masks)

    def __init__(self, masks: list):
        require(isinstance(masks, (list, tuple)) and len(masks) > 0, self, "masks", masks,
                "a non-empty list of masks")
        self.masks = [as_slot("mask", f"masks[{i}]", m) for i, m in enumerate(masks)]

    def __call__(self, ctx: TokenContext) -> MaskResult:
        results = [m(ctx) for m in self.masks]
        keep = results[0].keep
        for r in results[1:]:
            keep = keep & r.keep
        return MaskResult(keep=keep, events=_merge_events(results))


class DemoSplit(DemoRouting, Mask):
    """Different masks for on-policy and demonstration rows (LUFFY 2504.14945: clip on-policy only)."""

    def __init__(self, on_policy: Any, demo: Any):
        DemoRouting.__init__(self, on_policy, demo)

    @staticmethod
    def _merge(on: MaskResult, off: MaskResult, rows: torch.Tensor) -> MaskResult:
        keep = torch.where(rows, off.keep, on.keep)
        events = {}
        for name in list(on.events) + [n for n in off.events if n not in on.events]:
            a = on.events.get(name)
            b = off.events.get(name)
            a = torch.zeros_like(keep) if a is None else a
            b = torch.zeros_like(keep) if b is None else b
            events[name] = torch.where(rows, b, a)
        return MaskResult(keep=keep, events=events)

    def __call__(self, ctx: TokenContext) -> MaskResult:
        return self.route(ctx, self._merge)
