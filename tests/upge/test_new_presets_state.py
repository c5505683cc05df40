"""Presets that use the contract's newer pieces — scoring before the advantage (KL in the reward,
a second temperature), per-row side data, the step context and component state — against the
independent float64 references in reference_methods_state.py.

Batches are those of test_presets_reference.make_case (G ∈ {2, 4, 8}, right padding with a
zero-length and a full-length row, one mixed and one all-equal group) with the last row moved into
a group of its own (a singleton). Batch side data that the trainer fills (rows, info, prescored
log-probs) is filled here the way the trainer fills it.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ablate.component import StepInfo, load_tree_state, tree_state
from ablate.pipeline.base import Rollouts, StageEnv
from ablate.pipeline.d3s import MaxVarianceSubset, max_variance_subset
from ablate.tasks.base import Problem
from ablate.upge.adaptive import RatioVariance
from ablate.upge.functional import group_reward_stats
from ablate.upge.slots.base import TokenContext
from tests.upge import reference_methods_state as ref
from tests.upge.reference_losses import D, Case
from tests.upge.test_presets_reference import GS, T, algorithm, assert_same, make_case, preset_cfg, to_batch

NEW_PRESETS = {"g2rpo", "em_pg", "etr", "d3s", "mdpo", "r2vpo", "dcpo", "p3o", "reinforce_pp", "rloo"}
REFERENCED = NEW_PRESETS  # found by test_presets_reference.test_every_preset_has_a_reference_test


# ------------------------------------------------------------------------------------------------
# batches
# ------------------------------------------------------------------------------------------------

def with_singleton(c: Case) -> Case:
    """The same case with its last row alone in a new group."""
    gids = list(c.group_ids)
    gids[-1] = max(gids) + 1
    return dataclasses.replace(c, group_ids=gids)


def case(G: int, seed: int = 0, **kw) -> Case:
    return with_singleton(make_case(G, seed, **kw))


def batch_of(c: Case, info: StepInfo | None = None, **rows):
    """The RolloutBatch the trainer assembles: rows side data (group statistics as in
    Trainer._row_data), the step context, and any prescored rows."""
    b = to_batch(c)
    gm, gv, gs = group_reward_stats(b.rewards, b.group_ids, ~b.demo_mask())
    b.rows = {"group_reward_mean": gm, "group_reward_var": gv, "group_size": gs, **rows}
    b.info = info
    return b


def grad(method: str, batch, logp0: torch.Tensor, *overrides: str, entropy=None, algo=None) -> torch.Tensor:
    algo = algo or algorithm(method, *overrides)
    logp = logp0.detach().clone().requires_grad_(True)
    out = algo.objective.batch_loss(batch, logp, entropy=entropy)
    assert torch.isfinite(out.loss)
    (g,) = torch.autograd.grad(out.loss, logp)
    return g


def ref_grad(fn, c: Case, **kw) -> torch.Tensor:
    logp = c.logp.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(logp, c, **kw), logp)
    assert g.abs().sum() > 0, "degenerate case: the reference gradient is zero"
    return g


def test_every_new_preset_has_a_test_here():
    from ablate.methods.catalog import load_presets

    names = {r["name"] for r in load_presets()}
    assert NEW_PRESETS <= names


# ------------------------------------------------------------------------------------------------
# KL in the reward: REINFORCE++, RLOO, P3O
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("G", GS)
def test_rloo_gradient_matches_paper_with_kl_in_the_reward(G):
    """RLOO (Ahmadian et al. 2024; TRL RLOOTrainer): R = r − 0.05·Σ_t(log π_old − log π_ref),
    Â_i = R_i − mean_{j≠i} R_j, on-policy, −(1/N) Σ_i Â_i Σ_t log π_θ."""
    c = case(G)
    assert_same(grad("rloo", batch_of(c), c.logp), ref_grad(ref.rloo_kl_loss, c, beta=0.05))


@pytest.mark.parametrize("G", GS)
def test_reinforce_pp_gradient_matches_openrlhf_token_kl_reward(G):
    """REINFORCE++ (OpenRLHF): r_t = −0.01·clamp(kl_t, ±10) + r·1[last], γ = 1 return-to-go, token
    whitening with the biased variance, PPO clip 0.2, token-mean. One token's KL is pushed past the
    ±10 clamp."""
    c = case(G)
    c.ref_logp[0, 0] = c.old_logp[0, 0] - 15.0
    adv = ref.reinforce_pp_kl_advantages(c)
    ratio = torch.exp(c.logp - c.old_logp)
    assert bool((((adv > 0) & (ratio > 1.2)) | ((adv < 0) & (ratio < 0.8)) & (c.mask > 0)).any())
    assert_same(grad("reinforce_pp", batch_of(c), c.logp), ref_grad(ref.reinforce_pp_kl_loss, c))


def test_kl_in_reward_needs_scoring_only_when_the_coefficient_is_positive():
    assert algorithm("rloo").needs().logp_before_advantage and algorithm("rloo").needs().ref_model
    off = algorithm("rloo", "advantage.kl_coef=0.0").needs()
    assert not off.logp_before_advantage and not off.ref_model and not off.prescoring
    c = case(4)
    b = batch_of(c)
    b.ref_logp = None  # β = 0 never reads the reference
    assert_same(grad("rloo", b, c.logp, "advantage.kl_coef=0.0"),
                ref_grad(ref.rloo_kl_loss, c, beta=0.0))


@pytest.mark.parametrize("G", GS)
def test_p3o_gradient_matches_pairwise_trajectory_clip(G):
    """P3O separate clip: Â = R_i − R_j on KL-shaped rewards (leave-one-out beyond pairs),
    trajectory ratio s = Π_t ρ_t clipped at 1 ± 0.2 per response, mean over responses."""
    c = case(G)
    s = [math.exp(float((c.logp[i, :c.length(i)] - c.old_logp[i, :c.length(i)]).sum())) for i in range(c.B)]
    assert any(abs(x - 1) > 0.2 for x in s) and any(abs(x - 1) <= 0.2 for x in s if x != 1.0)
    assert int(preset_cfg("p3o").train.group_size) == 2
    assert_same(grad("p3o", batch_of(c), c.logp), ref_grad(ref.p3o_loss, c))


@pytest.fixture
def shared_cache(tmp_path_factory, monkeypatch):
    """The warm-start cache of the test session (shared with tests/test_train.py)."""
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.parametrize("method", ["rloo", "reinforce_pp"])
def test_scoring_before_advantage_gives_the_hand_kl_in_reward(shared_cache, method):
    """In the trainer: the prescoring pass fills old/ref log-probs before the advantage slot; the
    advantages equal a hand computation from a direct forward of the two models."""
    import torch.nn.functional as Fn

    from ablate.config import compose_config
    from ablate.train.trainer import Trainer
    from tests.test_train import FAST

    tr = Trainer(compose_config(FAST + [f"method={method}"]))
    assert tr.plan.prescoring and tr.ref_model is not None
    with torch.no_grad():  # move the policy away from the frozen reference so that KL ≠ 0
        g = torch.Generator().manual_seed(0)
        for p in tr.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    rollouts, _ = tr.collect(1)
    batch = tr.assemble(rollouts)
    tr.objective.compute_advantages(batch)

    def hand_logp(model):
        am = batch.attention_mask
        pos = (am.cumsum(-1) - 1).clamp_min(0)
        with torch.no_grad():
            logits = model(input_ids=batch.input_ids, attention_mask=am, position_ids=pos).logits.double()
        P, Tr = batch.prompt_len, batch.response_mask.shape[1]
        out = torch.zeros(batch.batch_size, Tr, dtype=D)
        for i in range(batch.batch_size):
            for t in range(int(batch.response_mask[i].sum())):
                lp = Fn.log_softmax(logits[i, P - 1 + t] / tr.temperature, -1)
                out[i, t] = lp[batch.input_ids[i, P + t]]
        return out

    old, refl = hand_logp(tr.model), hand_logp(tr.ref_model)
    torch.testing.assert_close(batch.old_logp.double(), old, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(batch.ref_logp.double(), refl, rtol=1e-4, atol=1e-4)
    assert float((old - refl).abs().max()) > 1e-3  # the KL term is not trivially zero
    mask = batch.response_mask.double()
    rewards = batch.rewards.double().tolist()
    gids = batch.group_ids.tolist()
    if method == "rloo":
        beta = float(tr.cfg.advantage.kl_coef)
        R = [rewards[i] - beta * float(((old[i] - refl[i]) * mask[i]).sum()) for i in range(len(rewards))]
        want = ref.loo_advantages(R, gids, "raw")
        got = batch.advantages.double()
        for i in range(len(rewards)):
            if mask[i].sum() > 0:
                torch.testing.assert_close(got[i][mask[i] > 0], torch.full_like(got[i][mask[i] > 0], want[i]),
                                           rtol=1e-4, atol=1e-4)
    else:
        c = Case(logp=old, old_logp=old, ref_logp=refl, mask=mask, rewards=rewards, group_ids=gids,
                 is_demo=[False] * len(rewards), loss_weights=[1.0] * len(rewards))
        want = ref.reinforce_pp_kl_advantages(c, beta=float(tr.cfg.advantage.kl_coef))
        torch.testing.assert_close(batch.advantages.double(), want, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------------------------
# G²RPO, EM-PG, ETR
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("G", GS)
def test_g2rpo_gradient_matches_gaussian_rank_reading(G):
    """G²RPO core: Â = Φ⁻¹(mid-rank CDF) per group (statistics.NormalDist), GRPO clip/aggregation."""
    c = case(G)
    assert_same(grad("g2rpo", batch_of(c), c.logp), ref_grad(ref.g2rpo_loss, c))


@pytest.mark.parametrize("G", GS)
def test_g2rpo_gradient_with_continuous_rewards(G):
    c = case(G)
    g = torch.Generator().manual_seed(G)
    c.rewards = [float(x) for x in torch.rand(c.B, generator=g)]
    c.rewards[G:2 * G] = [0.5] * G  # keep one all-equal group
    assert_same(grad("g2rpo", batch_of(c), c.logp), ref_grad(ref.g2rpo_loss, c))


@pytest.mark.parametrize("G", GS)
def test_em_pg_gradient_matches_reward_weighted_mle(G):
    """EM-PG: −(1/Σ|o|) Σ_i (r_i/mean_group r) Σ_t log π_θ; all-correct groups keep weight 1."""
    c = case(G, seed=1)  # seed 1: the all-equal group is all-correct
    assert c.rewards[G:2 * G] == [1.0] * G
    assert_same(grad("em_pg", batch_of(c), c.logp), ref_grad(ref.em_pg_loss, c))
    assert_same(grad("em_pg", batch_of(c), c.logp, "advantage.temperature=0.5"),
                ref_grad(ref.em_pg_loss, c, temperature=0.5))


@pytest.mark.parametrize("G", GS)
def test_etr_gradient_matches_elastic_clip_reading(G):
    """ETR: bounds 0.2·min(3, (1 + 0.5|Â|)(1 + Var_g/0.25)) from the per-row group reward variance
    the trainer puts in batch.rows; at least one token sits between the GRPO and the ETR bound."""
    c = case(G)
    a = ref.grpo_advantages(c.rewards, c.group_ids)
    ratio = torch.exp(c.logp - c.old_logp)
    between = [(i, t) for i in range(c.B) for t in range(c.length(i))
               if a[i] != 0 and ((a[i] > 0 and float(ratio[i, t]) > 1.2) or (a[i] < 0 and float(ratio[i, t]) < 0.8))]
    assert between  # GRPO would clip these; ETR's wider bounds keep some of them
    assert_same(grad("etr", batch_of(c), c.logp), ref_grad(ref.etr_loss, c))


def test_etr_needs_the_group_variance_row():
    c = case(4)
    b = to_batch(c)
    with pytest.raises(ValueError, match="group_reward_var"):
        algorithm("etr").objective.batch_loss(b, c.logp.clone().requires_grad_(True))


# ------------------------------------------------------------------------------------------------
# D³S
# ------------------------------------------------------------------------------------------------

def d3s_case(G: int, seed: int = 0) -> Case:
    """Continuous rewards (so the max-variance subset is unique up to zero advantages), one
    all-equal group and a singleton."""
    c = case(G, seed)
    g = torch.Generator().manual_seed(100 + G + seed)
    c.rewards = [float(x) for x in torch.rand(c.B, generator=g)]
    c.rewards[G:2 * G] = [0.25] * G
    return c


def rollouts_of(c: Case) -> Rollouts:
    r = Rollouts(problems=[Problem(prompt=f"p{g}", answer="0") for g in sorted(set(c.group_ids))])
    remap = {g: k for k, g in enumerate(sorted(set(c.group_ids)))}
    for i in range(c.B):
        r.add_row(remap[c.group_ids[i]], [1] * c.length(i), "x", c.rewards[i], {}, is_demo=False,
                  meta={"row": i})
    return r


def rows_of(c: Case, rows: list) -> Case:
    return Case(logp=c.logp[rows], old_logp=c.old_logp[rows], ref_logp=c.ref_logp[rows], mask=c.mask[rows],
                rewards=[c.rewards[i] for i in rows], group_ids=[c.group_ids[i] for i in rows],
                is_demo=[c.is_demo[i] for i in rows], loss_weights=[c.loss_weights[i] for i in rows])


def test_max_variance_subset_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    for n in range(1, 9):
        for _ in range(5):
            vals = [float(x) for x in torch.randn(n, generator=g)]
            if n > 2:
                vals[1] = vals[2]  # a tie
            for k in range(1, n + 1):
                pick = max_variance_subset(vals, k)
                assert len(pick) == k == len(set(pick))
                assert ref.pop_var([vals[i] for i in pick]) == pytest.approx(
                    ref.brute_force_max_variance(vals, k), abs=1e-12)


@pytest.mark.parametrize("G", (2, 4))
@pytest.mark.parametrize("step", (1, 5, 10))
def test_d3s_stage_keeps_the_max_variance_rollouts_on_schedule(G, step):
    """⌈f·n⌉ rollouts kept, f = 0.5 + 0.5·progress; their full-group z-scores (recorded in the
    metadata) have the largest variance any subset of that size has (exhaustive search)."""
    c = d3s_case(G)
    info = StepInfo(step=step, total_steps=10)
    stage = MaxVarianceSubset(keep_init=0.5, keep_final=1.0)
    env = StageEnv(tokenizer=None, task=None, max_new_tokens=T, step=step, info=info)
    out = stage(rollouts_of(c), env)
    full = ref.grpo_advantages(c.rewards, c.group_ids)
    k = math.ceil((0.5 + 0.5 * info.progress) * c.B)
    assert len(out) == k and env.stats["train/d3s_keep_frac"] == pytest.approx(k / c.B)
    kept = [m["row"] for m in out.meta]
    for m in out.meta:
        assert m["d3s_advantage"] == pytest.approx(full[m["row"]], abs=1e-12)
    assert ref.pop_var([full[i] for i in kept]) == pytest.approx(ref.brute_force_max_variance(full, k), abs=1e-10)


def test_d3s_stage_needs_the_step_context():
    stage = MaxVarianceSubset()
    assert stage.needs().step_info
    with pytest.raises(ValueError, match="step context"):
        stage(rollouts_of(d3s_case(2)), StageEnv(tokenizer=None, task=None, max_new_tokens=T))


@pytest.mark.parametrize("G", GS)
@pytest.mark.parametrize("step", (1, 4))
def test_d3s_gradient_matches_reference_on_the_kept_rows(G, step):
    """Loss on the stage's output: GRPO clip with the pre-selection z-scores and only the tokens
    whose |Â|·H reaches the (1 − K) quantile, K = 0.2 + 0.8·progress."""
    c = d3s_case(G)
    info = StepInfo(step=step, total_steps=10)
    env = StageEnv(tokenizer=None, task=None, max_new_tokens=T, step=step, info=info)
    out = MaxVarianceSubset(keep_init=0.5, keep_final=1.0)(rollouts_of(c), env)
    kept = [m["row"] for m in out.meta]
    ck = rows_of(c, kept)
    full = ref.grpo_advantages(c.rewards, c.group_ids)
    H = 0.1 + 2.0 * torch.rand(ck.B, T, generator=torch.Generator().manual_seed(G), dtype=D)
    b = batch_of(ck, info=info, meta=out.meta)
    algo = algorithm("d3s")
    assert algo.needs().entropy and algo.needs().step_info
    want = ref_grad(ref.d3s_loss, ck, adv_rows=[full[i] for i in kept], entropy=H, progress=info.progress)
    assert_same(grad("d3s", b, ck.logp, entropy=H, algo=algo), want)


# ------------------------------------------------------------------------------------------------
# MDPO, R²VPO: step context and state
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("G", GS)
@pytest.mark.parametrize("step", (1, 4, 10))
def test_mdpo_gradient_matches_annealed_proximal_objective(G, step):
    """MDPO: −E[ρÂ] + (1/(1 − progress))·E[ρ log ρ − ρ + 1], no clip, token means."""
    c = case(G)
    info = StepInfo(step=step, total_steps=10)
    assert_same(grad("mdpo", batch_of(c, info=info), c.logp), ref_grad(ref.mdpo_loss, c, progress=info.progress))


@pytest.mark.parametrize("G", GS)
def test_r2vpo_gradient_matches_lagrangian(G):
    c = case(G)
    assert_same(grad("r2vpo", batch_of(c), c.logp), ref_grad(ref.r2vpo_loss, c, lam=1.0, delta=0.01))


def _ctx(log_ratios: list, pad: int = 1) -> TokenContext:
    lr = torch.tensor([log_ratios + [0.0] * pad], dtype=D)
    mask = torch.tensor([[1.0] * len(log_ratios) + [0.0] * pad], dtype=D)
    old = torch.full_like(lr, -1.0)
    return TokenContext(logp=old + lr + torch.where(mask > 0, 0.0, 5.0), old_logp=old * mask,
                        advantages=torch.zeros_like(lr), response_mask=mask,
                        is_demo=torch.zeros(1, dtype=torch.bool))


def test_r2vpo_dual_ascent_matches_hand_numbers():
    """λ ← [λ + η(Var̂ − δ)]₊ with Var̂ the token mean of (ρ − 1)² over the step's microbatches."""
    reg = RatioVariance(lam_init=0.5, lr=2.0, delta=0.01)
    reg(_ctx([math.log(1.2), math.log(0.9)]))  # (ρ−1)²: 0.04, 0.01
    reg(_ctx([math.log(1.1)]))  # 0.01 → Var̂ = 0.06/3 = 0.02
    info = StepInfo(step=1, total_steps=3)
    reg.observe(info, {})
    assert reg.lam == pytest.approx(0.5 + 2.0 * (0.02 - 0.01), abs=1e-12)
    reg.observe(info, {})  # no microbatch seen: λ unchanged
    assert reg.lam == pytest.approx(0.52, abs=1e-12)
    reg(_ctx([0.0, 0.0]))  # Var̂ = 0 → 0.52 − 2·0.01
    reg.observe(info, {})
    assert reg.lam == pytest.approx(0.50, abs=1e-12)
    big = RatioVariance(lam_init=0.01, lr=10.0, delta=0.5)
    big(_ctx([0.0]))
    big.observe(info, {})
    assert big.lam == 0.0  # projected onto λ ≥ 0
    # the term's value is the violation Var − δ, its gradient λ·∇Var (straight-through)
    ctx = _ctx([math.log(1.2), math.log(0.9)])
    ctx.logp.requires_grad_(True)
    val = reg(ctx)
    mean = (val * ctx.response_mask).sum() / ctx.response_mask.sum()
    assert float(mean.detach()) == pytest.approx(0.025 - 0.01)
    (g,) = torch.autograd.grad(mean, ctx.logp)
    rho = torch.tensor([1.2, 0.9], dtype=D)
    want = 0.5 * 2 * (rho - 1) * rho / 2  # λ · d/dlogp mean((ρ−1)²), ρ = e^{logp − old}
    torch.testing.assert_close(g[0, :2], want)
    assert float(g[0, 2]) == 0.0
    # the logged, worker-reduced violation wins over the local estimate
    reg2 = RatioVariance(lam_init=1.0, lr=1.0, delta=0.01)
    reg2(_ctx([math.log(1.5)]))  # local Var̂ 0.25
    reg2.observe(info, {"train/reg/ratio_var": 0.09})
    assert reg2.lam == pytest.approx(1.09, abs=1e-12)


