"""Check a composed run config completely before anything is created: the schema (ablate.config),
then every component built (slots, objective, pipeline stages, critic, rollout engine, the task and
its data). It lives in train/ because it builds what the trainer builds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from ablate.config import check_run
from ablate.errors import ConfigError
from ablate.registry import plain
from ablate.rollout import Budget, build_engine, pin_budget, resolve_budget
from ablate.schema import RunConfig
from ablate.spec.targets import resolve
from ablate.tasks import build_task
from ablate.train.components import Algorithm, build_algorithm


@dataclass(frozen=True)
class Validated:
    """What validation produced: the typed spec (flows down to the trainer and the tracker) and,
    with ``build``, the components and the task it built (the trainer uses them: nothing is built
    twice)."""

    run: RunConfig
    task: Any = None
    algorithm: Optional[Algorithm] = None
    budget: Optional[Budget] = None  # the effective generation budget, pinned before the components


def validate_config(cfg: Any, *, build: bool = True, cuda_available: Optional[bool] = None,
                    task_cache: Optional[dict] = None) -> Validated:
    """Check a composed run config completely; raise a one-line ConfigError for the first problem.

    The schema checks types and ranges of every plain field; with ``build`` the components are
    built (slots, objective, pipeline stages, the task and its data) and the rollout engine's
    parameters are checked against its signature: cheap, and nothing is written. The device must
    exist. ``task_cache`` (a dict) reuses tasks built from the same task config (a sweep preflight
    checks many trials of one data set)."""
    run = check_run(cfg, cuda_available=cuda_available)
    if not build:
        return Validated(run)
    data = plain(cfg)  # resolved plain dict (already checked by the schema above)
    dcfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(data)
    check_rollout(data["rollout"])
    key = json.dumps(data["task"], sort_keys=True, default=str)
    task = task_cache.get(key) if task_cache is not None else None
    if task is None:
        task = build_task(data["task"])
        if task_cache is not None:
            task_cache[key] = task
    # the one budget rule, resolved for the built task and written into the config before any
    # component reads a length constant (${rollout.max_new_tokens}: Dr.GRPO's / HPT's L_max)
    budget = pin_budget(dcfg, task)
    algorithm = build_algorithm(dcfg)
    check_task_fits(task, run)
    check_group_relative(data["advantage"], run)
    check_context(task, run, budget)
    return Validated(run, task, algorithm, budget)


def check_group_relative(advantage_cfg: Any, run: RunConfig) -> None:
    """A group baseline over one sample per prompt is no baseline (Â = the raw reward or 0)."""
    cls = resolve("advantage", advantage_cfg.get("_target_"), "advantage._target_")
    if cls.group_relative and run.train.group_size < 2:
        raise ConfigError(f"train.group_size: got {run.train.group_size} with the group-relative "
                          f"advantage {cls.__name__}; allowed: >= 2 (or a batch-level advantage "
                          "such as advantage=reinforce_pp)")


def check_context(task: Any, run: RunConfig, budget: Optional[Budget] = None) -> None:
    """Held-out prompts exist in the number asked for, and each prompt plus the generation
    budget fits the tiny char-level model's context."""
    try:
        probs = task.eval_problems(run.eval.num_prompts)
    except ConfigError as e:
        raise ConfigError(f"{e}; allowed: eval.num_prompts <= the task's held-out set") from None
    if run.model.path is not None or task.prompt_format != "raw" or not probs:
        return
    budget = budget or resolve_budget(run.rollout.max_new_tokens, task)  # the one budget rule
    new = budget.tokens
    field = budget.source if budget.source != "default" else "rollout.max_new_tokens"
    longest = max(len(p.prompt) for p in probs)
    ctx = run.model.max_position_embeddings
    if longest + new + 1 > ctx:
        raise ConfigError(f"{field}: {new} new tokens after a {longest}-character "
                          f"prompt exceed model.max_position_embeddings={ctx}; allowed: "
                          f"max_new_tokens <= {max(0, ctx - longest - 1)}, or raise "
                          "model.max_position_embeddings")


def check_rollout(rollout_cfg: Any) -> None:
    """Build the engine: the registry checks its parameters against the class signature and the
    engine its own (vLLM: a GPU and the package). Engines load no model when built."""
    build_engine(rollout_cfg)


def check_task_fits(task: Any, run: Any) -> None:
    """The task's longest training sequence (prompt + demonstration) must fit the tiny model's
    context (char tokenizer: one token per character, plus BOS and EOS)."""
    if run.model.path is not None:
        return
    found = task.longest_example()
    if found is None:
        return
    row, n_chars = found
    ctx = run.model.max_position_embeddings
    if n_chars + 2 > ctx:
        raise ConfigError(f"task: row {row} has {n_chars} characters of prompt + demonstration, "
                          f"over model.max_position_embeddings={ctx} of the char-level tiny model; "
                          f"allowed: raise model.max_position_embeddings, or set task.max_chars "
                          f"with task.on_overlong=truncate|skip")
