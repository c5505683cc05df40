"""Every method preset (conf/method/*.yaml) against an independent float64 reference of its loss.

For each preset the composed run config (``compose_config(["method=<name>"])``) is built exactly as
the trainer builds it (``build_algorithm``): the advantage slot is applied to a hand-made
RolloutBatch, then the UPGE estimator with the preset's mask / denominator / likelihood /
aggregation / regularizers gives a loss, and its gradient w.r.t. the current log-probs must equal
the gradient of the reference loss in tests/upge/reference_losses.py, which is written from the
paper / peer formula without any ablate code.

Batches (``make_case``): G ∈ {2, 4, 8}, three groups, binary rewards with one mixed and one
all-equal group, right padding with varied lengths (one full-length and one zero-length row,
garbage log-probs on padding), π_old perturbed around π_θ (|log ρ| ≤ 0.45) so that the PPO clip is
active on some tokens, a frozen reference model's log-probs for the KL term. Methods with
demonstrations get their rows as the pipeline stage leaves them (sft: DemosOnly; luffy:
MixDemos, G−1 rollouts + 1 demo per group). Presets with a multi-term or non-UPGE objective (hpt,
srft, chord, copo, rebel, copg, oapl, real) are tested in tests/objectives/test_terms.py.

Pipeline stages (DAPO dynamic sampling and overlong shaping, the demo mixing and the HPT gate
themselves) run before the advantage slot and are outside the estimator: these tests cover the loss
on the batch those stages produce, not the stages (tests/test_pipeline.py covers those).
"""

from __future__ import annotations

import functools

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from ablate.config import compose_config
from ablate.errors import ConfigError
from ablate.rollout import pin_budget
from ablate.tasks import build_task
from ablate.train.components import build_algorithm
from ablate.upge.batch import RolloutBatch
from tests.upge import reference_losses as ref
from tests.objectives.test_terms import PRESETS as OBJECTIVE_PRESETS  # tested there (incl. hpt)
from tests.upge.reference_losses import D, Case

T = 6  # padded response length of the test batches
GS = (2, 4, 8)
TOL = dict(rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# composing a preset
# ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def preset_cfg(method: str, overrides: tuple = ()):
    """The composed run config of ``method=<name>`` plus overrides (Hydra, as `ablate train` does).

    Fallback when the full config cannot be composed (another config group temporarily broken):
    the preset's slot choices from its YAML defaults, its ``settings`` and the rollout budget."""
    try:
        cfg = compose_config([f"method={method}", *overrides])
        pin_budget(cfg, build_task(cfg.task))  # as the trainer does, before any L_max is read
        return cfg
    except ConfigError:
        from ablate.methods.catalog import OPTIONS, SLOTS, load_presets
        from ablate.registry import conf_dir

        rec = next(r for r in load_presets() if r["name"] == method)
        rollout = conf_dir() / "rollout" / "hf.yaml"
        data = {"rollout": yaml.safe_load(rollout.read_text()) if rollout.exists() else {}}
        data["rollout"]["max_new_tokens"] = 8
        choices = {g: rec.get(g) for g in SLOTS + OPTIONS}
        for ov in overrides:
            k, _, v = ov.partition("=")
            if k in choices:
                choices[k] = v
        for g, v in choices.items():
            if v:
                data[g] = yaml.safe_load((conf_dir() / g / f"{v}.yaml").read_text()) or {}
        cfg = OmegaConf.create(data)
        cfg = OmegaConf.merge(cfg, OmegaConf.create(rec.get("settings") or {}))
        for ov in overrides:
            k, _, v = ov.partition("=")
            if k not in choices:
                OmegaConf.update(cfg, k, yaml.safe_load(v), merge=True)
        return cfg


def algorithm(method: str, *overrides: str):
    """A fresh Algorithm (fresh slot instances: Clip-Cov's generator starts from its seed)."""
    return build_algorithm(preset_cfg(method, tuple(overrides)))


def ablate_grad(c: Case, method: str, *overrides: str) -> torch.Tensor:
    """d loss / d logp of the composed preset: advantage slot on the batch (as the trainer does),
    then the UPGE estimator."""
    algo = algorithm(method, *overrides)
    batch = to_batch(c)
    logp = c.logp.detach().clone().requires_grad_(True)
    out = algo.objective.batch_loss(batch, logp)
    assert torch.isfinite(out.loss)
    (g,) = torch.autograd.grad(out.loss, logp)
    return g


def ref_grad(fn, c: Case, **kw) -> torch.Tensor:
    logp = c.logp.detach().clone().requires_grad_(True)
    loss = fn(logp, c, **kw)
    (g,) = torch.autograd.grad(loss, logp)
    assert g.abs().sum() > 0, "degenerate case: the reference gradient is zero"
    return g


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, **TOL)