def test_r2vpo_lambda_round_trips_through_component_state():
    algo = algorithm("r2vpo")
    st = tree_state(algo)
    assert st == {"objective.regularizers.ratio_var": {"lam": 1.0}}
    reg = algo.objective.regularizers["ratio_var"]
    reg.lam = 0.37
    other = algorithm("r2vpo")
    load_tree_state(other, tree_state(algo))
    assert other.objective.regularizers["ratio_var"].lam == 0.37
    for m in sorted(NEW_PRESETS - {"r2vpo"}):  # the others keep no state across steps
        assert tree_state(algorithm(m)) == {}, m


def test_r2vpo_lambda_is_updated_by_training_and_saved_in_the_checkpoint(shared_cache):
    """On-policy (1 epoch, 1 minibatch) ρ ≡ 1, so Var̂ = 0 and λ = 1 − 2·0.01 after two steps."""
    from ablate.config import compose_config
    from ablate.train.trainer import Trainer
    from tests.test_train import FAST

    cfg = compose_config(FAST + ["method=r2vpo"])
    tr = Trainer(cfg)
    tr.run(progress=False)
    assert tr.history_final["train/reg/ratio_var"] == pytest.approx(-0.01, abs=1e-7)  # what observe reads
    assert tr.algo.objective.regularizers["ratio_var"].lam == pytest.approx(0.98, abs=1e-7)
    sd = tr.state_dict()
    assert sd["components"]["objective.regularizers.ratio_var"] == {"lam": pytest.approx(0.98)}
    fresh = Trainer(cfg)
    fresh.load_state_dict(sd)
    assert fresh.algo.objective.regularizers["ratio_var"].lam == tr.algo.objective.regularizers["ratio_var"].lam


