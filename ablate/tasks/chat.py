"""Prompt formats: ``raw`` (the task's own text, e.g. ``Q: …\\nA: ``) or ``chat`` (the checkpoint's
chat template around the question, with an optional system prompt).

Real instruct checkpoints expect their template; the tiny char-level model has none. The response
then ends where the template ends an assistant turn: the tokenizer's EOS (for Qwen-style templates
``<|im_end|>``), which rollouts stop on and demonstrations end with.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from ablate.errors import ConfigError
from ablate.tasks.base import Problem, Reward, Task

PROMPT_FORMATS = ("raw", "chat")


class ChatFormatted(Task):
    """``inner`` with every prompt rendered through ``tokenizer``'s chat template."""

    def __init__(self, inner: Task, tokenizer: Any, system_prompt: Optional[str] = None):
        if not has_chat_template(tokenizer):
            raise ConfigError("task.prompt_format: 'chat' needs a tokenizer with a chat template "
                              "(model.path=<instruct checkpoint>); the tiny model has none, use 'raw'")
        self.inner, self.tokenizer, self.system_prompt = inner, tokenizer, system_prompt
        self.name, self.reward_names = inner.name, inner.reward_names
        self.max_new_tokens = inner.max_new_tokens
        self.prompt_format, self.system_prompt = inner.prompt_format, system_prompt

    def render(self, p: Problem) -> Problem:
        msgs = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + \
            [{"role": "user", "content": p.question if p.question is not None else p.prompt}]
        text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return dataclasses.replace(p, prompt=text)

    def train_problems(self, n: int, rng: np.random.Generator) -> list[Problem]:
        return [self.render(p) for p in self.inner.train_problems(n, rng)]

    def eval_problems(self, n: int) -> list[Problem]:
        return [self.render(p) for p in self.inner.eval_problems(n)]

    def verify(self, problem: Problem, completion: str) -> Reward:
        return self.inner.verify(problem, completion)

    def alphabet(self) -> str:
        return self.inner.alphabet()

    def spec(self) -> dict:
        return self.inner.spec()


def has_chat_template(tokenizer: Any) -> bool:
    """The tokenizer carries a chat template (HF tokenizers keep it in ``chat_template``)."""
    return bool(tokenizer.chat_template)


def apply_prompt_format(task: Task, tokenizer: Any) -> Task:
    if task.prompt_format == "chat":
        return ChatFormatted(task, tokenizer, task.system_prompt)
    return task
