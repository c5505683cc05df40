"""Slot 3, the advantage Â: one estimator class per family, every peer convention a named parameter.

Each class maps a RolloutBatch to Â [B, T]. Outcome estimators compute one scalar per response
(``per_response``, [B]) and broadcast it over the valid tokens (× response_mask); REINFORCE++ and the
batch-whitened variants are token-level. Shared rules (peer_semantics §8.1, §2.1):

* NaN rewards (unscorable) are left out of every statistic and get Â = 0 (TRL).
* Groups are rows with the same ``group_ids`` value, in any order; a group whose rows (of those in
  the statistics) all hold the same reward gets Â = 0 exactly, for every group-baseline estimator.
* ``singleton`` decides groups with a single member in the statistics: ``"raw"`` = verl (mean 0,
  std 1 ⇒ Â = raw reward), ``"zero"`` = TRL / verl ``rloo_vectorized`` (Â = 0).
* ``include_demos`` (where offered) decides whether demonstration rows (``batch.is_demo``) enter the
  group statistics (LUFFY/SRFT: on ∪ off) or not (HPT's split version: on-policy only); demos always
  receive an advantage computed from the group statistics.
* Zero-length responses count in group statistics by their reward, but have no tokens, so their Â
  row is all zero and they weigh nothing in token-weighted whitening.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Annotated, ClassVar, Literal, Optional

import torch

from ablate.component import Needs
from ablate.spec.params import Ge, Lt, NonNeg, Num, OpenProb, PosInt, Positive, Prob, require
from ablate.errors import ConfigError
from ablate.upge import functional as F
from ablate.upge.batch import RolloutBatch
from ablate.upge.kl_reward import KL_REWARD_ESTIMATORS, token_kl
from ablate.upge.slots.base import Advantage

SINGLETON_MODES = ("raw", "zero")
WHITEN_MODES = ("token", "sequence", "none")
ZERO_STD_MODES = ("eps", "one")
Placement = Literal[F.EPS_PLACEMENTS]  # where ε goes in a std division (peers disagree)


def _out_dtype(batch: RolloutBatch) -> torch.dtype:
    dts = [t.dtype for t in (batch.rewards, batch.response_mask) if t is not None and t.is_floating_point()]
    out = dts[0] if dts else torch.float32
    for d in dts[1:]:
        out = torch.promote_types(out, d)
    return out


def _rewards(batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards as float64 [B] with NaN replaced by 0, valid [B] bool = reward not NaN)."""
    r = batch.rewards.reshape(-1).to(torch.float64)
    if r.shape[0] != batch.batch_size:
        raise ValueError(f"batch.rewards: expected shape [{batch.batch_size}], got {tuple(batch.rewards.shape)}")
    valid = ~torch.isnan(r)
    return torch.where(valid, r, torch.zeros_like(r)), valid


def _broadcast(a: torch.Tensor, batch: RolloutBatch) -> torch.Tensor:
    dt = _out_dtype(batch)
    return a.to(dt)[:, None] * batch.response_mask.to(dt)


def _std_conventions(obj: Advantage, eps: float, unbiased: bool, eps_placement: str) -> None:
    """Set the std-normalisation conventions peers disagree on (eps, Bessel, where ε goes)."""
    obj.eps, obj.unbiased, obj.eps_placement = eps, unbiased, eps_placement


class _Outcome(Advantage):
    """One scalar per response, broadcast over its valid tokens."""

    zero_constant_groups: ClassVar[bool] = True

    def _stats_rows(self, batch: RolloutBatch, valid: torch.Tensor) -> torch.Tensor:
        if getattr(self, "include_demos", True):
            return valid
        return valid & ~batch.demo_mask()

    def _compute(self, r: torch.Tensor, valid: torch.Tensor, stats: torch.Tensor,
                 batch: RolloutBatch) -> torch.Tensor:
        raise NotImplementedError

    def per_response(self, batch: RolloutBatch) -> torch.Tensor:
        """Â per response, float64 [B] (0 for NaN rewards)."""
        r, valid = _rewards(batch)
        stats = self._stats_rows(batch, valid)
        a = self._compute(r, valid, stats, batch)
        if self.zero_constant_groups:
            const = F.group_all_equal(r, batch.group_ids, stats)
            # rows equal to their constant group's value (a demo left out of the stats may differ)
            grp_val = F.group_max(r, batch.group_ids, stats)
            a = torch.where(const & (r == grp_val), torch.zeros_like(a), a)
        return torch.where(valid, a, torch.zeros_like(a))

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        return _broadcast(self.per_response(batch), batch)


