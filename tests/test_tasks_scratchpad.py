"""Scratchpad addition: the verifier reads only the final answer (never eval), demonstrations solve
their problems, the held-out split is disjoint from training, answers are long enough, the length
budget is checked."""

import builtins

import numpy as np
import pytest

from ablate.errors import ConfigError
from ablate.tasks import build_task
from ablate.tasks.scratchpad import ScratchpadAddition, final_answer, length_stats, scratchpad


@pytest.fixture(scope="module")
def task():
    return ScratchpadAddition()


def _p(task, a, b):
    return task._problem((a, b))


def test_scratchpad_format():
    assert scratchpad(347, 89) == "7+9+0=16;4+8+1=13;3+0+1=4;>436"
    assert scratchpad(999, 1) == "9+1+0=10;9+0+1=10;9+0+1=10;>1000"
    assert scratchpad(0, 0) == "0+0+0=0;>0"


@pytest.mark.parametrize("completion, correct, fmt", [
    ("7+9+0=16;4+8+1=13;3+0+1=4;>436", 1, 1),       # full scratchpad
    ("436", 1, 1),                                    # no scratchpad: bare answer
    (" 436 ", 1, 1),
    ("1+1+1=3;>436", 1, 1),                           # wrong scratchpad, right answer: correct
    ("7+9+0=16;4+8+1=13;3+0+1=4;>437", 0, 1),       # right scratchpad, wrong answer
    ("7+9+0=16;4+8+1=13;3+0+1=4;", 0, 0),            # no final answer
    ("7+9+0=16;>43>436", 1, 0),                       # last '>' wins; malformed grammar
    ("436;", 0, 0),
    (">", 0, 0),
    ("", 0, 0),
    ("4 3 6", 0, 0),
    ("347+89", 0, 0),
    (">0436", 1, 1),                                  # leading zero is the same integer
    ("__import__('os').system('false')", 0, 0),
    (">347+89", 0, 0),                                # an expression is not evaluated
    ("9" * 5000, 0, 0),                               # absurdly long
])
def test_verifier_checks_only_the_final_answer(task, completion, correct, fmt):
    r = task.verify(_p(task, 347, 89), completion)
    assert r.total == r.components["correct"] == correct
    assert r.components["format"] == fmt


def test_verifier_never_evals(task, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("eval called on model output")
    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    for s in ("1+1", ">2*3", "__import__('os')", "7+9+0=16;>16"):
        task.verify(_p(task, 7, 9), s)
    assert final_answer(None) is None and final_answer(">-12") == "-12"


def test_demos_solve_their_problems(task):
    probs = task.train_problems(500, np.random.default_rng(0)) + task.eval_problems(256)
    for p in probs:
        r = task.verify(p, p.demo)
        assert r.total == 1.0 and r.components["format"] == 1.0, (p.prompt, p.demo)
        assert p.demo.endswith(">" + p.answer) and int(p.answer) == p.meta["a"] + p.meta["b"]
        assert set(p.prompt + p.demo) <= set(task.alphabet())


def test_split_fixed_and_disjoint(task):
    ev = task.eval_problems(256)
    assert [p.prompt for p in ev] == [p.prompt for p in ScratchpadAddition().eval_problems(256)]
    keys = {(p.meta["a"], p.meta["b"]) for p in ev}
    assert len(keys) == 256
    tr = task.train_problems(3000, np.random.default_rng(1))
    assert not keys & {(p.meta["a"], p.meta["b"]) for p in tr}
    assert all(task.is_eval(p) for p in ev) and not any(task.is_eval(p) for p in tr[:100])
    with pytest.raises(ConfigError, match="eval.num_prompts"):
        task.eval_problems(257)


def test_answer_lengths_and_budget(task):
    st = length_stats(task, n=4000)
    assert st["mean"] >= 10 and st["min"] >= 10 and st["max"] <= 60
    assert st["max"] < task.max_new_tokens  # the longest demonstration fits the budget
    with pytest.raises(ConfigError, match="ScratchpadAddition.max_new_tokens"):
        ScratchpadAddition(max_new_tokens=30)


def test_config_errors_and_yaml():
    t = build_task("scratchpad")
    assert isinstance(t, ScratchpadAddition) and t.max_new_tokens == 64
    with pytest.raises(ConfigError, match="ScratchpadAddition.min_digits"):
        ScratchpadAddition(min_digits=5, max_digits=4)
    with pytest.raises(ConfigError, match="ScratchpadAddition.max_digits"):
        ScratchpadAddition(max_digits=0)
    with pytest.raises(ConfigError, match="ScratchpadAddition.eval_size"):
        ScratchpadAddition(min_digits=1, max_digits=1, eval_size=50)
