"""Multi-digit addition with a written carry scratchpad: a reasoning-style toy task whose answers
have room for length and entropy dynamics (the default 2-digit task answers in ~3.6 tokens).

Prompt ``"347+89="``; the demonstration works the columns right to left, one ``a+b+carry=sum``
step per column, then writes the final answer after ``>``::

    347+89=  →  7+9+0=16;4+8+1=13;3+0+1=4;>436

Operand lengths are drawn independently from ``min_digits..max_digits``, so the number of steps
(and the answer length) varies per problem. The verifier checks **only the final answer** — the
integer after the last ``>`` (or the whole completion when it has no ``>``, i.e. no scratchpad) —
by regex and ``int()``, never eval. A wrong scratchpad with the right final answer is correct;
a right scratchpad with a wrong final answer is not. A second reward component ``format`` says
whether the completion follows the scratchpad grammar (or is a bare integer).

Length budget: ``max_new_tokens`` (default 64) is the generation budget the task asks for; the
longest demonstration plus EOS must fit (checked), so truncation hits only completions that
ramble past the budget (``train/truncated_frac``).

Measured (``python -m ablate.tasks.scratchpad``, defaults min_digits=1, max_digits=4): response
length incl. EOS over 10k training problems mean 31.2 tokens, min 11, max 43, quartiles 23/31/39.

RL over the warm start (the tiny model, SFT-warm-started to expected pass@1 0.3; its sampled pass@1
at T=1 on the held-out split is 0.38-0.41):

- ``ablate sweep search_spaces/claims/rl_narrows_coverage.yaml`` (GRPO, lr 3e-4, 16 prompts x 8
  samples, 12 steps, 64 held-out prompts x 16 samples): final pass@1 0.417 / 0.493 / 0.498 for
  seeds 0 / 1 / 2 (from 0.376 / 0.404 / 0.391 at step 0), against 0.388 / 0.408 / 0.384 for the
  same pipeline at lr 1e-9 (no effective update); difference +0.076, 95% CI [-0.031, +0.183],
  p = 0.09 (``ablate.stats.compare(..., paired=True)`` over the 3 seeds: not separable from seed
  noise at 3 seeds; an earlier hand-computed interval quoted here was narrower than the seeds allow).
- ``ablate train task=scratchpad method=grpo train.steps=30 train.lr=3e-4 eval.every=10 threads=1
  seed=S`` (32 prompts per step): pass@1 0.395 -> 0.570 (S=0), 0.412 -> 0.578 (S=1).
- With 8 prompts per step (search_spaces/claims/opo_grad_var.yaml) RL at lr 3e-4 is unstable:
  pass@1 fell in 2 of 3 seeds.
"""

from __future__ import annotations

from typing import Annotated
import re

import numpy as np

from ablate.spec.params import Ge, Int, Le, NonNegInt, PosInt, require
from ablate.tasks.base import GeneratedTask, Problem, Reward

_INT = re.compile(r"-?\d{1,40}")
_STEP = r"\d\+\d\+\d=\d{1,2}"
_GRAMMAR = re.compile(rf"(?:{_STEP};)*>\d{{1,40}}")
MAX_CHARS = 4096  # longer completions are not parsed (they cannot come from the budget anyway)


def scratchpad(a: int, b: int) -> str:
    """The column-by-column demonstration of ``a + b`` (non-negative), ending in ``>answer``."""
    da, db = str(a)[::-1], str(b)[::-1]
    carry, steps = 0, []
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s}")
        carry = s // 10
    return "".join(st + ";" for st in steps) + f">{a + b}"


def final_answer(completion: str) -> str | None:
    """The final-answer text of a completion: after the last ``>``, or the whole completion when
    there is no scratchpad. None when that is not an integer. Pure string parsing."""
    if not isinstance(completion, str) or len(completion) > MAX_CHARS:
        return None
    text = completion.strip()
    tail = text.rsplit(">", 1)[-1].strip()
    return tail if _INT.fullmatch(tail) else None