class _KLInReward:
    """Mixin: token KL penalty −β·kl_t folded into the reward before the advantage (REINFORCE++,
    RLOO, P3O). Only with β > 0 does it need the prescoring pass and the reference model."""

    kl_coef: NonNeg = 0.0
    kl_estimator: str = "k1"
    kl_clamp: Optional[float] = None

    def _init_kl(self, kl_coef: float, kl_estimator: str, kl_clamp: Optional[float]) -> None:
        self.kl_coef, self.kl_estimator, self.kl_clamp = kl_coef, kl_estimator, kl_clamp

    def needs(self) -> Needs:
        base = super().needs()  # type: ignore[misc]
        if self.kl_coef > 0:
            return base | Needs(logp_before_advantage=True, ref_model=True)
        return base

    def kl_tokens(self, batch: RolloutBatch) -> torch.Tensor:
        """β·kl_t per valid token, float64 [B, T] (zeros when β = 0)."""
        if self.kl_coef == 0:
            return torch.zeros(batch.response_mask.shape, dtype=torch.float64,
                               device=batch.response_mask.device)
        return self.kl_coef * token_kl(batch, self.kl_estimator, self.kl_clamp)


def _singleton(a: torch.Tensor, single: torch.Tensor, raw: torch.Tensor, mode: str) -> torch.Tensor:
    return torch.where(single, raw if mode == "raw" else torch.zeros_like(a), a)


# --------------------------------------------------------------------------------------------------
# constant-type advantages
# --------------------------------------------------------------------------------------------------

class Constant(Advantage):
    """Â ≡ value on every valid token (SFT row of UPGE Table 1; rewards are ignored)."""

    def __init__(self, value: Num = 1.0):
        self.value = value

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        dt = _out_dtype(batch)
        return torch.full(batch.response_mask.shape, self.value, dtype=dt) * batch.response_mask.to(dt)


class Sign(_Outcome):
    """Â = +1 if reward > threshold else −1 (REINFORCE row of UPGE Table 1, Ahmadian et al. 2024).

    ``zero_uniform_groups``: Â = 0 for groups of ≥ 2 rows that all hold the same reward (Reinforce-Rej
    as coded in Minimal-RL ``compute_reinforce_rej_outcome_advantage``: std = 0 ⇒ 0; the rows stay in
    the batch, unlike pipeline=reject_uniform which drops them).
    """

    zero_constant_groups = False

    def __init__(self, threshold: Num = 0.5, zero_uniform_groups: bool = False):
        self.threshold, self.zero_constant_groups = threshold, zero_uniform_groups

    def _compute(self, r, valid, stats, batch):
        return torch.where(r > self.threshold, torch.ones_like(r), -torch.ones_like(r))


# --------------------------------------------------------------------------------------------------
# group baselines
# --------------------------------------------------------------------------------------------------

