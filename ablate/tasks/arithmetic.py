"""Synthetic integer arithmetic ("12+35=" → "47"): the default task of the embedded setup.

Difficulty grows with ``digits`` (operand size), ``ops`` (any of "+-*") and ``num_operands``.
The eval split is a fixed set of ``eval_size`` problems drawn with ``seed``; training never samples
them.
"""

from __future__ import annotations

from typing import Annotated, Optional

import re
import numpy as np

from ablate.spec.params import Ge, Int, Le, NonNegInt, PosInt, require
from ablate.tasks.base import GeneratedTask, Problem, Reward, require_ops
from ablate.tasks.expr import parse_expr

_INT = re.compile(r"-?\d{1,30}")


class Arithmetic(GeneratedTask):
    """``a op b op c =`` with integer answer (usual precedence); demo is the answer itself."""

    name = "arithmetic"
    reward_names = ("correct", "format")

    def __init__(self, digits: Annotated[Int, Ge(1), Le(9)] = 2, ops: str = "+",
                 num_operands: Annotated[Int, Ge(2), Le(6)] = 2, seed: NonNegInt = 1234,
                 eval_size: PosInt = 256, max_new_tokens: Optional[PosInt] = None):
        require_ops(self, ops, "+-*")
        self.digits, self.ops, self.num_operands = digits, ops, num_operands
        self.seed, self.eval_size = seed, eval_size
        self._spec = dict(digits=digits, ops=ops, num_operands=num_operands, seed=self.seed,
                          eval_size=eval_size)
        self._lo = 0 if digits == 1 else 10 ** (digits - 1)
        self._hi = 10 ** digits - 1
        space = (self._hi - self._lo + 1) ** num_operands * len(ops) ** (num_operands - 1)
        require(eval_size <= space // 2, self, "eval_size", eval_size, f"at most half of the {space} distinct "
                f"problems (digits={digits}, ops={ops!r}, num_operands={num_operands})")
        rng = np.random.default_rng([self.seed, 0xE7A1])
        self._build_eval(rng)
        self._eval_prompts = {p.prompt for p in self._eval}
        # the generation budget: at least the longest answer + EOS (None = exactly that)
        need = self._max_answer_chars() + 1
        require(max_new_tokens is None or max_new_tokens >= need, self, "max_new_tokens", max_new_tokens,
                f"null or an integer >= {need} (the longest answer + EOS)")
        self.max_new_tokens = need if max_new_tokens is None else max_new_tokens

    # -- problems --------------------------------------------------------------------------
    def _draw(self, rng: np.random.Generator) -> tuple:
        nums = tuple(int(x) for x in rng.integers(self._lo, self._hi + 1, size=self.num_operands))
        ops = tuple(self.ops[int(i)] for i in rng.integers(0, len(self.ops), size=self.num_operands - 1))
        return nums, ops

    @staticmethod
    def _expr(key: tuple) -> str:
        nums, ops = key
        parts = [str(nums[0])]
        for op, n in zip(ops, nums[1:]):
            parts += [op, str(n)]
        return "".join(parts)

    def _problem(self, key: tuple) -> Problem:
        expr = self._expr(key)
        value, _ = parse_expr(expr, self.ops)
        ans = str(int(value))
        return Problem(prompt=expr + "=", answer=ans, demo=ans, meta={"expr": expr})

    def _max_answer_chars(self) -> int:
        hi, k = self._hi, self.num_operands
        biggest = hi ** k if "*" in self.ops else hi * k
        neg = "-" in self.ops
        return len(str(biggest)) + (1 if neg else 0)

    def is_eval(self, problem: Problem) -> bool:
        """Whether ``problem`` belongs to the held-out split."""
        return problem.prompt in self._eval_prompts

    # -- verifier --------------------------------------------------------------------------
    def verify(self, problem: Problem, completion: str) -> Reward:
        text = completion.strip() if isinstance(completion, str) else ""
        ok_format = _INT.fullmatch(text) is not None
        correct = ok_format and int(text) == int(problem.answer)
        return Reward(total=float(correct), components={"correct": float(correct),
                                                        "format": float(ok_format)})

    def alphabet(self) -> str:
        return "0123456789" + "".join(sorted(set(self.ops) | {"-", "="}))

