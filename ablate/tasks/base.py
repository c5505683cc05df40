"""Task contract: prompts with reference answers, an optional demonstration, and a verifier."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Optional

import hashlib

import numpy as np

from ablate.spec.params import Checked, require


@dataclass
class Problem:
    prompt: str  # exactly the text fed to the policy (already templated)
    answer: str  # reference answer, as a string
    demo: Optional[str] = None  # a reference completion (for SFT / LUFFY / SRFT / HPT), ends with the answer
    meta: dict = field(default_factory=dict)
    question: Optional[str] = None  # the bare question (a chat template wraps it); None = prompt

    @property
    def uid(self) -> str:
        """A stable id of the prompt (keys per-prompt history): ``meta["id"]`` when the task sets
        one, else a hash of the prompt text (identical prompts are the same prompt)."""
        given = self.meta.get("id")
        if given is not None:
            return str(given)
        return hashlib.sha1(self.prompt.encode("utf-8")).hexdigest()[:16]


@dataclass
class Reward:
    total: float  # the scalar reward used by single-reward estimators
    components: dict[str, float] = field(default_factory=dict)  # named rewards (GDPO), may be empty
    meta: dict = field(default_factory=dict)  # verifier metadata (extracted answer, label, ...)


def require_ops(owner: object, ops: str, allowed: str) -> None:
    """An expression task's ``ops`` parameter: a non-empty string of distinct operators, each one of
    ``allowed`` (the ones the task can generate and verify)."""
    require(ops != "" and set(ops) <= set(allowed) and len(set(ops)) == len(ops), owner, "ops", ops,
            f"a non-empty string of distinct characters from {allowed!r}")


class Task(Checked):
    """A verifiable task. ``train_problems`` samples from the training distribution with ``rng``;
    ``eval_problems`` is a fixed held-out split, disjoint from training where the task allows it."""

    name: str = "task"
    reward_names: tuple[str, ...] = ("correct",)
    # Generation budget the task needs (answer + EOS); used unless rollout.max_new_tokens is set
    # (ablate.rollout.resolve_budget). None = no requirement.
    max_new_tokens: Optional[int] = None
    # how prompts reach the policy (set by build_task from task.prompt_format / task.system_prompt)
    prompt_format: str = "raw"
    system_prompt: Optional[str] = None

    def train_problems(self, n: int, rng: np.random.Generator) -> list[Problem]:
        raise NotImplementedError

    def eval_problems(self, n: int) -> list[Problem]:
        raise NotImplementedError

    def verify(self, problem: Problem, completion: str) -> Reward:
        """Score a completion. Model output is data: never eval it."""
        raise NotImplementedError

    def alphabet(self) -> str:
        """Characters that prompts, demos and answers use (the tiny tokenizer's vocabulary)."""
        raise NotImplementedError

    def longest_example(self) -> Optional[tuple[int, int]]:
        """(row, characters) of the longest prompt + demonstration, checked against the tiny
        model's context before training; None (generated tasks): nothing to check."""
        return None

    def spec(self) -> dict:
        """A JSON-able description that identifies the task's data (keys the warm-start cache).

        Tasks built by ``build_task`` return their ``_target_`` and constructor parameters
        (plus a content hash for file-backed tasks)."""
        cls = type(self)
        params = getattr(self, "_spec", None)
        if params is None:
            params = {k: v for k, v in sorted(vars(self).items())
                      if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}
        out = {"_target_": f"{cls.__module__}.{cls.__qualname__}", **params}
        if self.prompt_format != "raw":  # the prompts differ, so does a warm start on them
            out.update(prompt_format=self.prompt_format, system_prompt=self.system_prompt)
        return out


class GeneratedTask(Task):
    """A task whose problems are drawn as keys: a fixed held-out split of ``eval_size`` distinct keys
    (drawn with its own seed) and training draws that never hit it."""

    eval_size: int = 0

    def _draw(self, rng: np.random.Generator) -> Hashable:
        raise NotImplementedError

    def _problem(self, key) -> Problem:
        raise NotImplementedError

    def _build_eval(self, rng: np.random.Generator) -> None:
        self._eval: list[Problem] = []
        self._eval_keys: set = set()
        while len(self._eval) < self.eval_size:
            key = self._draw(rng)
            if key not in self._eval_keys:
                self._eval_keys.add(key)
                self._eval.append(self._problem(key))

    def train_problems(self, n: int, rng: np.random.Generator) -> list[Problem]:
        out: list[Problem] = []
        while len(out) < n:
            key = self._draw(rng)
            if key not in self._eval_keys:
                out.append(self._problem(key))
        return out

    def eval_problems(self, n: int) -> list[Problem]:
        from ablate.errors import ConfigError
        if n > self.eval_size:
            raise ConfigError(f"eval.num_prompts: {n} exceeds task.eval_size={self.eval_size}")
        return list(self._eval[:n])