class GroupZScore(_Outcome):
    """Â = (r − mean_g)/(std_g + ε) (GRPO, Shao et al. 2024; defaults = verl ``grpo`` 2026-08)."""

    group_relative = True

    def __init__(self, eps: NonNeg = 1e-6, unbiased: bool = True, eps_placement: Placement = "std",
                 singleton: Literal[SINGLETON_MODES] = "raw", include_demos: bool = True, zero_std: Literal[ZERO_STD_MODES] = "eps"):
        _std_conventions(self, eps, unbiased, eps_placement)
        self.singleton = singleton
        self.include_demos = include_demos
        # "one": std == 0 replaced by 1 before dividing (HPT compute_grpo_outcome_advantage_split)
        self.zero_std = zero_std

    def _compute(self, r, valid, stats, batch):
        gs = F.group_stats(r, batch.group_ids, stats, unbiased=self.unbiased)
        single = gs.count <= 1
        mean = torch.where(single, torch.zeros_like(gs.mean), gs.mean)
        var = torch.where(single, torch.ones_like(gs.var), torch.nan_to_num(gs.var, nan=1.0))
        if self.zero_std == "one":
            var = torch.where(var == 0, torch.ones_like(var), var)
        a = F.divide_by_std(r - mean, var, self.eps, self.eps_placement)
        # verl: singleton ⇒ mean 0, std 1 ⇒ r/(1+ε) ("raw"); TRL: r − r = 0 ("zero")
        return torch.where(single & (self.singleton == "zero"), torch.zeros_like(a), a)


class GroupCentered(_Outcome):
    """Â = r − mean_g (Dr. GRPO, Liu et al. 2025; verl ``norm_adv_by_std_in_grpo=False``, TRL ``scale_rewards="none"``)."""

    group_relative = True

    def __init__(self, singleton: Literal[SINGLETON_MODES] = "raw", include_demos: bool = True):
        self.singleton = singleton
        self.include_demos = include_demos

    def _compute(self, r, valid, stats, batch):
        gs = F.group_stats(r, batch.group_ids, stats)
        return _singleton(r - gs.mean, gs.count <= 1, r, self.singleton)


class LeaveOneOut(_KLInReward, _Outcome):
    """Â = R − mean of the other group members (RLOO, Ahmadian et al. 2024; verl ``rloo``/``rloo_vectorized``, TRL).

    With ``kl_coef`` β > 0 the reward is R = r − β·Σ_t kl_t, the sequence KL to the reference folded
    into the reward (the RLOO paper; TRL ``RLOOTrainer`` with k1)."""

    group_relative = True

    def __init__(self, singleton: Literal[SINGLETON_MODES] = "raw", include_demos: bool = True, kl_coef: NonNeg = 0.0,
                 kl_estimator: Literal[KL_REWARD_ESTIMATORS] = "k1", kl_clamp: Optional[NonNeg] = None):
        self.singleton = singleton
        self.include_demos = include_demos
        self._init_kl(kl_coef, kl_estimator, kl_clamp)

    def per_response(self, batch: RolloutBatch) -> torch.Tensor:
        if self.kl_coef > 0:
            shaped = batch.rewards.reshape(-1).to(torch.float64) - self.kl_tokens(batch).sum(-1)
            batch = _with_rewards(batch, shaped)
        return super().per_response(batch)

    def _compute(self, r, valid, stats, batch):
        s = F.group_sum(r, batch.group_ids, stats)
        n = F.group_count(batch.group_ids, stats)
        own = stats.to(r.dtype)
        others = n - own  # rows outside the statistics (demos left out) use every member
        base = (s - own * r) / others.clamp_min(1)
        return _singleton(r - base, others < 1, r, self.singleton)


class LengthWeightedBaseline(_Outcome):
    """Â = r − Σ_j L_j r_j / Σ_j L_j within the group (OPO, arXiv 2505.23585; verl ``opo``)."""

    group_relative = True

    def __init__(self, singleton: Literal[SINGLETON_MODES] = "raw"):
        self.singleton = singleton

    def _compute(self, r, valid, stats, batch):
        lengths = batch.response_mask.to(torch.float64).sum(-1)
        base = F.group_mean(r, batch.group_ids, stats, weights=lengths)  # Σ L = 0 ⇒ baseline 0
        n = F.group_count(batch.group_ids, stats)
        return _singleton(r - base, n <= 1, r, self.singleton)  # verl: singleton ⇒ baseline 0


GPG_ALPHA = ("authors", "verl")