Digits = Annotated[Int, Ge(1), Le(9)]


class ScratchpadAddition(GeneratedTask):
    """``a+b=`` answered with a written carry scratchpad, then ``>`` and the sum."""

    name = "scratchpad_addition"
    reward_names = ("correct", "format")

    def __init__(self, min_digits: Digits = 1, max_digits: Digits = 4, seed: NonNegInt = 1234,
                 eval_size: PosInt = 256, max_new_tokens: PosInt = 64):
        require(min_digits <= max_digits, self, "min_digits", min_digits, f"an integer <= max_digits ({max_digits})")
        need = self._longest_demo(max_digits) + 1
        require(max_new_tokens >= need, self, "max_new_tokens", max_new_tokens, f"an integer >= {need} "
                f"(the longest demonstration for max_digits={max_digits} plus EOS)")
        self.min_digits, self.max_digits = min_digits, max_digits
        self.seed, self.eval_size = seed, eval_size
        self.max_new_tokens = max_new_tokens
        self._spec = dict(min_digits=min_digits, max_digits=max_digits, seed=self.seed,
                          eval_size=eval_size, max_new_tokens=max_new_tokens)
        space = sum(self._count(n) for n in range(min_digits, max_digits + 1)) ** 2
        require(eval_size <= space // 4, self, "eval_size", eval_size, f"at most a quarter of the {space} "
                f"distinct problems (min_digits={min_digits}, max_digits={max_digits})")
        rng = np.random.default_rng([self.seed, 0x5C7A])
        self._build_eval(rng)

    @staticmethod
    def _count(n: int) -> int:
        return 10 if n == 1 else 9 * 10 ** (n - 1)

    @staticmethod
    def _longest_demo(max_digits: int) -> int:
        big = 10 ** max_digits - 1
        return len(scratchpad(big, big))

    def _operand(self, rng: np.random.Generator) -> int:
        n = int(rng.integers(self.min_digits, self.max_digits + 1))
        lo = 0 if n == 1 else 10 ** (n - 1)
        return int(rng.integers(lo, 10 ** n))

    def _draw(self, rng: np.random.Generator) -> tuple[int, int]:
        return self._operand(rng), self._operand(rng)

    @staticmethod
    def _problem(key: tuple[int, int]) -> Problem:
        a, b = key
        return Problem(prompt=f"{a}+{b}=", answer=str(a + b), demo=scratchpad(a, b),
                       meta={"a": a, "b": b})

    def is_eval(self, problem: Problem) -> bool:
        """Whether ``problem`` belongs to the held-out split."""
        return (problem.meta.get("a"), problem.meta.get("b")) in self._eval_keys

    def verify(self, problem: Problem, completion: str) -> Reward:
        ans = final_answer(completion)
        text = completion.strip() if isinstance(completion, str) and len(completion) <= MAX_CHARS else ""
        ok_format = bool(text) and (_GRAMMAR.fullmatch(text) is not None
                                    or _INT.fullmatch(text) is not None)
        correct = ans is not None and int(ans) == int(problem.answer)
        return Reward(total=float(correct),
                      components={"correct": float(correct), "format": float(ok_format)},
                      meta={"extracted": ans, "steps": text.count(";")})

    def alphabet(self) -> str:
        return "0123456789+=;>"


def length_stats(task: ScratchpadAddition, n: int = 10000, seed: int = 0) -> dict:
    """Response length (demonstration characters + EOS = tokens of the char-level policy)."""
    probs = task.train_problems(n, np.random.default_rng(seed))
    lens = np.array([len(p.demo or "") + 1 for p in probs])
    q = np.percentile(lens, [25, 50, 75])
    return {"n": n, "mean": float(lens.mean()), "min": int(lens.min()), "max": int(lens.max()),
            "q25": float(q[0]), "median": float(q[1]), "q75": float(q[2])}


if __name__ == "__main__":  # pragma: no cover - documentation helper
    import json

    print(json.dumps(length_stats(ScratchpadAddition()), indent=1))
