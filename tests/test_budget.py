"""The one generation-budget rule (ablate.rollout.resolve_budget) and the length constants that
derive from it: Dr.GRPO's and HPT's L_max must be the budget generation really uses, on every task."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.config import compose_config
from ablate.rollout import DEFAULT_BUDGET, pin_budget, resolve_budget
from ablate.tasks import build_task
from ablate.train.components import build_algorithm
from ablate.upge.aggregation import Aggregation

GSM = str(Path(__file__).parent / "fixtures" / "gsm8k_tiny.jsonl")
TASKS = {"addition": [], "scratchpad": ["task=scratchpad"], "countdown": ["task=countdown"],
         "gsm8k_jsonl": ["task=gsm8k_jsonl", f"task.path={GSM}"]}


class _NoBudget:
    max_new_tokens = None


def test_rule_rollout_wins_when_set_even_below_the_task():
    task = build_task("scratchpad")
    assert resolve_budget(None, task).tokens == task.max_new_tokens == 64
    short = resolve_budget(8, task)
    assert (short.tokens, short.source) == (8, "rollout.max_new_tokens")
    assert "truncated" in short.describe()  # shorter than the task asks: said at run start
    assert resolve_budget(100, task).tokens == 100
    assert resolve_budget(None, _NoBudget()).tokens == DEFAULT_BUDGET


def _constants(cfg) -> list[float]:
    """Every Aggregation constant of the built algorithm (the objective's terms, however nested)."""
    algo = build_algorithm(cfg)
    seen, out, todo = set(), [], [algo]
    while todo:
        x = todo.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, Aggregation):
            out.append(x.constant)
        elif hasattr(x, "__dict__"):
            todo.extend(v for v in vars(x).values() if hasattr(v, "__dict__") or isinstance(v, (list, dict)))
        if isinstance(x, (list, tuple)):
            todo.extend(x)
        elif isinstance(x, dict):
            todo.extend(x.values())
    return out


@pytest.mark.parametrize("method", ["drgrpo", "hpt"])
@pytest.mark.parametrize("task", list(TASKS))
def test_length_constant_is_the_effective_budget_on_every_task(method, task):
    """Before the fix L_max was rollout.max_new_tokens (8) while generation used the task's budget."""
    cfg = compose_config([f"method={method}", *TASKS[task]])
    t = build_task(cfg.task)
    budget = pin_budget(cfg, t)
    assert budget.source == "task.max_new_tokens" and budget.tokens == t.max_new_tokens
    consts = [c for c in _constants(cfg) if c is not None]
    assert consts and all(c == float(t.max_new_tokens) for c in consts), (consts, t.max_new_tokens)


@pytest.mark.parametrize("task", ["scratchpad", "gsm8k_jsonl"])
def test_rollout_max_new_tokens_alone_shortens_generation_and_the_constant(task):
    cfg = compose_config(["method=drgrpo", *TASKS[task], "rollout.max_new_tokens=9"])
    budget = pin_budget(cfg, build_task(cfg.task))
    assert budget.tokens == 9 < budget.task_tokens
    assert [c for c in _constants(cfg) if c is not None] == [9.0]


def test_arithmetic_budget_has_slack_and_checks_it():
    """addition: 8 tokens (the old effective budget); the DAPO window (20% → 2 tokens) then never
    reaches a correct answer (≤ 3 digits + EOS)."""
    from ablate.errors import ConfigError
    from ablate.pipeline.stages import OverlongShaping
    t = build_task("addition")
    assert t.max_new_tokens == 8
    window = OverlongShaping(cache_len=None, cache_frac=0.2).window(t.max_new_tokens)
    assert t.max_new_tokens - window >= 4
    assert build_task({"_target_": "ablate.tasks.arithmetic.Arithmetic", "max_new_tokens": None}).max_new_tokens == 4
    with pytest.raises(ConfigError, match="task.max_new_tokens"):
        build_task({"_target_": "ablate.tasks.arithmetic.Arithmetic", "max_new_tokens": 3})


def test_run_summary_records_the_effective_budget_and_its_source(tmp_path):
    from tests.test_train import _run
    summary, _ = _run(tmp_path, "method=drgrpo", "task=scratchpad", "rollout.max_new_tokens=12")
    assert summary["generation_budget"] == {"tokens": 12, "source": "rollout.max_new_tokens"}