class GPG(_Outcome):
    """Â = α(r − mean_g)/f_norm (GPG, arXiv 2504.02546).

    ``alpha="authors"`` (default): α = B/(B − M), M = samples in all-equal groups, as the authors'
    code (AMAP-ML/GPG open-r1/src/open_r1/gpg_trainer.py: loss / inverse_alpha, inverse_alpha =
    informative groups / groups). ``alpha="verl"``: verl's port, α = B / #non-zero rewards."""

    group_relative = True

    def __init__(self, f_norm: Num = 1.0, singleton: Literal[SINGLETON_MODES] = "raw",
                 alpha: Literal[GPG_ALPHA] = "authors"):
        require(f_norm != 0, self, "f_norm", f_norm, "a non-zero number")
        self.f_norm, self.singleton, self.alpha_mode = f_norm, singleton, alpha

    def alpha(self, batch: RolloutBatch) -> float:
        """authors: B/(B − M) over the valid rows (1 when every group is all-equal: the gradient is
        zero then, where the authors' code would divide by zero). verl: bsz / count_nonzero(scores)
        (1 if no reward is non-zero); NaN-reward rows are not counted in B."""
        r, valid = _rewards(batch)
        if self.alpha_mode == "authors":
            dead = int((F.group_all_equal(r, batch.group_ids, valid) & valid).sum())
            live = int(valid.sum()) - dead
            return float(valid.sum()) / live if live else 1.0
        nnz = int(((r != 0) & valid).sum())
        return float(valid.sum()) / nnz if nnz else 1.0

    def _compute(self, r, valid, stats, batch):
        gs = F.group_stats(r, batch.group_ids, stats)
        centred = _singleton(r - gs.mean, gs.count <= 1, r, self.singleton)
        return self.alpha(batch) * centred / self.f_norm


class BatchZScore(_Outcome):
    """Â = (r − mean_g)/(std_batch + ε) (TRL ``scale_rewards="batch"``, Lite-PPO arXiv 2508.08221)."""

    def __init__(self, eps: NonNeg = 1e-4, unbiased: bool = True, eps_placement: Placement = "std",
                 singleton: Literal[SINGLETON_MODES] = "zero"):
        _std_conventions(self, eps, unbiased, eps_placement)
        self.singleton = singleton

    def _compute(self, r, valid, stats, batch):
        gs = F.group_stats(r, batch.group_ids, stats)
        var = torch.nan_to_num(F.masked_var(r, stats, unbiased=self.unbiased), nan=0.0)
        a = F.divide_by_std(r - gs.mean, var, self.eps, self.eps_placement)
        return _singleton(a, gs.count <= 1, F.divide_by_std(r, var, self.eps, self.eps_placement),
                          self.singleton)


# --------------------------------------------------------------------------------------------------
# batch-whitened (token-level) estimators
# --------------------------------------------------------------------------------------------------

class ReinforcePlusPlus(_KLInReward, Advantage):
    """Â_t = whiten(discounted return-to-go of the token rewards) over the batch's tokens (REINFORCE++, arXiv 2501.03262; verl ``reinforce_plus_plus``).

    Token rewards: the outcome reward on the last token, and with ``kl_coef`` β > 0 also −β·kl_t on
    every token (the paper's KL in the reward; OpenRLHF ``compute_reward``, verl ``apply_kl_penalty``)."""

    def __init__(self, gamma: Prob = 1.0, eps: NonNeg = 1e-8, unbiased: bool = True, eps_placement: Placement = "var",
                 kl_coef: NonNeg = 0.0, kl_estimator: Literal[KL_REWARD_ESTIMATORS] = "k1", kl_clamp: Optional[NonNeg] = None):
        self.gamma = gamma
        _std_conventions(self, eps, unbiased, eps_placement)
        self._init_kl(kl_coef, kl_estimator, kl_clamp)

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        r, valid = _rewards(batch)
        mask = batch.response_mask.to(torch.float64) * valid.to(torch.float64)[:, None]
        token_rewards = F.place_on_last_token(r, mask) - self.kl_tokens(batch) * mask
        returns = F.return_to_go(token_rewards, mask, self.gamma)
        a = F.masked_whiten(returns, mask, unbiased=self.unbiased, eps=self.eps, eps_placement=self.eps_placement)
        return a.to(_out_dtype(batch)) * batch.response_mask.to(_out_dtype(batch))


