"""Stages that generate with the current policy inside the step (machinery M8): ReMax's greedy
baseline and RePO's rephrased reference solutions. Both declare ``Needs(generation=True)`` and use
``env.generate`` (the rollout engine, current weights); the trainer times these extra generations
(perf/extra_gen_s) and counts their tokens (train/extra_gen_tokens)."""

from __future__ import annotations

from typing import ClassVar, Optional

from ablate.component import Needs
from ablate.spec.params import NonNeg, Num, PosInt, Prob, require
from ablate.pipeline.base import Rollouts, Stage, StageEnv


def _require_generate(env: StageEnv, owner: str):
    if env.generate is None:
        raise RuntimeError(f"pipeline {owner}: env.generate is missing (the stage declares "
                           "Needs(generation=True); the trainer provides it)")
    return env.generate


class GreedyBaseline(Stage):
    """ReMax (arXiv 2310.10505): one greedy decode per prompt; its verified reward is written to every
    row of the prompt as ``meta[key]`` for the ``remax`` advantage (Â = R(y) − R(ŷ_greedy))."""

    NEEDS: ClassVar[Needs] = Needs(generation=True)

    def __init__(self, key: str = "remax_baseline"):
        self.key = str(key)

    def __call__(self, r: Rollouts, env: StageEnv) -> Rollouts:
        if not r.problems:
            return r
        gen = _require_generate(env, type(self).__name__)([p.prompt for p in r.problems], 1, 0.0)
        base = [float(env.task.verify(p, t).total) for p, t in zip(r.problems, gen.texts)]
        for i, g in enumerate(r.group):
            r.meta[i] = {**r.meta[i], self.key: base[g]}
        env.stats["train/remax_baseline_mean"] = sum(base) / len(base)
        return r


REPO_TEMPLATE = ("{prompt}\n\nA correct reference solution:\n{demo}\n\nRephrase this solution in your "
                 "own words, ending with the same final answer.\n")


class Rephrase(Stage):
    """RePO (arXiv 2602.10819): for each prompt whose on-policy failure rate (reward <
    ``success_value``) is ≥ ``failure_threshold`` and that has a reference solution
    (``Problem.demo``), the policy is prompted with ``template`` (fields ``{prompt}``, ``{demo}``) to
    rephrase it; ``num_samples`` rephrasings are verified against the original problem and the
    first that succeeds replaces the group's lowest-reward rollout (as a response to the original
    prompt, an on-policy row; ``meta["repo_rephrased"]`` marks it). ``temperature`` None = 1.0."""

    NEEDS: ClassVar[Needs] = Needs(generation=True)

    def __init__(self, failure_threshold: Prob = 1.0, template: str = REPO_TEMPLATE,
                 num_samples: PosInt = 1, temperature: Optional[NonNeg] = None, success_value: Num = 1.0):
        require("{demo}" in template, self, "template", template, "a string containing {demo}")
        try:
            template.format(prompt="", demo="")
        except (KeyError, IndexError, ValueError) as e:
            require(False, self, "template", template, f"only {{prompt}} and {{demo}} fields ({e})")
        self.failure_threshold, self.template = failure_threshold, template
        self.num_samples, self.success_value = num_samples, success_value
        self.temperature = 1.0 if temperature is None else float(temperature)

    def eligible(self, r: Rollouts) -> dict[int, list[int]]:
        """{group: its on-policy rows} for groups past the failure threshold with a demo."""
        out: dict[int, list[int]] = {}
        for g, p in enumerate(r.problems):
            rows = [i for i in r.rows_of(g) if not r.is_demo[i]]
            if not rows or p.demo is None:
                continue
            fail = sum(1 for i in rows if r.rewards[i] < self.success_value) / len(rows)
            if fail >= self.failure_threshold:
                out[g] = rows
        return out

    def __call__(self, r: Rollouts, env: StageEnv) -> Rollouts:
        groups = self.eligible(r)
        env.stats["train/repo_groups"] = float(len(groups))
        replaced = 0
        if groups:
            order = list(groups)
            prompts = [self.template.format(prompt=r.problems[g].prompt, demo=r.problems[g].demo)
                       for g in order]
            k = self.num_samples
            gen = _require_generate(env, type(self).__name__)(prompts, k, self.temperature)
            for j, g in enumerate(order):
                p = r.problems[g]
                for s in range(k):
                    row = j * k + s
                    rew = env.task.verify(p, gen.texts[row])
                    if rew.total < self.success_value:
                        continue
                    worst = min(groups[g], key=lambda i: r.rewards[i])
                    r.response_ids[worst] = list(gen.response_ids[row])
                    r.texts[worst] = gen.texts[row]
                    r.rewards[worst] = float(rew.total)
                    r.components[worst] = dict(rew.components)
                    r.truncated[worst] = bool(gen.truncated[row])
                    r.meta[worst] = {**rew.meta, "repo_rephrased": True}
                    if r.engine_logp:  # the engine's log-probs were of the replaced response
                        r.engine_logp[worst] = []
                    replaced += 1
                    break
        env.stats["train/repo_replaced"] = float(replaced)
        return r
