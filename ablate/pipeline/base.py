"""Pipeline stages: what happens to a step's samples between the verifier and the advantage slot.

Stages see per-row Python lists (B is a few hundred), so filters, reward shaping and demonstration
mixing stay readable. A stage that may drop groups declares ``Needs(refill_rounds=k)``; the trainer
then generates more prompts, up to k rounds, until the step's prompt budget is met (DAPO dynamic
sampling). A stage that builds its rows itself declares ``Needs(rollouts=False)`` (SFT).

Before generation every stage may choose the step's prompts and how many samples each gets
(``Stage.plan``: prompt samplers, per-prompt rollout budgets), so group sizes may differ within a
batch. A stage that generates with the current policy inside the step (a greedy baseline, a
rephrased demonstration) declares ``Needs(generation=True)`` and calls ``env.generate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ablate.component import Component, StepInfo
from ablate.tasks.base import Problem


@dataclass
class Rollouts:
    """The samples of one step, grouped by prompt (``group`` = index into ``problems``)."""

    problems: list[Problem]
    prompt_ids: list[list[int]] = field(default_factory=list)  # per problem, unpadded
    group: list[int] = field(default_factory=list)
    response_ids: list[list[int]] = field(default_factory=list)  # includes EOS when generated
    texts: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    components: list[dict[str, float]] = field(default_factory=list)
    is_demo: list[bool] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    loss_weight: list[float] = field(default_factory=list)
    meta: list[dict] = field(default_factory=list)  # verifier metadata per row
    engine_logp: list[list[float]] = field(default_factory=list)  # the engine's own log-probs ([] = none)

    def __len__(self) -> int:
        return len(self.group)

    def rows_of(self, g: int) -> list[int]:
        return [i for i, gg in enumerate(self.group) if gg == g]

    def keep_rows(self, rows: list[int]) -> "Rollouts":
        """Keep ``rows`` and renumber groups densely (problems without rows are dropped)."""
        used = sorted({self.group[i] for i in rows})
        remap = {g: k for k, g in enumerate(used)}
        pick = lambda xs: [xs[i] for i in rows]  # noqa: E731
        return Rollouts(problems=[self.problems[g] for g in used],
                        prompt_ids=[self.prompt_ids[g] for g in used] if self.prompt_ids else [],
                        group=[remap[self.group[i]] for i in rows],
                        response_ids=pick(self.response_ids), texts=pick(self.texts),
                        rewards=pick(self.rewards), components=pick(self.components),
                        is_demo=pick(self.is_demo), truncated=pick(self.truncated),
                        loss_weight=pick(self.loss_weight), meta=pick(self.meta),
                        engine_logp=pick(self.engine_logp))

    def extend(self, other: "Rollouts") -> "Rollouts":
        off = len(self.problems)
        return Rollouts(problems=self.problems + other.problems,
                        prompt_ids=self.prompt_ids + other.prompt_ids,
                        group=self.group + [g + off for g in other.group],
                        response_ids=self.response_ids + other.response_ids,
                        texts=self.texts + other.texts, rewards=self.rewards + other.rewards,
                        components=self.components + other.components,
                        is_demo=self.is_demo + other.is_demo,
                        truncated=self.truncated + other.truncated,
                        loss_weight=self.loss_weight + other.loss_weight, meta=self.meta + other.meta,
                        engine_logp=self.engine_logp + other.engine_logp)

    def add_row(self, g: int, ids: list[int], text: str, reward: float, components: dict,
                is_demo: bool, truncated: bool = False, loss_weight: float = 1.0,
                meta: Optional[dict] = None, engine_logp: Optional[list[float]] = None) -> None:
        self.group.append(g)
        self.response_ids.append(ids)
        self.texts.append(text)
        self.rewards.append(reward)
        self.components.append(components)
        self.is_demo.append(is_demo)
        self.truncated.append(truncated)
        self.loss_weight.append(loss_weight)
        self.meta.append(dict(meta or {}))
        self.engine_logp.append(list(engine_logp or []))


@dataclass
class Generated:
    """What ``StageEnv.generate`` returns: rows are prompt-major (row j*n + s = sample s of prompt j)."""

    response_ids: list[list[int]]  # includes EOS when generated
    texts: list[str]
    truncated: list[bool]


# generate(prompts, n, temperature) with the current policy through the rollout engine
GenerateFn = Callable[[list[str], int, float], Generated]


@dataclass
class StageEnv:
    """What a stage may use besides the samples: the tokenizer (to encode demonstrations), the task
    (to verify them), the response budget, the step number, the step context (``info``: step,
    total steps, last metrics; filled when a component declares ``Needs(step_info=True)``), the run's
    RNG (checkpointed with the trial), the configured group size, and, for stages with
    ``Needs(generation=True)``, ``generate`` (its extra generations are timed as perf/extra_gen_s and
    counted in train/extra_gen_tokens)."""

    tokenizer: Any
    task: Any
    max_new_tokens: int
    step: int = 0
    info: Optional[StepInfo] = None
    stats: dict[str, float] = field(default_factory=dict)  # stages write train/* diagnostics here
    rng: Any = None  # numpy Generator of the run (prompt sampling)
    group_size: int = 1  # train.group_size: the default samples per prompt
    generate: Optional[GenerateFn] = None


class Stage(Component):
    """A pipeline stage: Rollouts in, Rollouts out (see the module docstring for its needs)."""

    family = "stage"

    def plan(self, problems: list[Problem], counts: list[int], env: StageEnv
             ) -> tuple[list[Problem], list[int]]:
        """Before generation: the step's prompts and samples per prompt (default: unchanged)."""
        return problems, counts

    def __call__(self, r: Rollouts, env: StageEnv) -> Rollouts:
        return r


def encode_demo(problem: Problem, env: StageEnv) -> Optional[list[int]]:
    """Token ids of the problem's demonstration + EOS, truncated to the response budget."""
    if problem.demo is None:
        return None
    tok = env.tokenizer
    ids = tok(problem.demo, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return ids[: env.max_new_tokens]