class ReinforcePlusPlusBaseline(Advantage):
    """Â = whiten(r − mean_g) over the batch's valid tokens (REINFORCE++-baseline; verl ``reinforce_plus_plus_baseline``, OpenRLHF ``reinforce_baseline`` = unbiased False)."""

    def __init__(self, eps: NonNeg = 1e-8, unbiased: bool = True, eps_placement: Placement = "var",
                 singleton: Literal[SINGLETON_MODES] = "raw"):
        _std_conventions(self, eps, unbiased, eps_placement)
        self.singleton = singleton

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        # centring first (all-equal groups give exactly 0 here); whitening then shifts every token by
        # the batch mean, as verl/OpenRLHF do, so all-equal groups end at −μ/σ, not at 0.
        centred = GroupCentered(singleton=self.singleton).per_response(batch)
        _, valid = _rewards(batch)
        mask = batch.response_mask.to(torch.float64) * valid.to(torch.float64)[:, None]
        a = F.masked_whiten(centred[:, None].expand(mask.shape), mask, unbiased=self.unbiased,
                            eps=self.eps, eps_placement=self.eps_placement)
        return a.to(_out_dtype(batch)) * batch.response_mask.to(_out_dtype(batch))


class DecoupledMultiReward(Advantage):
    """Â = whiten(Σ_k w_k · group-z-score(reward_k)) (GDPO, arXiv 2601.05242; verl ``gdpo``, TRL ``normalize_then_sum``)."""

    def __init__(self, weights: Optional[list[float]] = None, eps: NonNeg = 1e-6, unbiased: bool = True,
                 eps_placement: Placement = "std", singleton: Literal[SINGLETON_MODES] = "raw",
                 whiten: Literal[WHITEN_MODES] = "token", whiten_eps: NonNeg = 1e-8,
                 whiten_eps_placement: Placement = "var"):
        self.weights = None if weights is None else [float(w) for w in weights]
        _std_conventions(self, eps, unbiased, eps_placement)
        self.singleton = singleton
        # "token": verl masked_whiten over valid tokens; "sequence": TRL z-score over responses
        self.whiten, self.whiten_eps, self.whiten_eps_placement = whiten, whiten_eps, whiten_eps_placement

    def per_component(self, batch: RolloutBatch) -> torch.Tensor:
        """Group z-score of each reward component, float64 [B, K] (0 where the component is NaN)."""
        rc = batch.reward_components
        if rc is None:
            raise ValueError("batch.reward_components is None: DecoupledMultiReward (GDPO) needs the "
                             "named rewards [B, K] in RolloutBatch.reward_components")
        rc = rc.to(torch.float64).reshape(batch.batch_size, -1)
        if self.weights is not None and len(self.weights) != rc.shape[1]:
            raise ConfigError(f"advantage {type(self).__name__}.weights: {len(self.weights)} weights for "
                              f"{rc.shape[1]} reward components")
        z = GroupZScore(eps=self.eps, unbiased=self.unbiased, eps_placement=self.eps_placement,
                        singleton=self.singleton)
        cols = []
        for k in range(rc.shape[1]):  # K is the number of reward functions (small), never groups
            cols.append(z.per_response(_with_rewards(batch, rc[:, k])))
        return torch.stack(cols, dim=1)

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        a_k = self.per_component(batch)
        w = torch.ones(a_k.shape[1], dtype=a_k.dtype) if self.weights is None else \
            torch.tensor(self.weights, dtype=a_k.dtype)
        a = (a_k * w).sum(1)
        valid = ~torch.isnan(batch.reward_components.to(torch.float64).reshape(batch.batch_size, -1)).all(1)
        mask = batch.response_mask.to(torch.float64) * valid.to(torch.float64)[:, None]
        if self.whiten == "token":
            out = F.masked_whiten(a[:, None].expand(mask.shape), mask, unbiased=self.unbiased,
                                  eps=self.whiten_eps, eps_placement=self.whiten_eps_placement)
        elif self.whiten == "sequence":
            var = torch.nan_to_num(F.masked_var(a, valid, unbiased=self.unbiased), nan=0.0)
            a = F.divide_by_std(a - F.masked_mean(a, valid), var, self.whiten_eps, self.whiten_eps_placement)
            out = torch.where(valid, a, torch.zeros_like(a))[:, None] * mask
        else:
            out = a[:, None] * mask
        dt = _out_dtype(batch)
        return out.to(dt) * batch.response_mask.to(dt)


