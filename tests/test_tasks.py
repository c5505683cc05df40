"""Tasks: verifiers (correct / wrong / garbage / hostile strings), fixed disjoint eval splits,
countdown solver ↔ verifier agreement, the JSONL loader on a made-up GSM8K-style fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from ablate.errors import ConfigError
from ablate.registry import conf_dir
from ablate.tasks import Problem, build_task
from ablate.tasks.arithmetic import Arithmetic
from ablate.tasks.countdown import Countdown
from ablate.tasks.expr import ExprError, parse_expr, solve
from ablate.tasks.jsonl_math import JsonlMath, answers_match, extract_answer

FIXTURE = Path(__file__).parent / "fixtures" / "gsm8k_tiny.jsonl"
HOSTILE = ["__import__('os').system('touch /tmp/ablate_pwned')", "open('/etc/passwd').read()",
           "(lambda: 1)()", "1 if True else 2", "[1,2]", "'47'", "2**100000", "9" * 400,
           "((((" * 100 + "1" + "))))" * 100, "\x00", "", "   ", "47\n48", "∞"]


@pytest.fixture(scope="module")
def addition():
    return build_task("addition")


@pytest.fixture(scope="module")
def countdown():
    return Countdown(num_numbers=3, max_number=20, seed=7, eval_size=64)


# -- arithmetic -------------------------------------------------------------------------------
def test_addition_prompt_and_verifier(addition):
    p = addition.eval_problems(1)[0]
    a, b = p.prompt[:-1].split("+")
    assert p.prompt.endswith("=") and len(a) == len(b) == 2
    assert p.answer == str(int(a) + int(b)) == p.demo
    assert addition.verify(p, p.answer).total == 1.0
    assert addition.verify(p, f" {p.answer} ").total == 1.0
    assert addition.verify(p, str(int(p.answer) + 1)).components == {"correct": 0.0, "format": 1.0}
    for s in HOSTILE + [p.answer + "x", "4 7"]:
        r = addition.verify(p, s)
        assert r.total == 0.0 and r.components["correct"] == 0.0
    assert not Path("/tmp/ablate_pwned").exists()
    assert set(p.prompt + p.demo) <= set(addition.alphabet())


def test_eval_split_fixed_and_disjoint(addition):
    ev = addition.eval_problems(256)
    assert len({p.prompt for p in ev}) == 256
    again = build_task("addition").eval_problems(256)
    assert [p.prompt for p in ev] == [p.prompt for p in again]
    train = addition.train_problems(4000, np.random.default_rng(0))
    assert not {p.prompt for p in train} & {p.prompt for p in ev}
    assert all(not addition.is_eval(p) for p in train)
    # same rng seed ⇒ same training stream; another task seed ⇒ another eval split
    t2 = addition.train_problems(50, np.random.default_rng(0))
    assert [p.prompt for p in t2] == [p.prompt for p in train[:50]]
    other = Arithmetic(seed=99).eval_problems(256)
    assert [p.prompt for p in other] != [p.prompt for p in ev]
    with pytest.raises(ConfigError, match="eval_size"):
        addition.eval_problems(257)


def test_arithmetic_hard_negative_answers():
    t = build_task("arithmetic_hard")
    probs = t.train_problems(300, np.random.default_rng(1))
    assert any(p.answer.startswith("-") for p in probs)
    for p in probs[:50]:
        expr = p.prompt[:-1]
        assert len(expr.replace("-", "+").split("+")[0]) == 3
        assert t.verify(p, p.demo).total == 1.0
    mul = Arithmetic(digits=1, ops="*+", num_operands=3, eval_size=16)
    p = Problem(prompt="2+3*4=", answer="14", demo="14")
    assert mul.verify(p, "14").total == 1.0  # usual precedence
    assert mul.max_new_tokens >= 4


def test_task_config_errors():
    with pytest.raises(ConfigError, match="digit.*allowed: digits"):
        build_task({"_target_": "ablate.tasks.arithmetic.Arithmetic", "digit": 3})
    with pytest.raises(ConfigError, match="task.ops"):
        build_task({"_target_": "ablate.tasks.arithmetic.Arithmetic", "ops": "/"})
    with pytest.raises(ConfigError, match="eval_size"):
        Arithmetic(digits=1, eval_size=100)
    with pytest.raises(ConfigError):
        build_task("no_such_task")
    for name in ("addition", "arithmetic_hard", "countdown", "gsm8k_jsonl"):
        assert (conf_dir() / "task" / f"{name}.yaml").is_file()


# -- safe expressions / countdown -------------------------------------------------------------
def test_parse_expr_is_safe():
    assert parse_expr("(3+4)*2") == (14, [3, 4, 2])
    assert parse_expr("7/2")[0] == pytest.approx(3.5)
    for s in HOSTILE + ["-3+4", "3.5+1", "x+1", "1/0", "True+1"]:
        with pytest.raises(ExprError):
            parse_expr(s)
    with pytest.raises(ExprError):
        parse_expr("2/1", ops="+-*")
    assert not Path("/tmp/ablate_pwned").exists()


def test_countdown_solver_and_verifier_agree(countdown):
    probs = countdown.eval_problems(64) + countdown.train_problems(64, np.random.default_rng(3))
    for p in probs:
        nums, target = p.meta["numbers"], p.meta["target"]
        assert p.prompt == ",".join(map(str, nums)) + f"->{target}:"
        assert solve(tuple(nums), target) is not None
        assert countdown.verify(p, p.demo).components == {"correct": 1.0, "format": 1.0}
        value, used = parse_expr(p.demo)
        assert value == target and sorted(used) == sorted(nums)
        assert set(p.prompt + p.demo) <= set(countdown.alphabet())
    p = Problem(prompt="3,7,12->9:", answer="3*7-12", demo="3*7-12",
                meta={"numbers": [3, 7, 12], "target": 9})
    assert countdown.verify(p, "3*7-12").total == 1.0
    assert countdown.verify(p, "7*3-12").total == 1.0
    assert countdown.verify(p, "12-3").components == {"correct": 0.0, "format": 1.0}  # misses 7
    assert countdown.verify(p, "3*7-12+0").total == 0.0  # extra number
    assert countdown.verify(p, "3+7+12").components == {"correct": 0.0, "format": 1.0}
    assert countdown.verify(p, "(12-3)*7/7").total == 0.0
    assert countdown.verify(p, "36/4").components == {"correct": 0.0, "format": 1.0}
    for s in HOSTILE:
        assert countdown.verify(p, s).components == {"correct": 0.0, "format": 0.0}
    assert solve((3, 7, 12), 9) is not None and solve((1, 1, 1), 100) is None
    assert countdown.reward_names == ("correct", "format")


def test_countdown_split_disjoint(countdown):
    keys = {(tuple(sorted(p.meta["numbers"])), p.meta["target"]) for p in countdown.eval_problems(64)}
    train = countdown.train_problems(500, np.random.default_rng(0))
    assert not keys & {(tuple(sorted(p.meta["numbers"])), p.meta["target"]) for p in train}
    assert [p.prompt for p in Countdown(seed=7, eval_size=64).eval_problems(64)] == \
        [p.prompt for p in countdown.eval_problems(64)]
    assert build_task("countdown").max_new_tokens >= 9


# -- JSONL math -------------------------------------------------------------------------------
def _jsonl(**kw):
    return build_task({"_target_": "ablate.tasks.jsonl_math.JsonlMath", "path": str(FIXTURE), **kw})


def test_jsonl_loader_on_fixture():
    t = _jsonl(demo_key="demo")
    assert t.num_train + t.num_eval == 20 and t.num_eval == 4
    ev = t.eval_problems(100)
    assert len(ev) == 4 and [p.prompt for p in ev] == [p.prompt for p in _jsonl(demo_key="demo").eval_problems(4)]
    assert not {p.prompt for p in ev} & {p.prompt for p in t._train}
    for p in ev + t.train_problems(8, np.random.default_rng(0)):
        assert p.prompt.startswith("Q: ") and p.prompt.endswith("\nA: ")
        assert "####" not in p.answer and "," not in p.answer
        assert t.verify(p, p.demo).total == 1.0
    rows = [json.loads(x) for x in FIXTURE.read_text().splitlines()]
    pens = next(r for r in rows if "pens" in r["question"])
    assert extract_answer(pens["answer"]) == "600"
    # without demo_key the GSM8K solution (calculator annotations removed) is the demo
    t2 = _jsonl()
    p = t2.train_problems(1, np.random.default_rng(0))[0]
    assert "<<" not in p.demo and "####" in p.demo and t2.verify(p, p.demo).total == 1.0


def test_jsonl_verifier_equivalences():
    t = _jsonl()
    p = Problem(prompt="Q: What is 3 plus 4?\nA: ", answer="7")
    for good in ["7", "7.0", "The answer is 7.", "3+4=7. #### 7", "so \\boxed{7}", "#### 7.00", "$7$"]:
        assert t.verify(p, good).total == 1.0, good
    for bad in ["8", "7 apples? no, 8", "\\boxed{8} but 7 earlier"]:
        assert t.verify(p, bad).components["correct"] == 0.0, bad
    for s in HOSTILE:
        assert t.verify(p, s).total == 0.0
    assert t.verify(p, "no idea").components == {"correct": 0.0, "format": 0.0}
    assert answers_match("1/2", "0.5") and answers_match("1000", "1,000") and not answers_match("3", "4")
    assert extract_answer("a \\boxed{\\frac{1}{2}} b") == "\\frac{1}{2}"
    assert not Path("/tmp/ablate_pwned").exists()


def test_jsonl_errors(tmp_path):
    with pytest.raises(ConfigError, match="task.path: file not found: .*nope.jsonl"):
        _jsonl(path=str(tmp_path / "nope.jsonl"))
    with pytest.raises(ConfigError, match="task.answer_key: key 'solution' missing in .*gsm8k_tiny.jsonl:1"):
        _jsonl(answer_key="solution")
    with pytest.raises(ConfigError, match="task.demo_key"):
        _jsonl(demo_key="rationale")
    with pytest.raises(ConfigError, match="task.path: required"):
        build_task("gsm8k_jsonl")
    cfg = OmegaConf.create({"_target_": "ablate.tasks.jsonl_math.JsonlMath", "path": "???"})
    with pytest.raises(ConfigError, match="task.path"):
        build_task(cfg)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "1"}\nnot json\n')
    with pytest.raises(ConfigError, match="bad.jsonl:2 is not valid JSON"):
        JsonlMath(path=str(bad))
    with pytest.raises(ConfigError, match="unknown value 'question_field'"):
        _jsonl(question_field="q")
