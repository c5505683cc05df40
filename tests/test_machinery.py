"""Machinery outside the loss, with hand-computed numbers: GAE (and T-PPO's extended GAE), the
clipped value loss, explained variance, the knapsack allocation vs brute force, the per-prompt
history, variable-group advantages, the PF-PPO filter, the generating stages (ReMax, RePO) on a
stand-in ``env.generate``, and, through the real trainer, variable group sizes, extra-generation
accounting and kill/resume of the critic and the prompt store."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from ablate.config import compose_config
from ablate.critic.functional import explained_variance, value_loss
from ablate.upge.functional import gae
from ablate.errors import ConfigError
from ablate.pipeline.base import Generated, Rollouts, StageEnv
from ablate.pipeline.budget import (KnapsackBudget, PromptHistory, VarianceAwareSampling,
                                    knapsack_allocate, knapsack_dp, knapsack_value)
from ablate.pipeline.filtering import PolicyFilter, pf_ppo_weights
from ablate.pipeline.generative import GreedyBaseline, Rephrase
from ablate.registry import build
from ablate.tasks.base import Problem, Reward
from ablate.upge.batch import RolloutBatch
from ablate.upge.slots.value_advantage import GAE
from tests.upge.reference_machinery import brute_force_extras

FAST = [
    "train.steps=2", "train.prompts_per_step=4", "train.group_size=4", "train.microbatches=2",
    "eval.num_prompts=4", "eval.n=4", "eval.every=0", "tracker=none", "threads=1",
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
    "model.warm_start.steps=10", "model.warm_start.target_pass1=null",
]


# ----------------------------------------------------------------------------------------- GAE
def _traj():
    """Row 0: 3 tokens, reward 1, V = (0.5, 0.2, 0.6); row 1: 2 tokens + padding (V garbage 9), reward 0."""
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.2, 0.6], [0.3, 0.1, 9.0]], dtype=torch.float64)
    rewards = torch.tensor([[0.0, 0, 1], [0, 0, 0]], dtype=torch.float64)
    return rewards, values, mask


def test_gae_matches_hand_calculation():
    # γ = 0.9, λ = 0.8 (γλ = 0.72). Row 0: δ2 = 1 − 0.6 = 0.4; δ1 = 0.9·0.6 − 0.2 = 0.34,
    # A1 = 0.34 + 0.72·0.4 = 0.628; δ0 = 0.9·0.2 − 0.5 = −0.32, A0 = −0.32 + 0.72·0.628 = 0.13216.
    # Row 1: δ1 = −0.1; δ0 = 0.9·0.1 − 0.3 = −0.21, A0 = −0.21 − 0.072 = −0.282 (padding ignored).
    r, v, m = _traj()
    adv, ret = gae(r, v, m, 0.9, 0.8)
    want = torch.tensor([[0.13216, 0.628, 0.4], [-0.282, -0.1, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(adv, want)
    torch.testing.assert_close(ret, (want + v) * m)


def test_extended_gae_bootstraps_truncated_rows_with_the_last_value():
    # T-PPO: row 1 truncated ⇒ V after its last token := V(s_1) = 0.1: δ1 = 0.9·0.1 − 0.1 = −0.01,
    # A0 = −0.21 + 0.72·(−0.01) = −0.2172; row 0 finished ⇒ unchanged.
    r, v, m = _traj()
    adv, _ = gae(r, v, m, 0.9, 0.8, last_value=torch.tensor([0.0, 0.1], dtype=torch.float64))
    torch.testing.assert_close(adv[1, :2], torch.tensor([-0.2172, -0.01], dtype=torch.float64))
    torch.testing.assert_close(adv[0], torch.tensor([0.13216, 0.628, 0.4], dtype=torch.float64))


def _batch(rewards, mask, values=None, truncated=None):
    B, T = mask.shape
    b = RolloutBatch(input_ids=torch.zeros(B, T + 1, dtype=torch.long),
                     attention_mask=torch.ones(B, T + 1, dtype=torch.long),
                     response_mask=mask.float(), old_logp=torch.zeros(B, T),
                     rewards=torch.tensor(rewards, dtype=torch.float32),
                     group_ids=torch.arange(B), prompt_len=1)
    if values is not None:
        b.rows["values"] = values.float()
    if truncated is not None:
        b.rows["truncated"] = torch.tensor(truncated)
    return b


def test_gae_slot_uses_the_truncation_flag_and_writes_returns():
    _, v, m = _traj()
    batch = _batch([1.0, 0.0], m, v * m, truncated=[False, True])
    a = GAE(gamma=0.9, lam=0.8, whiten=False, truncation="bootstrap")(batch)
    torch.testing.assert_close(a[1, :2].double(), torch.tensor([-0.2172, -0.01], dtype=torch.float64))
    torch.testing.assert_close(batch.rows["returns"][0].double(),
                               torch.tensor([0.63216, 0.828, 1.0], dtype=torch.float64))
    with pytest.raises(RuntimeError, match="values"):
        GAE()(_batch([1.0, 0.0], m))
    with pytest.raises(ConfigError, match="truncation"):
        GAE(truncation="partial")


# ------------------------------------------------------------------------------ value loss / EV
def test_clipped_value_loss_and_clip_fraction_by_hand():
    # token 0: V=1, V_old=0, R=2, c=0.5: (1−2)² = 1 < (0.5−2)² = 2.25 ⇒ clipped, 2.25;
    # token 1: V=0.2, V_old=0, R=0.3: inside the clip, 0.01. Loss = ½ (2.25 + 0.01)/2 = 0.565.
    vpred = torch.tensor([[1.0, 0.2]])
    old = torch.zeros(1, 2)
    ret = torch.tensor([[2.0, 0.3]])
    loss, nclip = value_loss(vpred, old, ret, torch.ones(1, 2), 0.5, 2.0)
    assert float(loss) == pytest.approx(0.565)
    assert float(nclip) == 1.0
    loss_u, n_u = value_loss(vpred, old, ret, torch.ones(1, 2), None, 2.0)
    assert float(loss_u) == pytest.approx(0.5 * (1.0 + 0.01) / 2) and float(n_u) == 0.0


def test_explained_variance_by_hand():
    # V = (1, 2, 3), R = (1, 2, 4): Var(R − V) = Var(0, 0, 1) = 1/3, Var(R) = 7/3 (unbiased)
    v = torch.tensor([[1.0, 2.0, 3.0, 7.0]])
    r = torch.tensor([[1.0, 2.0, 4.0, -5.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the padded 4th token is ignored
    assert explained_variance(v, r, m) == pytest.approx(1 - (1 / 3) / (7 / 3 + 1e-5))
    assert explained_variance(r, r, m) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------ knapsack
def test_knapsack_value_function_by_hand():
    assert knapsack_value(2, 0.5) == pytest.approx((1 - 0.25 - 0.25) * 0.5 * 0.25)  # 0.0625
    assert knapsack_value(8, 0.0) == 0.0 and knapsack_value(8, 1.0) == 0.0


@pytest.mark.parametrize("p,min_n,max_extra,budget", [
    ([0.3, 0.6, 0.1, 0.5], 2, 4, 7),
    ([0.05, 0.9, 0.5], 2, 6, 9),
    ([0.2, 0.2, 0.7, 0.95, 0.4], 1, 3, 8),
])
def test_knapsack_dp_matches_brute_force(p, min_n, max_extra, budget):
    extra = knapsack_dp(p, min_n, max_extra, budget)
    assert int(extra.sum()) == budget and int(extra.max()) <= max_extra
    got = sum(knapsack_value(k + min_n, pi) if k > 0 else 0.0 for k, pi in zip(extra, p))
    best, _ = brute_force_extras(p, min_n, max_extra, budget)
    assert got == pytest.approx(best, rel=1e-12)


def test_knapsack_dp_spreads_an_infeasible_budget_evenly():
    extra = knapsack_dp([0.5, 0.5], 2, 3, 10)  # at most 6 usable: 4 left spread evenly
    assert list(extra) == [5, 5]


def test_knapsack_allocation_rules():
    # unknown prompts get n; 0<p<1 get min_n + DP share; p=0 gets the fallback excess first
    alloc, info = knapsack_allocate([None, 0.5, 0.0, 1.0], n=8, min_n=2, max_n=32)
    assert int(alloc.sum()) == 32 and alloc[0] == 8 and alloc[3] == 2
    # need(p=0.5) = log(0.1)/log(0.5) = 3.32 → 3 < 32 − 8 − 6 = 18 left ⇒ fallback: 15 to p=0
    assert info["fallback"] == 1.0 and alloc[2] == 2 + 15 and alloc[1] == 2 + 3
    # no prompt with 0<p<1: the leftover goes to p = 0 prompts
    alloc, _ = knapsack_allocate([0.0, 1.0, 0.0], n=4, min_n=2, max_n=16)
    assert list(alloc) == [5, 2, 5]
    # only p = 1 prompts: uniform n
    alloc, _ = knapsack_allocate([1.0, 1.0], n=4)
    assert list(alloc) == [4, 4]
    # without fallback the DP uses all the budget, within max_n
    alloc, info = knapsack_allocate([0.3, 0.6, 0.1, 0.5], n=4, min_n=2, max_n=6, allow_fallback=False)
    assert int(alloc.sum()) == 16 and alloc.max() <= 6 and alloc.min() >= 2 and info["fallback"] == 0.0


# ------------------------------------------------------------------------------------ history
def test_prompt_history_window_min_count_and_state():
    h = PromptHistory(window=4, min_count=3)
    h.record("a", [1.0, 0.0], step=1)
    assert h.success_rate("a") is None  # 2 < min_count
    h.record("a", [1.0, 1.0, 1.0], step=2)
    # last visit had 3 < window samples ⇒ mean of the last 4 rewards (0, 1, 1, 1)
    assert h.success_rate("a") == pytest.approx(0.75)
    h.record("a", [0.0, 0.0, 0.0, 1.0, 0.0], step=5)  # ≥ window in one visit ⇒ that visit's mean
    assert h.success_rate("a") == pytest.approx(0.2)
    assert h.get("a")["last_step"] == 5 and h.get("a")["count"] == 10
    h2 = PromptHistory(window=4, min_count=3)
    h2.load_state_dict(copy.deepcopy(h.state_dict()))
    assert h2.state_dict() == h.state_dict() and h2.success_rate("a") == pytest.approx(0.2)


def test_problem_uid_is_stable_and_respects_meta_id():
    assert Problem("1+2=", "3").uid == Problem("1+2=", "3").uid != Problem("1+3=", "4").uid
    assert Problem("1+2=", "3", meta={"id": 17}).uid == "17"


# ------------------------------------------------------------------------- variable group sizes
def _vbatch():
    # groups of size 1, 3, 2: singleton (r=1), mixed (1, 0, 0), all-equal (1, 1)
    rewards = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    mask = torch.tensor([[1.0, 1, 0]] * 6)
    b = _batch(rewards, mask)
    b.group_ids = torch.tensor([0, 1, 1, 1, 2, 2])
    return b


def test_group_advantages_handle_variable_group_sizes_by_hand():
    b = _vbatch()
    z = build("advantage", "group_zscore")(b)[:, 0]
    s = math.sqrt(1 / 3)  # unbiased std of (1, 0, 0)
    torch.testing.assert_close(z, torch.tensor([1 / (1 + 1e-6), (2 / 3) / (s + 1e-6), (-1 / 3) / (s + 1e-6),
                                                (-1 / 3) / (s + 1e-6), 0.0, 0.0]))
    loo = build("advantage", "rloo")(b)[:, 0]
    torch.testing.assert_close(loo, torch.tensor([1.0, 1.0, -0.5, -0.5, 0.0, 0.0]))
    from ablate.upge.functional import group_reward_stats
    mean, var, size = group_reward_stats(b.rewards, b.group_ids, torch.ones(6, dtype=torch.bool))
    assert size.tolist() == [1, 3, 3, 3, 2, 2]
    torch.testing.assert_close(mean.float(), torch.tensor([1.0, 1 / 3, 1 / 3, 1 / 3, 1.0, 1.0]))


# ---------------------------------------------------------------------------------- stages
class _Task:
    """Verifier stand-in: the answer must match exactly."""

    def verify(self, p, text):
        ok = float(text == p.answer)
        return Reward(total=ok, components={"correct": ok}, meta={"pred": text})


def _rollouts(groups):
    """groups: list of (problem, [(text, reward), ...])."""
    r = Rollouts(problems=[p for p, _ in groups], prompt_ids=[[1] for _ in groups])
    for g, (_, rows) in enumerate(groups):
        for text, rew in rows:
            r.add_row(g, [5, 2], text, rew, {"correct": rew}, is_demo=False)
    return r


def _env(generate=None, seed=0):
    return StageEnv(tokenizer=None, task=_Task(), max_new_tokens=4, step=3,
                    rng=np.random.default_rng(seed), group_size=4, generate=generate)


def test_pf_ppo_weights_are_verls():
    s = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(pf_ppo_weights(s, "pow", 2.0), [1 + 1e-8, 4 + 1e-8, 0.25 + 1e-8])
    np.testing.assert_allclose(pf_ppo_weights(s, "max_min"), [1 + 1e-8, 1 + 1e-8, 1e-8])
    np.testing.assert_allclose(pf_ppo_weights(s, "max_random"), [0.4 + 1e-8, 0.1 + 1e-8, 0.1 + 1e-8])


def test_pf_ppo_filter_modes():
    p1, p2 = Problem("a", "1"), Problem("b", "2")
    r = _rollouts([(p1, [("x", 0.0), ("1", 1.0), ("y", 0.0)]), (p2, [("2", 1.0), ("z", 0.0)])])
    best = PolicyFilter("best_of_n")(copy.deepcopy(r), _env())
    assert best.texts == ["1", "2"]
    bw = PolicyFilter("best_worst")(copy.deepcopy(r), _env())
    assert sorted(bw.texts) == ["1", "2", "x", "z"]
    pw = PolicyFilter("max_min")(copy.deepcopy(r), _env())  # max 1, min 0: every row has weight 1
    assert len(pw) == len(r)
    r0 = _rollouts([(p1, [("x", 0.0), ("1", 1.0)])])
    kept = PolicyFilter("pow", 2.0)(r0, _env())  # |0|² + 1e-8 vs 1: only the rewarded row survives
    assert kept.texts == ["1", "1"]
    with pytest.raises(ConfigError, match="mode"):
        PolicyFilter("best")


def test_greedy_baseline_writes_the_greedy_reward_per_prompt():
    calls = []

    def generate(prompts, n, temperature):
        calls.append((list(prompts), n, temperature))
        return Generated(response_ids=[[3]] * len(prompts), texts=["1", "9"], truncated=[False, False])

    r = _rollouts([(Problem("a", "1"), [("1", 1.0), ("0", 0.0)]), (Problem("b", "2"), [("2", 1.0)])])
    env = _env(generate)
    out = GreedyBaseline()(r, env)
    assert calls == [(["a", "b"], 1, 0.0)]  # one greedy decode per prompt
    assert [m["remax_baseline"] for m in out.meta] == [1.0, 1.0, 0.0]
    assert env.stats["train/remax_baseline_mean"] == 0.5
    with pytest.raises(RuntimeError, match="generate"):
        GreedyBaseline()(r, _env(None))


def test_rephrase_replaces_the_lowest_reward_rollout_of_failing_groups_only():
    seen = []

    def generate(prompts, n, temperature):
        seen.extend(prompts)
        return Generated(response_ids=[[7, 2]] * len(prompts), texts=["1"] * len(prompts),
                         truncated=[False] * len(prompts))

    fail = Problem("3-2=", "1", demo="1")
    ok = Problem("1+1=", "2", demo="2")
    nodemo = Problem("2-1=", "1")
    r = _rollouts([(fail, [("0", 0.0), ("5", 0.0)]), (ok, [("2", 1.0), ("0", 0.0)]), (nodemo, [("7", 0.0)])])
    env = _env(generate)
    out = Rephrase(failure_threshold=1.0, template="{demo}={prompt}")(r, env)
    assert seen == ["1=3-2="]  # only the all-failed group with a demo
    assert out.rewards[:2] == [1.0, 0.0] and out.texts[0] == "1" and out.response_ids[0] == [7, 2]
    assert out.meta[0]["repo_rephrased"] and not out.is_demo[0]
    assert env.stats["train/repo_replaced"] == 1.0 and env.stats["train/repo_groups"] == 1.0
    with pytest.raises(ConfigError, match="template"):
        Rephrase(template="{prompt} only")


def test_budget_stage_plans_variable_counts_from_history():
    class T:
        def train_problems(self, n, rng):
            return [Problem(f"{i}+0=", str(i)) for i in range(n)]

    st = KnapsackBudget(n=4, min_n=2, max_n=10, window=4, min_count=2, pool_size=4)
    env = StageEnv(tokenizer=None, task=T(), max_new_tokens=2, rng=np.random.default_rng(0), group_size=4)
    probs, counts = st.plan([Problem("x", "0")] * 4, [4] * 4, env)
    assert counts == [4, 4, 4, 4] and sorted(p.prompt for p in probs) == ["0+0=", "1+0=", "2+0=", "3+0="]
    for p, rate in zip(probs, ([1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1])):
        st.history.record(p.uid, rate, step=1)
    probs2, counts2 = st.plan([Problem("x", "0")] * 4, [4] * 4, env)
    assert sum(counts2) == 16 and len(set(counts2)) > 1
    rates = {p.uid: st.history.success_rate(p.uid) for p in probs2}
    assert all(c == 2 for p, c in zip(probs2, counts2) if rates[p.uid] == 1.0)  # positive_n = min_n


def test_vas_weights_prompts_by_variance_promotion_score():
    class T:
        def train_problems(self, n, rng):
            return [Problem(f"{i}=", str(i)) for i in range(n)]

    st = VarianceAwareSampling(mix=1.0, pool_size=6, min_count=1, tds_weight=0.0)
    env = StageEnv(tokenizer=None, task=T(), max_new_tokens=2, rng=np.random.default_rng(0), group_size=4)
    pool = st.pool(env)
    for j, q in enumerate(pool):  # only prompt 0 has outcome variance
        st.history.record(q.uid, [1.0, 0.0] if j == 0 else [1.0, 1.0], step=1)
    w = st.weights(pool, env)
    assert w[0] == pytest.approx(0.25) and all(x == pytest.approx(1e-8) for x in w[1:])
    picks = [st.draw(1, env)[0].prompt for _ in range(20)]
    assert picks.count("0=") == 20


# ---------------------------------------------------------------------------- through the trainer
def _trainer(*overrides):
    from ablate.train.trainer import Trainer

    return Trainer(compose_config(FAST + list(overrides)))


def _knap_overrides():
    # the preset's stage config, with a 4-prompt pool so every prompt has a history after step 1
    return ["method=knapsack", "pipeline.stages.0.pool_size=4", "pipeline.stages.0.min_count=2",
            "pipeline.stages.0.max_n=8", "train.steps=3"]


def test_knapsack_trains_with_variable_group_sizes():
    tr = _trainer(*_knap_overrides(), "train.steps=2")
    st = tr.algo.stages[0]
    pool = st.pool(StageEnv(tokenizer=tr.tok, task=tr.task, max_new_tokens=tr.max_new_tokens))
    for j, q in enumerate(pool):  # an earlier epoch's history: two solved prompts, two at p = 0.5
        st.history.record(q.uid, [1.0] * 8 if j % 2 else [1.0, 0.0] * 4, step=0)
    seen = []
    orig = tr.assemble

    def spy(r):
        b = orig(r)
        seen.append(sorted(torch.bincount(b.group_ids).tolist()))
        return b

    tr.assemble = spy
    tr.run(progress=False)
    m = tr.state.last_metrics
    assert m["train/budget_known_frac"] == 1.0 and all(sum(x) == 16 for x in seen)
    # min_n = 2 each (8), 8 left; the p = 0.5 prompts need int(log 0.1 / log 0.5) = 3 each (6 < 8),
    # so the fallback gives the excess 2 to the non-DP (p = 1) prompts, and the DP 3 extra each
    assert seen[0] == [3, 3, 5, 5], seen
    assert len(seen) == 2
    assert math.isfinite(m["train/pg_loss"])


def test_ppo_logs_value_metrics_and_stage_generation_is_counted():
    tr = _trainer("method=ppo", "critic.lr=1e-3")
    tr.run(progress=False)
    m = tr.state.last_metrics
    for k in ("train/value_loss", "train/value_explained_var", "train/value_clip_frac", "perf/critic_s",
              "perf/values_s"):
        assert k in m and math.isfinite(m[k]), k
    tr = _trainer("method=remax")
    tr.run(progress=False)
    m = tr.state.last_metrics
    assert m["train/extra_gen_tokens"] >= 4 and m["perf/extra_gen_s"] > 0  # ≥ 1 token per prompt


def _resume_check(overrides, state_of):
    """Run 3 steps straight; run 2, take Trainer.state_dict(), load it into a fresh trainer, run the
    3rd: the restored component state and the 3rd step's metrics must be the same."""
    full = _trainer(*overrides)
    snaps = {}
    full.on_step_end = lambda t, s: snaps.__setitem__(s, copy.deepcopy(t.state_dict()))
    full.run(progress=False)
    resumed = _trainer(*overrides)
    before = state_of(resumed)
    resumed.load_state_dict(snaps[2])
    after = state_of(resumed)
    want = state_of_from(snaps[2], state_of, overrides)
    assert _same(after, want) and not _same(before, after)
    resumed.run(progress=False)
    a, b = full.state.last_metrics, resumed.state.last_metrics
    keys = [k for k in a if k.startswith("train/") and k in b]
    assert keys and all(a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9, nan_ok=True) for k in keys)