def _with_rewards(batch: RolloutBatch, rewards: torch.Tensor) -> RolloutBatch:
    return replace(batch, rewards=rewards)


# --------------------------------------------------------------------------------------------------
# BNPO
# --------------------------------------------------------------------------------------------------

def beta_params_from_success_rates(p: torch.Tensor) -> tuple[float, float]:
    """BNPO's (α, β) from per-prompt success rates p (one per group), as in the official code
    (changyi7231/BNPO, recipe/bnpo/src/bnpo_ray_trainer.py::compute_bnpo_outcome_advantage):
    method-of-moments Beta fit (a, b) with m = mean(p), v = unbiased var(p),
    a = m(m(1−m)/v − 1), b = (1−m)(m(1−m)/v − 1); then α = max(1, 1 + a/3), β = max(1, 1 + b/3).
    With fewer than 2 prompts, or v = 0 (the fit is undefined), α = β = 1 (REINFORCE with baseline;
    the official code also gives (1, 1) for a single prompt).
    """
    p = p.to(torch.float64)
    if p.numel() < 2:
        return 1.0, 1.0
    m = float(p.mean())
    v = float(p.var(unbiased=True))
    if not v > 0:
        return 1.0, 1.0
    c = m * (1 - m) / v - 1
    return max(1.0, 1 + m * c / 3), max(1.0, 1 + (1 - m) * c / 3)


