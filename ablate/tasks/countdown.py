"""Countdown: combine the given numbers, each exactly once, with + - * to reach a target.

Prompt ``"3,7,12->9:"``; a correct completion is an expression that uses every number exactly
once, e.g. ``"3*7-12"``. The verifier parses the expression with ``ast`` (never
eval), checks the multiset of numbers and the value. Rewards: ``correct`` and ``format`` (the
completion parses as an arithmetic expression), so GDPO-style estimators get two signals.
Demonstrations come from a brute-force solver (the shortest solution).
"""

from __future__ import annotations

from typing import Annotated
import functools

import numpy as np

from ablate.errors import ConfigError
from ablate.spec.params import Ge, Int, Le, NonNegInt, PosInt, require
from ablate.tasks.base import Problem, Reward, Task, require_ops
from ablate.tasks.expr import ExprError, expressions, parse_expr


@functools.lru_cache(maxsize=1 << 16)
def _table(nums: tuple[int, ...], ops: str) -> tuple[tuple[int, ...], dict[int, str]]:
    """For sorted ``nums``: the positive integer values of every expression (with multiplicity,
    so targets are drawn as often as expressions reach them) and each value's shortest solution
    (the brute-force solver's answer, see ``expr.solve``)."""
    cands: list[int] = []
    best: dict[int, str] = {}
    for v, text in expressions(nums, ops):
        if v.denominator != 1 or v <= 0:
            continue
        k = int(v)
        cands.append(k)
        cur = best.get(k)
        if cur is None or (len(text), text) < (len(cur), cur):
            best[k] = text
    return tuple(cands), best


class Countdown(Task):
    name = "countdown"
    reward_names = ("correct", "format")

    def __init__(self, num_numbers: Annotated[Int, Ge(2), Le(5)] = 3,
                 max_number: Annotated[Int, Ge(2), Le(1000)] = 20, seed: NonNegInt = 1234,
                 eval_size: PosInt = 256, ops: str = "+-*"):
        require_ops(self, ops, "+-*/")
        require(eval_size <= max_number ** num_numbers // 4, self, "eval_size", eval_size,
                f"an integer <= {max_number ** num_numbers // 4} for num_numbers={num_numbers}, "
                f"max_number={max_number}")
        self.num_numbers, self.max_number, self.ops = num_numbers, max_number, ops
        self.seed, self.eval_size = seed, eval_size
        self._spec = dict(num_numbers=num_numbers, max_number=max_number, seed=self.seed,
                          eval_size=eval_size, ops=ops)
        rng = np.random.default_rng([self.seed, 0xC0DE])
        self._eval: list[Problem] = []
        self._eval_keys: set[tuple] = set()
        while len(self._eval) < eval_size:
            p = self._draw(rng)
            k = self._key(p)
            if k not in self._eval_keys:
                self._eval_keys.add(k)
                self._eval.append(p)
        w = len(str(max_number))
        # numbers + operators + brackets + EOS
        self.max_new_tokens = num_numbers * w + (num_numbers - 1) + 2 * (num_numbers - 2) + 1

    @staticmethod
    def _key(p: Problem) -> tuple:
        return tuple(sorted(p.meta["numbers"])), p.meta["target"]

    def _draw(self, rng: np.random.Generator) -> Problem:
        while True:
            nums = tuple(int(x) for x in rng.integers(1, self.max_number + 1, size=self.num_numbers))
            cands, best = _table(tuple(sorted(nums)), self.ops)
            if cands:
                break
        target = cands[int(rng.integers(0, len(cands)))]
        demo = best[target]
        prompt = ",".join(map(str, nums)) + f"->{target}:"
        return Problem(prompt=prompt, answer=demo, demo=demo,
                       meta={"numbers": list(nums), "target": target})

    def train_problems(self, n: int, rng: np.random.Generator) -> list[Problem]:
        out: list[Problem] = []
        while len(out) < n:
            p = self._draw(rng)
            if self._key(p) not in self._eval_keys:
                out.append(p)
        return out

    def eval_problems(self, n: int) -> list[Problem]:
        if n > self.eval_size:
            raise ConfigError(f"eval.num_prompts: {n} exceeds task.eval_size={self.eval_size}")
        return list(self._eval[:n])

    def verify(self, problem: Problem, completion: str) -> Reward:
        text = completion if isinstance(completion, str) else ""
        try:
            parse_expr(text, "+-*/")
            ok_format = True
        except ExprError:
            ok_format = False
        correct = False
        if ok_format:
            try:
                value, used = parse_expr(text, self.ops)
                correct = (sorted(used) == sorted(problem.meta["numbers"])
                           and value == problem.meta["target"])
            except ExprError:
                correct = False
        return Reward(total=float(correct), components={"correct": float(correct),
                                                        "format": float(ok_format)})

    def alphabet(self) -> str:
        return "0123456789,->:()" + "".join(c for c in self.ops if c != "-")