def state_of_from(sd, state_of, overrides):
    t = _trainer(*overrides)
    t.load_state_dict(sd)
    return state_of(t)


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def test_kill_resume_restores_the_critic():
    def critic_state(t):
        return {k: v.clone() for k, v in t.algo.critic.state_dict()["body"].items()} | \
            {"head." + k: v.clone() for k, v in t.algo.critic.state_dict()["head"].items()}

    _resume_check(["method=ppo", "critic.lr=1e-3", "train.steps=3"], critic_state)


def test_kill_resume_restores_the_prompt_store():
    def store(t):
        return copy.deepcopy(t.algo.stages[0].history.state_dict())

    _resume_check(_knap_overrides(), store)


# --------------------------------------------------- every variant on variable group sizes
from ablate.registry import variant_names  # noqa: E402

# estimators whose Â of a row depends only on its own group (plus the row itself)
GROUP_LOCAL = {"constant", "sign", "group_centered", "group_centered_onpolicy", "group_zscore",
               "group_zscore_onpolicy", "group_zscore_openrlhf", "group_zscore_trl", "rloo", "rloo_trl",
               "opo"}


def _var_groups_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sizes = (1, 3, 5, 2, 4)
    gids = torch.tensor([k for k, n in enumerate(sizes) for _ in range(n)])
    B, T = len(gids), 5
    rewards = torch.randint(0, 2, (B,), generator=g).float()
    rewards[gids == 3] = 1.0  # one all-equal group
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[4] = 0
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    b = _batch(rewards.tolist(), mask, values=torch.rand(B, T, generator=g) * mask,
               truncated=(lengths == T).tolist())
    b.group_ids = gids
    b.reward_components = torch.stack([rewards, torch.randint(0, 2, (B,), generator=g).float()], 1)
    b.old_logp = -torch.rand(B, T, generator=g) * mask
    # the side data the trainer fills when a variant declares it: greedy / stage advantages in the
    # rows' metadata, group statistics, prescored log-probs, a reference model, the step context
    from ablate.component import StepInfo
    from ablate.upge.functional import group_reward_stats
    b.rows["meta"] = [{"remax_baseline": float(k % 2), "d3s_advantage": 0.5} for k in gids.tolist()]
    gm, gv, gs = group_reward_stats(b.rewards, gids, torch.ones(B, dtype=torch.bool))
    b.rows.update({"group_reward_mean": gm, "group_reward_var": gv, "group_size": gs,
                   "old_logp@0.8": b.old_logp - 0.1, "old_logp@1.2": b.old_logp + 0.1})
    b.ref_logp = b.old_logp - 0.05 * mask
    b.info = StepInfo(step=1, total_steps=2)
    return b