class BetaNormalized(_Outcome):
    """Â = (R − p̂)/f_N(p̂; α, β), f_N the Beta pdf, p̂ the group success rate (BNPO, arXiv 2506.02864)."""

    group_relative = True

    def __init__(self, alpha: Optional[Positive] = None, beta: Optional[Positive] = None,
                 eps: Annotated[Num, Ge(0), Lt(0.5)] = 1e-6, min_value: Num = 0.0, max_value: Num = 1.0,
                 max_weight: NonNeg = 1e6, singleton: Literal[SINGLETON_MODES] = "raw"):
        require(max_value > min_value, self, "max_value", max_value, f"a number > min_value ({min_value:g})")
        self.alpha, self.beta, self.eps = alpha, beta, eps  # alpha/beta null: fitted
        self.min_value, self.max_value, self.max_weight = min_value, max_value, max_weight
        # "raw": singleton p̂ = 0 (official code, like verl's mean 0); "zero": Â = 0
        self.singleton = singleton

    def alpha_beta(self, batch: RolloutBatch) -> tuple[float, float]:
        """(α, β) used for this batch: the fixed values, or the fit over non-singleton groups' p̂."""
        if self.alpha is not None and self.beta is not None:
            return self.alpha, self.beta
        r, valid = _rewards(batch)
        s = (r - self.min_value) / (self.max_value - self.min_value)
        inv, g = F.group_index(batch.group_ids)
        cnt = torch.zeros(g, dtype=torch.float64).index_add_(0, inv, valid.to(torch.float64))
        tot = torch.zeros(g, dtype=torch.float64).index_add_(0, inv, torch.where(valid, s, torch.zeros_like(s)))
        p = (tot / cnt.clamp_min(1))[cnt >= 2]
        a, b = beta_params_from_success_rates(p)
        return (self.alpha if self.alpha is not None else a), (self.beta if self.beta is not None else b)

    def _compute(self, r, valid, stats, batch):
        s = (r - self.min_value) / (self.max_value - self.min_value)
        gs = F.group_stats(s, batch.group_ids, stats)
        single = gs.count <= 1
        p = torch.where(single, torch.zeros_like(gs.mean), gs.mean)
        a, b = self.alpha_beta(batch)
        pc = p.clamp(self.eps, 1 - self.eps)
        log_pdf = (a - 1) * torch.log(pc) + (b - 1) * torch.log1p(-pc) - \
            (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
        weight = torch.exp(-log_pdf).clamp(max=self.max_weight)
        adv = weight * (s - p)
        return torch.where(single & (self.singleton == "zero"), torch.zeros_like(adv), adv)


# --------------------------------------------------------------------------------------------------
# RiskPO and ADORA (group-outcome reshaping read from the authors' code)
# --------------------------------------------------------------------------------------------------

def _groups_in_order(group_ids: torch.Tensor, valid: torch.Tensor) -> list[list[int]]:
    """Row indices of each group, groups in order of first appearance, rows in batch order
    (rows with ``valid`` False left out; a group with no valid row is dropped)."""
    order: dict[int, list[int]] = {}
    for i, (g, ok) in enumerate(zip(group_ids.tolist(), valid.tolist())):
        lst = order.setdefault(int(g), [])
        if ok:
            lst.append(i)
    return [rows for rows in order.values() if rows]


CREDIT_MODES = ("sum-mean", "uniform")


class BundleMixedVaR(Advantage):
    """RiskPO bundle Mixed-VaR advantage as released ("Risk-based Policy Optimization", 2510.00911;
    RTkenny/RiskPO core_algos.compute_grpo_bundle_rvar_outcome_advantage_quantile_tracking).

    Bundles are ``bundle_size`` consecutive prompts (groups in batch order, the last bundle may be
    smaller); "paper" j of a bundle is the j-th response of each of its prompts (j < the smallest
    group), scored z_j = Σ_q r_{q,j}. With q_d, q_u the linear-interpolation quantiles α, β of the
    bundle's z and σ its unbiased std (one paper: q_d = q_u = z, σ = 1):
    A_RVaR = [(z − q_d)₊ − (z − q_u)₊]/(β − α + ε), A_CVaR = −(q_d − z)₊/(α + ε),
    A = (w·A_CVaR + A_RVaR)/(w + 1)/(σ + ε) (``normalize_std``), split over the paper's responses by
    ``credit``: "sum-mean" (released script) A·d_{q,j}/Σ_q d_{q,j}, d = r − mean_q r, equal shares
    when abs(Σ d) ≤ 1e-6; "uniform": every response gets A. Responses past the smallest group and
    NaN rewards get 0. The released quantile tracker never reaches this function (§catalog_gap 3.1).
    """

    def __init__(self, bundle_size: PosInt = 5, alpha: OpenProb = 0.2, beta: OpenProb = 0.8,
                 w_mix: NonNeg = 1.5, eps: NonNeg = 1e-6, normalize_std: bool = True,
                 credit: Literal[CREDIT_MODES] = "sum-mean"):
        require(alpha < beta, self, "beta", beta, f"a number > alpha ({alpha:g}) and < 1")
        self.bundle_size, self.alpha, self.beta, self.w_mix = bundle_size, alpha, beta, w_mix
        self.eps, self.normalize_std, self.credit = eps, normalize_std, credit

    def per_response(self, batch: RolloutBatch) -> torch.Tensor:
        r, valid = _rewards(batch)
        out = torch.zeros_like(r)
        groups = _groups_in_order(batch.group_ids, valid)
        for b in range(0, len(groups), self.bundle_size):
            bundle = groups[b:b + self.bundle_size]
            n_papers = min(len(rows) for rows in bundle)
            papers = [[rows[j] for rows in bundle] for j in range(n_papers)]
            z = torch.stack([r[p].sum() for p in papers])
            if n_papers == 1:
                q_d = q_u = z[0]
                std = torch.ones((), dtype=r.dtype, device=r.device)
            else:
                q_d, q_u = torch.quantile(z, self.alpha), torch.quantile(z, self.beta)
                std = z.std(unbiased=True)
            means = {rows[0]: r[rows].mean() for rows in bundle}
            row_mean = {i: means[rows[0]] for rows in bundle for i in rows}
            for p, zj in zip(papers, z):
                a = ((zj - q_d).clamp_min(0) - (zj - q_u).clamp_min(0)) / (self.beta - self.alpha + self.eps)
                cvar = -(q_d - zj).clamp_min(0) / (self.alpha + self.eps)
                a = (self.w_mix * cvar + a) / (self.w_mix + 1)
                if self.normalize_std:
                    a = a / (std + self.eps)
                if self.credit == "uniform":
                    out[p] = a
                    continue
                d = torch.stack([r[i] - row_mean[i] for i in p])
                tot = d.sum()
                out[p] = a * d / tot if float(tot.abs()) > 1e-6 else a / len(p)
        return out

    def __call__(self, batch: RolloutBatch) -> torch.Tensor:
        return _broadcast(self.per_response(batch), batch)


class LengthAdvantageReweight(_Outcome):
    """ADORA length-advantage reweighting as in the 2025 code (ShadeCloak/ADORA
    core_algos.compute_grpo_outcome_advantage_ADORA; paper "ADORA: Training Reasoning Models with
    Dynamic Advantage Estimation on Reinforcement Learning", 2602.10019, generalises it).

    Â = (r − mean_g)/(std_g + ε) (Bessel std; a singleton group keeps its raw reward), then every
    group *without* the length advantage — max length of its correct responses (r >
    ``correct_threshold``) not greater than the mean length of its incorrect ones (r ≤ threshold and
    length < ``max_length_threshold`` when set) — is multiplied by ``lam``. No correct response ⇒
    no length advantage; correct but no (counted) incorrect ones ⇒ length advantage.
    """

    zero_constant_groups = False

    def __init__(self, lam: NonNeg = 0.1, correct_threshold: Num = 0.5,
                 max_length_threshold: Optional[PosInt] = None, eps: NonNeg = 1e-6):
        self.lam, self.correct_threshold, self.eps = lam, correct_threshold, eps
        self.max_length_threshold = max_length_threshold

    def length_advantage(self, r: torch.Tensor, lengths: torch.Tensor, rows: list[int]) -> bool:
        pos = [i for i in rows if r[i] > self.correct_threshold]
        neg = [i for i in rows if r[i] <= self.correct_threshold and
               (self.max_length_threshold is None or lengths[i] < self.max_length_threshold)]
        max_pos = max((float(lengths[i]) for i in pos), default=-math.inf)
        mean_neg = sum(float(lengths[i]) for i in neg) / len(neg) if neg else -math.inf
        return max_pos > mean_neg

    def _compute(self, r, valid, stats, batch):
        lengths = batch.response_mask.to(torch.float64).sum(-1)
        out = r.clone()
        for rows in _groups_in_order(batch.group_ids, stats):
            idx = torch.tensor(rows, device=r.device)
            if len(rows) > 1:
                g = r[idx]
                out[idx] = (g - g.mean()) / (g.std(unbiased=True) + self.eps)
            if not self.length_advantage(r, lengths, rows):
                out[idx] = out[idx] * self.lam
        return out


__all__ = ["Constant", "Sign", "GroupZScore", "GroupCentered", "LeaveOneOut", "LengthWeightedBaseline", "GPG",
           "BatchZScore", "ReinforcePlusPlus", "ReinforcePlusPlusBaseline", "DecoupledMultiReward",
           "BetaNormalized", "beta_params_from_success_rates", "BundleMixedVaR", "LengthAdvantageReweight"]