# ------------------------------------------------------------------------------------------------
# DCPO: a second temperature, the last step's entropy
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("G", GS)
@pytest.mark.parametrize("entropy", (None, 0.3, 0.7))
def test_dcpo_gradient_matches_authors_code(G, entropy):
    """DCPO (597358816/DCPO fit()): T from the last step's entropy (none yet = 0, as the code's
    initial value), α = min(|0.5 − H|, 0.1)/acc → α/(1+α), Â = (1−α)Â_z + α·1[r > 0.05]·e^{lp_T − lp},
    dual-clip PPO (0.2, c = 3), token-mean."""
    c = case(G)
    g = torch.Generator().manual_seed(7 * G)
    lt = {t: torch.where(c.mask > 0, c.old_logp + 0.3 * torch.randn(c.B, T, generator=g, dtype=D),
                         torch.zeros_like(c.old_logp)) for t in (0.8, 1.2)}
    last = {} if entropy is None else {"train/entropy": entropy}
    info = StepInfo(step=2, total_steps=10, last_metrics=last)
    b = batch_of(c, info=info, **{"old_logp@0.8": lt[0.8], "old_logp@1.2": lt[1.2]})
    need = algorithm("dcpo").needs()
    assert need.temperatures == frozenset({0.8, 1.2}) and need.logp_before_advantage and need.step_info
    want = ref_grad(ref.dcpo_loss, c, old_logp_t=lt, entropy=0.0 if entropy is None else entropy)
    assert_same(grad("dcpo", b, c.logp), want)


def test_dcpo_schedule_hand_numbers():
    # H = 0.3 ≤ 0.5 → T = 1.2; α = min(0.2, 0.1)/0.25 = 0.4 → 0.4/1.4
    assert ref.dcpo_schedule(0.3, 0.25) == (1.2, pytest.approx(0.4 / 1.4))
    algo = algorithm("dcpo")
    c = case(4)
    c.rewards = [1.0] + [0.0] * (c.B - 1)
    b = batch_of(c, info=StepInfo(step=2, total_steps=5, last_metrics={"train/entropy": 0.9}))
    t, a = algo.objective.primary.advantage.schedule(b)
    acc = 1 / c.B
    assert t == 0.8 and a == pytest.approx((0.1 / acc) / (1 + 0.1 / acc))
