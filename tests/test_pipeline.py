"""Pipeline stages on hand-made rollouts: filters, shaping, demo mixing, HPT gate."""

import pytest

from ablate.errors import ConfigError
from ablate.pipeline.base import Rollouts, StageEnv
from ablate.pipeline.stages import (DemosOnly, DynamicSampling, HPTGate, MixDemos, OverlongShaping,
                                    build_stages)
from ablate.tasks.base import Problem, Reward


class _Tok:
    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


class _Task:
    def verify(self, problem, completion):
        return Reward(total=float(completion == problem.answer), components={"correct": 1.0})


def _rollouts(rewards_per_group, lens=None):
    probs = [Problem(prompt=f"p{g}", answer="7", demo="7") for g in range(len(rewards_per_group))]
    r = Rollouts(problems=probs, prompt_ids=[[1, 2] for _ in probs])
    for g, rs in enumerate(rewards_per_group):
        for k, rew in enumerate(rs):
            n = lens[g][k] if lens else 2
            r.add_row(g, [5] * n, "x", rew, {}, is_demo=False)
    return r


ENV = StageEnv(tokenizer=_Tok(), task=_Task(), max_new_tokens=6)


def test_dynamic_sampling_drops_uniform_groups_like_dapo():
    r = _rollouts([[1, 1, 1], [0, 1, 0], [0, 0, 0], [1, 0, 0]])
    out = DynamicSampling()(r, StageEnv(tokenizer=_Tok(), task=_Task(), max_new_tokens=6))
    assert [p.prompt for p in out.problems] == ["p1", "p3"]
    assert out.group == [0, 0, 0, 1, 1, 1]
    assert out.prompt_ids == [[1, 2], [1, 2]]


def test_overlong_shaping_matches_dapo_soft_punishment():
    # L_max = 6, cache 2: lengths ≤ 4 get 0; 5 → −0.5; 6 → −1
    r = _rollouts([[0.0, 0.0, 0.0]], lens=[[4, 5, 6]])
    out = OverlongShaping(cache_len=2, penalty=1.0)(r, ENV)
    assert out.rewards == pytest.approx([0.0, -0.5, -1.0])


def test_demos_only_builds_one_demo_row_per_prompt():
    r = Rollouts(problems=[Problem("a", "7", demo="7"), Problem("b", "8", demo="8")],
                 prompt_ids=[[1], [2]])
    out = DemosOnly()(r, ENV)
    assert out.is_demo == [True, True] and out.group == [0, 1]
    assert out.response_ids[0] == [ord("7"), 0]


def test_mix_demos_replaces_last_rollout_with_demo_luffy_style():
    r = _rollouts([[0, 0, 1], [0, 0, 0]])
    out = MixDemos(num_demos=1, replace=True)(r, ENV)
    assert len(out) == 6
    for g in (0, 1):
        rows = out.rows_of(g)
        assert [out.is_demo[i] for i in rows] == [False, False, True]
        assert out.rewards[rows[-1]] == 1.0  # the demo is verified like a rollout


def test_hpt_gate_switches_unsolved_prompts_to_sft():
    r = _rollouts([[0, 0, 0], [0, 1, 0]])
    env = StageEnv(tokenizer=_Tok(), task=_Task(), max_new_tokens=6)
    out = HPTGate(gate=0, sft_coef=0.5)(r, env)
    # group 1 stays RL (3 rows); group 0 becomes one SFT demo row weighted 0.5
    assert sorted(out.is_demo) == [False, False, False, True]
    demo_row = out.is_demo.index(True)
    assert out.loss_weight[demo_row] == 0.5
    assert env.stats["train/sft_frac"] == 0.5


def test_build_stages_rejects_unknown_parameter_in_one_line():
    with pytest.raises(ConfigError) as e:
        build_stages([{"_target_": "ablate.pipeline.stages.DynamicSampling", "max_batches": 2}])
    assert "max_batches" in str(e.value) and "max_gen_batches" in str(e.value)
    assert "\n" not in str(e.value)


def test_overlong_window_as_a_fraction_of_the_budget_like_dapo_20_percent():
    """DAPO: L_cache = 4096 of L_max = 20480; with cache_frac the window follows the run's budget."""
    stage = OverlongShaping(cache_len=None, cache_frac=0.2)
    assert stage.window(20480) == 4096 and stage.window(64) == 13 and stage.window(2) == 1
    with pytest.raises(ValueError, match="exactly one"):
        OverlongShaping(cache_len=2, cache_frac=0.2)