# ------------------------------------------------------------------------------------------------
# batches as the pipeline leaves them
# ------------------------------------------------------------------------------------------------

def _bits(n: int, g: torch.Generator) -> list:
    return [float(x) for x in torch.randint(0, 2, (n,), generator=g)]


def make_case(G: int, seed: int = 0, layout: str = "rl", *, spread: float = 0.45, gspo: bool = False,
              on_policy: bool = False, components: bool = False, sft_coef: float = 1.0,
              n_groups: int = 3, max_nll: float = 3.0) -> Case:
    """``layout``: ``rl`` (``n_groups`` groups of G rollouts), ``sft`` (G+2 demo rows, one per prompt),
    ``mix`` (3 groups of G−1 rollouts + 1 demo with reward 1), ``hpt`` (2 RL groups of G with at
    least one solve, then 2 singleton SFT demo rows with loss weight ``sft_coef``)."""
    g = torch.Generator().manual_seed(1000 * G + seed)
    rewards, gids, demo, lw = [], [], [], []
    if layout == "rl":
        for k in range(n_groups):
            r = ([1.0, 0.0] + _bits(G - 2, g)) if k == 0 else \
                [float(seed % 2)] * G if k == 1 else _bits(G, g)  # 0: mixed, 1: all equal
            rewards += r
            gids += [k] * G
        demo = [False] * len(rewards)
        zero_row = 1
    elif layout == "sft":
        n = G + 2
        rewards, gids, demo = [1.0] * n, list(range(n)), [True] * n
        zero_row = 1
    elif layout == "mix":
        for k in range(3):
            r = ([0.0] + _bits(G - 2, g)) if k == 0 else [1.0] * (G - 1) if k == 1 else _bits(G - 1, g)
            rewards += r + [1.0]  # the demonstration, verified like a rollout
            gids += [k] * G
            demo += [False] * (G - 1) + [True]
        zero_row = 2 * G  # first rollout of group 2
    elif layout == "hpt":
        for k in range(2):  # gate = 0: groups with ≥ 1 solve stay RL
            rewards += ([1.0, 0.0] + _bits(G - 2, g)) if k == 0 else [1.0] * G
            gids += [k] * G
        demo = [False] * len(rewards)
        for k in (2, 3):  # unsolved prompts replaced by one SFT row on the demonstration
            rewards.append(1.0)
            gids.append(k)
            demo.append(True)
        zero_row = 1
    else:
        raise ValueError(layout)
    B = len(rewards)
    # the trainer stores loss weights as float32: the reference uses the same (rounded) number
    w = float(torch.tensor(sft_coef, dtype=torch.float32))
    lw = [w if (layout == "hpt" and d) else 1.0 for d in demo]
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    lengths[zero_row] = 0
    mask = (torch.arange(T)[None, :] < lengths[:, None]).to(D)
    valid = mask > 0
    lp = -(0.05 + (max_nll - 0.05) * torch.rand(B, T, generator=g, dtype=D))
    garbage = -3.0 * torch.rand(B, T, generator=g, dtype=D)
    logp = torch.where(valid, lp, garbage)
    u = (2 * torch.rand(B, T, generator=g, dtype=D) - 1) * spread
    if gspo:  # sequence-mean log-ratio within a few ε of 0, so the sequence clip is active on some rows
        row_mean = (u * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp_min(1)
        offset = (2 * torch.rand(B, 1, generator=g, dtype=D) - 1) * 8e-4
        u = u - row_mean + offset
    if on_policy:
        u = torch.zeros_like(u)
    old = torch.where(valid, lp - u, torch.zeros_like(lp))
    refl = torch.where(valid, lp + (torch.rand(B, T, generator=g, dtype=D) - 0.5), torch.zeros_like(lp))
    comps = None
    if components:  # GDPO: correct (the binary reward above) + format
        fmt = _bits(B, g)
        fmt[G:2 * G] = [1.0] * G  # group 1 all-equal in both components
        comps = [[r, f] for r, f in zip(rewards, fmt)]
        rewards = [r + f for r, f in zip(rewards, fmt)]
    return Case(logp=logp, old_logp=old, ref_logp=refl, mask=mask, rewards=rewards, group_ids=gids,
                is_demo=demo, loss_weights=lw, components=comps)


def case_where(pred, G: int, **kw) -> Case:
    """The first seed's case that satisfies ``pred`` (deterministic; keeps the cases non-degenerate)."""
    for seed in range(200):
        c = make_case(G, seed, **kw)
        if pred(c):
            return c
    raise AssertionError(f"no seed gives a case with {pred.__name__} (G={G}, {kw})")


def to_batch(c: Case) -> RolloutBatch:
    """The RolloutBatch the trainer assembles (float32 rewards, loss_weights only when some ≠ 1)."""
    B = c.B
    return RolloutBatch(
        input_ids=torch.zeros(B, 2 + T, dtype=torch.long), attention_mask=torch.ones(B, 2 + T, dtype=torch.long),
        response_mask=c.mask.clone(), old_logp=c.old_logp.clone(),
        rewards=torch.tensor(c.rewards, dtype=torch.float32), group_ids=torch.tensor(c.group_ids, dtype=torch.long),
        prompt_len=2, ref_logp=c.ref_logp.clone(),
        reward_components=None if c.components is None else torch.tensor(c.components, dtype=torch.float32),
        is_demo=torch.tensor(c.is_demo, dtype=torch.bool),
        loss_weights=(torch.tensor(c.loss_weights, dtype=torch.float32)
                      if any(w != 1.0 for w in c.loss_weights) else None))


def n_clipped(c: Case, per_response_adv, eps_low: float, eps_high: float, rows=None) -> int:
    adv = ref.broadcast(per_response_adv, c.mask)
    clipped = ref.ppo_clipped_tokens(c, adv, eps_low, eps_high)
    if rows is not None:
        clipped = clipped & torch.tensor(rows, dtype=torch.bool)[:, None]
    return int(clipped.sum())


def referenced_everywhere() -> set:
    """REFERENCED here plus the ``REFERENCED`` sets of the other tests/upge/test_*.py modules."""
    import importlib
    import pkgutil

    import tests.upge as pkg

    names = set(REFERENCED)
    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name.startswith("test_") and m.name != "test_presets_reference":
            names |= set(getattr(importlib.import_module(f"tests.upge.{m.name}"), "REFERENCED", ()))
    return names


def test_every_preset_has_a_reference_test():
    from ablate.methods.catalog import load_presets

    names = {r["name"] for r in load_presets()}
    missing = sorted(names - referenced_everywhere())
    assert not missing, f"presets without a reference-gradient test here: {missing}"


REFERENCED = {"sft", "grpo", "reinforce", "cispo", "gspo", "luffy", "dapo", "drgrpo", "rloo",
              "reinforce_pp", "opo", "gpg", "clip_cov", "bnpo", "gdpo"} | set(OBJECTIVE_PRESETS)


# ------------------------------------------------------------------------------------------------
# one test per preset
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("G", GS)
def test_sft_gradient_matches_upge_table1_token_mean_nll(G):
    """SFT (UPGE Table 1 row 1: π_ref = π_θ, Â ≡ 1): −(1/Σ_i|τ*_i|) Σ_i Σ_t log π_θ over the batch's
    demonstrations (pipeline DemosOnly: only demo rows, one per prompt). The per-demo form
    −(1/|τ*|) Σ_t log π_θ is the one-demo case; the batch is a token mean, as TRL's SFTTrainer and
    HPT's compute_sft_pure_loss (masked mean over all demo tokens)."""
    c = make_case(G, layout="sft")
    assert_same(ablate_grad(c, "sft"), ref_grad(ref.sft_loss, c))


@pytest.mark.parametrize("G", GS)
def test_grpo_gradient_matches_deepseekmath_objective_with_k3_kl(G):
    """GRPO (DeepSeekMath Eq. 3, verl conventions): Â = (r − mean)/(std_unbiased + 1e-6), PPO clip
    ε = 0.2 on ρ = π_θ/π_old, (1/G)Σ_i (1/|o_i|)Σ_t, plus β = 0.04 × k3 KL to the frozen reference
    (verl low_var_kl, aggregated the same way)."""
    c = make_case(G)
    assert n_clipped(c, ref.grpo_advantages(c.rewards, c.group_ids), 0.2, 0.2) > 0
    assert_same(ablate_grad(c, "grpo"), ref_grad(ref.grpo_loss, c))


@pytest.mark.parametrize("G", GS)
def test_reinforce_gradient_matches_upge_table1_pm1_reinforce(G):
    """REINFORCE (UPGE Table 1, Ahmadian et al. 2024): π_ref = π_θ, Â = ±1, no mask, the whole
    completion one action: −(1/N) Σ_i Â_i Σ_t log π_θ."""
    c = make_case(G)
    assert_same(ablate_grad(c, "reinforce"), ref_grad(ref.reinforce_loss, c))


@pytest.mark.parametrize("G", GS)
def test_cispo_gradient_matches_verl_cispo(G):
    """CISPO (verl compute_policy_loss_cispo with clip_ratio_low 0.2: denominator=cispo_lower):
    −sg(clip(ρ, 0.8, 1.28))·Â·log π, token-mean, no token masked. The preset follows MiniMax-M1 (no
    lower bound; tests/upge/test_authors_code.py); TRL's ``cispo`` uses an absolute cap min(ρ, ε_high)
    instead (denominator=cispo_trl)."""
    c = make_case(G)
    adv = ref.grpo_advantages(c.rewards, c.group_ids)
    assert n_clipped(c, adv, 0.2, 0.28) > 0  # tokens a PPO clip would drop keep a (bounded) gradient
    assert_same(ablate_grad(c, "cispo", "denominator=cispo_lower"), ref_grad(ref.cispo_loss, c))


@pytest.mark.parametrize("G", GS)
def test_gspo_gradient_matches_paper_sequence_objective(G):
    """GSPO (Zheng et al. 2025): (1/G)Σ_i −min(s_i Â_i, clip(s_i, 1−3e-4, 1+4e-4) Â_i) with
    s_i = exp(mean_t log ρ_{i,t}) differentiated directly (not the sg GSPO-token rewrite)."""
    def clipped_and_free(c):  # some sequences clipped, some not
        return min(ref.gspo_clipped_rows(c)) > 0

    c = case_where(clipped_and_free, G, gspo=True)
    assert_same(ablate_grad(c, "gspo"), ref_grad(ref.gspo_loss, c))


@pytest.mark.parametrize("G", GS)
def test_luffy_gradient_matches_paper_policy_shaping(G):
    """LUFFY (Yan et al. 2025): one demo per group, Â z-scored over on ∪ off, demo tokens
    −Â·f(π_θ) with f(π) = π/(π + 0.1) and π_ref ≡ 1, unclipped; rollouts PPO-clipped; token-mean.

    Not copied (as the preset notes): the HPT-repo LUFFY script's no-std advantage, no clip and
    constant-length normalisation."""
    c = make_case(G, layout="mix")
    on_rows = [not d for d in c.is_demo]
    assert n_clipped(c, ref.grpo_advantages(c.rewards, c.group_ids), 0.2, 0.2, rows=on_rows) > 0
    assert_same(ablate_grad(c, "luffy"), ref_grad(ref.offpolicy_mix_loss, c, shaping_gamma=0.1))


@pytest.mark.parametrize("G", GS)
def test_dapo_gradient_matches_paper_token_level_objective(G):
    """DAPO Eq. (8): (1/Σ_i|o_i|) Σ_i Σ_t −min(ρÂ, clip(ρ, 1−0.2, 1+0.28)Â), group z-score, no KL.

    Loss only: dynamic sampling (drop all-equal groups, refill) and soft overlong punishment are
    pipeline stages run before the advantage slot; the all-equal group in this batch is what DAPO
    would have filtered out, and contributes no gradient here either."""
    c = make_case(G)
    assert n_clipped(c, ref.grpo_advantages(c.rewards, c.group_ids), 0.2, 0.28) > 0
    assert_same(ablate_grad(c, "dapo"), ref_grad(ref.dapo_loss, c))


@pytest.mark.parametrize("G", GS)
def test_drgrpo_gradient_matches_verl_seq_mean_token_sum_norm_and_trl_dr_grpo(G):
    """Dr. GRPO (Liu et al. 2025): Â = r − mean, PPO clip, Σ_i Σ_t / (G · L_max) with
    L_max = rollout.max_new_tokens (verl ≥ Feb 2026 seq-mean-token-sum-norm with loss_scale_factor).

    TRL ``loss_type="dr_grpo"`` divides by all rows of the batch, verl and ablate by the rows with at
    least one token: the two agree on batches without empty responses (checked below)."""
    cfg = preset_cfg("drgrpo")
    constant = float(cfg.aggregation.constant)
    assert constant == float(build_task(cfg.task).max_new_tokens)  # the budget generation uses
    c = make_case(G)
    assert n_clipped(c, ref.centered_advantages(c.rewards, c.group_ids), 0.2, 0.2) > 0
    assert_same(ablate_grad(c, "drgrpo"), ref_grad(ref.drgrpo_loss, c, constant=constant))
    # TRL's normaliser B_local · max_completion_length, on a batch without a zero-length row
    c.mask[1, 0] = 1.0
    assert_same(ablate_grad(c, "drgrpo"),
                ref_grad(ref.drgrpo_loss, c, constant=constant, count_empty_rows=True))


@pytest.mark.parametrize("G", GS)
def test_rloo_gradient_matches_paper_leave_one_out_reinforce(G):
    """RLOO (Ahmadian et al. 2024) without its KL term (``advantage=rloo``): Â_i = r_i − mean_{j≠i} r_j,
    on-policy, the completion as one action: −(1/N) Σ_i Â_i Σ_t log π_θ. The preset itself folds
    the KL into the reward: tests/upge/test_new_presets_state.py."""
    c = make_case(G)
    assert_same(ablate_grad(c, "rloo", "advantage=rloo"), ref_grad(ref.rloo_loss, c))


@pytest.mark.parametrize("G", GS)
def test_reinforce_pp_gradient_matches_verl_reinforce_plus_plus(G):
    """REINFORCE++ without its KL term (``advantage=reinforce_pp``; verl reinforce_plus_plus, γ = 1):
    return-to-go of the outcome reward, whitened over all valid tokens of the batch (unbiased var,
    +1e-8), PPO clip ε = 0.2, token-mean. The preset itself adds the per-token KL penalty −β·KL_t
    to the reward: tests/upge/test_new_presets_state.py."""
    c = make_case(G)
    adv = ref.whiten_tokens(ref.return_to_go(c.rewards, c.mask), c.mask)
    assert int(ref.ppo_clipped_tokens(c, adv, 0.2, 0.2).sum()) > 0
    assert_same(ablate_grad(c, "reinforce_pp", "advantage=reinforce_pp"), ref_grad(ref.reinforce_pp_loss, c))


@pytest.mark.parametrize("G", GS)
def test_opo_gradient_matches_verl_opo_on_policy(G):
    """OPO (verl opo): Â = r − Σ_j|o_j| r_j / Σ_j|o_j| (length-weighted group baseline), exact
    on-policy (the preset forces one optimizer step per batch, so π_old = π_θ and ρ ≡ 1):
    −(1/Σ|o|) Σ Â log π."""
    cfg = preset_cfg("opo")
    assert int(cfg.train.epochs) == 1 and int(cfg.train.minibatches) == 1
    def has_gradient(c):  # the zero-length row can make a small group's baseline its only reward
        return any(a != 0 for i, a in enumerate(ref.opo_advantages(c.rewards, c.group_ids,
                                                                    [c.length(j) for j in range(c.B)]))
                   if c.length(i) > 0)

    c = case_where(has_gradient, G, on_policy=True)
    assert_same(ablate_grad(c, "opo"), ref_grad(ref.opo_loss, c))


@pytest.mark.parametrize("G", GS)
def test_gpg_gradient_matches_verl_gpg(G):
    """GPG as verl ports it (advantage=gpg_verl; compute_policy_loss_gpg + gpg advantage):
    −(1/Σ|o|) Σ Â log π, Â = α (r − mean_G), α = B / #non-zero rewards. The preset follows the
    authors' α = B/(B − M) (tests/upge/test_authors_code.py)."""
    c = make_case(G)
    assert_same(ablate_grad(c, "gpg", "advantage=gpg_verl"), ref_grad(ref.gpg_loss, c))


def has_cov_candidates(c):
    return int(ref.clip_cov_candidates(c).sum()) > 1


@pytest.mark.parametrize("G", GS)
def test_clip_cov_gradient_matches_verl_clip_cov_all_candidates(G):
    """Clip-Cov (verl compute_policy_loss_clip_cov) with clip_cov_ratio = 1, so every candidate is
    dropped and the random choice is deterministic: PPO clip ε = 0.2, and the loss of every valid,
    unclipped token with centred cov(log π, Â) ∈ (1, 5) zeroed; token-mean."""
    c = case_where(has_cov_candidates, G, max_nll=6.0)
    cand = ref.clip_cov_candidates(c)
    assert_same(ablate_grad(c, "clip_cov", "mask.clip_ratio=1.0"), ref_grad(ref.clip_cov_loss, c, dropped=cand))


@pytest.mark.parametrize("G", GS)
def test_clip_cov_default_ratio_drops_k_random_candidates_like_verl(G):
    """Clip-Cov with the preset's clip_cov_ratio = 2e-4: verl drops max(⌊ratio·N⌋, 1) candidates
    drawn at random. The preset's gradient equals the reference with exactly that many dropped
    tokens, all of them candidates (which ones depends on the seed)."""
    c = case_where(has_cov_candidates, G, max_nll=6.0)
    cand = ref.clip_cov_candidates(c)
    n_valid = int(c.mask.sum())
    k = min(max(int(2e-4 * n_valid), 1), int(cand.sum()))
    got = ablate_grad(c, "clip_cov")
    ppo = ref_grad(ref.clip_cov_loss, c, dropped=torch.zeros_like(cand))
    dropped = (got == 0) & (ppo != 0)
    assert int(dropped.sum()) == k and bool((dropped <= cand).all())
    assert_same(got, ref_grad(ref.clip_cov_loss, c, dropped=dropped))


@pytest.mark.parametrize("G", GS)
def test_bnpo_gradient_matches_official_code_beta_normalisation(G):
    """BNPO: Â = (R − p̂)/Beta_pdf(p̂; α, β), p̂ the group success rate, (α, β) refit every batch by
    moments (α = max(1, 1 + a/3), β likewise; official-code reading), PPO clip, seq-mean-token-mean.

    The paper's exact (α, β) update is only known from summaries (preset fidelity: approximation);
    its "advantage decomposition" for several reward components is not implemented."""
    def fit_active(c):  # (α, β) ≠ (1, 1): the success rates vary less than a Bernoulli would
        adv, a, b = ref.bnpo_advantages(c.rewards, c.group_ids)
        return (a, b) != (1.0, 1.0) and a != b and n_clipped(c, adv, 0.2, 0.2) > 0

    c = case_where(fit_active, G, n_groups=6)
    assert_same(ablate_grad(c, "bnpo"), ref_grad(ref.bnpo_loss, c))


@pytest.mark.parametrize("G", GS)
def test_gdpo_gradient_matches_verl_gdpo(G):
    """GDPO (verl gdpo): per-reward-component GRPO z-score (ε 1e-6), unit-weight sum, token-weighted
    batch whitening (masked_whiten), PPO clip, seq-mean-token-mean.

    The paper (and TRL ``normalize_then_sum``) batch-normalise per response, not per token, with
    ε = 1e-4 (advantage=gdpo_trl)."""
    def has_gradient(c):
        return float(ref.gdpo_token_advantages(c.components, c.group_ids, c.mask).abs().sum()) > 0

    c = case_where(has_gradient, G, components=True)
    assert_same(ablate_grad(c, "gdpo"), ref_grad(ref.gdpo_loss, c))


# ------------------------------------------------------------------------------------------------
# the comparison can fail
# ------------------------------------------------------------------------------------------------

PERTURBATIONS = [
    # (preset, overrides, reference, reference kwargs)
    ("dapo", ("mask=ppo_clip",), ref.dapo_loss, {}),  # symmetric clip instead of clip-higher
    ("grpo", (), ref.grpo_loss, {"eps": 0.3}),  # the reference with another ε
    ("grpo", ("regularizers=none",), ref.grpo_loss, {}),  # KL term dropped
    ("grpo", ("aggregation=token_mean",), ref.grpo_loss, {}),
    ("drgrpo", ("aggregation.constant=16",), None, {}),  # another Dr.GRPO constant
    ("luffy", ("likelihood=identity",), ref.offpolicy_mix_loss, {"shaping_gamma": 0.1}),
    ("rloo", ("advantage=group_centered",), ref.rloo_loss, {}),
]


@pytest.mark.parametrize("method,overrides,fn,kw", PERTURBATIONS,
                         ids=[f"{m}-{'+'.join(o) or 'ref:' + ','.join(f'{k}={v}' for k, v in kw.items())}"
                              for m, o, _, kw in PERTURBATIONS])
def test_perturbed_preset_gradient_differs_from_reference(method, overrides, fn, kw):
    def clip_higher_matters(c):  # some A > 0 token with ρ ∈ (1.2, 1.28]
        adv = ref.grpo_advantages(c.rewards, c.group_ids)
        return n_clipped(c, adv, 0.2, 0.2) != n_clipped(c, adv, 0.2, 0.28)

    c = case_where(clip_higher_matters, 4, layout="mix" if method == "luffy" else "rl")
    if fn is None:  # drgrpo: the reference keeps the preset's constant
        fn, kw = ref.drgrpo_loss, {"constant": float(preset_cfg("drgrpo").aggregation.constant)}
    got = ablate_grad(c, method, *overrides)
    want = ref_grad(fn, c, **kw)
    assert not torch.allclose(got, want, **TOL)
    assert (got - want).abs().max() > 1e-6


def test_dapo_with_symmetric_clip_matches_the_symmetric_reference():
    """The perturbed preset is still exact against the reference it now implements."""
    c = make_case(8)
    assert_same(ablate_grad(c, "dapo", "mask=ppo_clip"), ref_grad(ref.dapo_loss, c, eps_high=0.2))