@pytest.mark.parametrize("name", sorted(variant_names("advantage")))
def test_every_advantage_handles_variable_group_sizes(name):
    b = _var_groups_batch()
    a = build("advantage", name)(b)
    assert a.shape == b.response_mask.shape and torch.isfinite(a).all()
    assert (a[b.response_mask == 0] == 0).all()
    if name in GROUP_LOCAL:  # the same numbers as each group alone
        for k in b.group_ids.unique():
            rows = (b.group_ids == k).nonzero().squeeze(-1)
            alone = build("advantage", name)(b.select(rows))
            torch.testing.assert_close(a[rows], alone)


@pytest.mark.parametrize("name", sorted(variant_names("mask")))
def test_every_mask_handles_variable_group_sizes(name):
    from ablate.upge.slots.base import TokenContext

    b = _var_groups_batch(1)
    b.advantages = build("advantage", "group_zscore")(b)
    logp = (b.old_logp + 0.3 * torch.randn(b.old_logp.shape, generator=torch.Generator().manual_seed(2))) \
        * b.response_mask
    mask = build("mask", name)
    needs, gen = mask.needs(), torch.Generator().manual_seed(3)
    B, T = b.old_logp.shape  # what the trainer gives a mask that declares full logits / hidden states
    logits = torch.randn(B, T, 7, generator=gen) if needs.full_logits else None
    hidden = torch.randn(B, T, 5, generator=gen) if needs.hidden_states else None
    ctx = TokenContext.from_batch(b, logp, entropy=torch.rand(b.old_logp.shape), logits=logits,
                                  hidden=hidden, lr=1e-3 if needs.hidden_states else None)
    keep = mask(ctx).keep
    assert keep.shape == b.response_mask.shape and keep.dtype == torch.bool


def test_critic_config_errors_are_one_line_config_errors():
    from omegaconf import OmegaConf

    from ablate.train.components import build_critic

    for bad, field in (({"lr": -1.0}, "critic.lr"), ({"init": "zeros"}, "critic.init"),
                       ({"cliprange_value": 0}, "critic.cliprange_value"), ({"foo": 1}, "foo")):
        cfg = OmegaConf.create({"critic": {"_target_": "ablate.critic.ValueModel", **bad}})
        with pytest.raises(ConfigError, match=field):
            build_critic(cfg)
    cfg = OmegaConf.create({"critic": {"_target_": "ablate.tasks.base.Problem"}})
    with pytest.raises(ConfigError, match="value model"):
        build_critic(cfg)


def test_fresh_critic_differs_from_the_policy_body_and_scores_zero_first():
    from transformers import LlamaConfig, LlamaForCausalLM

    from ablate.critic import ValueModel

    torch.manual_seed(0)
    policy = LlamaForCausalLM(LlamaConfig(vocab_size=11, hidden_size=16, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=32))
    same, fresh = ValueModel(init="policy"), ValueModel(init="fresh")
    same.attach(policy)
    fresh.attach(policy)
    w = "layers.0.mlp.up_proj.weight"
    assert torch.equal(same._body.state_dict()[w], policy.model.state_dict()[w])
    assert not torch.equal(fresh._body.state_dict()[w], policy.model.state_dict()[w])
    b = _batch([1.0, 0.0], torch.tensor([[1.0, 1, 0], [1, 0, 0]]))
    b.input_ids = torch.randint(0, 11, (2, 4))
    v = same.score(b)
    assert v.shape == (2, 3) and torch.equal(v, torch.zeros(2, 3))  # zero-initialised head
    b.rows["values"] = v
    m = same.update(b, step=1)
    assert m["train/value_loss"] == pytest.approx(0.5 * (1.0 + 1.0) / 3)  # MC targets r at each token
    assert not torch.equal(same.score(b), v)  # it learned


def test_full_logits_reach_a_term_that_declares_them_and_no_other(monkeypatch):
    """Needs(full_logits): the trainer plans the [B, T, V] logits from the declared needs (LCO), and
    the default path never builds them (GRPO keeps today's forward)."""
    import ablate.train.trainer as trainer_mod

    tr = _trainer("method=lco", "train.steps=1")
    assert tr.plan.full_logits
    tr.run(progress=False)
    m = tr.state.last_metrics
    assert math.isfinite(m["train/pg_loss"]) and m["train/lco/kl"] >= 0.0

    def boom(*a, **k):
        raise AssertionError("full logits built without a component asking")

    monkeypatch.setattr(trainer_mod, "response_outputs", boom)
    tr = _trainer("method=grpo", "train.steps=1")
    assert not tr.plan.full_logits
    tr.run(progress=False)
    assert math.isfinite(tr.state.last_metrics["train/pg_loss"])
