"""Rollout engine contract: G samples per prompt with behaviour log-probs and response masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from ablate.component import Component, Needs
from ablate.spec.params import require

IS_CORRECTIONS = ("none", "truncate", "mask")


@dataclass
class RolloutOutput:
    """Rows are prompt-major: row j*n + s is sample s of prompt j.

    ``old_logp`` are log-probs of the sampled tokens at the sampling temperature, computed with
    ``ablate.policy.forward.token_logprobs`` (the same function the trainer uses), so that the
    ratio is exactly 1 before the first update.
    """

    input_ids: torch.Tensor  # [B, P+T] left-padded prompt + right-padded response
    attention_mask: torch.Tensor  # [B, P+T]
    response_mask: torch.Tensor  # [B, T] float, 1 up to and including EOS
    old_logp: torch.Tensor  # [B, T]
    prompt_len: int  # P
    texts: list[str]  # decoded responses (special tokens stripped)
    truncated: torch.Tensor  # [B] bool: no EOS within max_new_tokens
    engine_logp: Optional[torch.Tensor] = None  # [B, T] the engine's own log-probs (logprobs=engine)


def is_weights(old_logp: torch.Tensor, engine_logp: torch.Tensor, mode: str, cap: float) -> torch.Tensor:
    """Train–inference mismatch correction per token, w = π_old/π_engine (detached):
    ``truncate`` min(w, C) (verl/MiniRL truncated IS), ``mask`` 1 where 1/C ≤ w ≤ C else 0
    (masked IS), ``none`` 1."""
    if mode == "none":
        return torch.ones_like(old_logp)
    w = torch.exp((old_logp - engine_logp).clamp(-20.0, 20.0))
    if mode == "truncate":
        return w.clamp(max=cap)
    return ((w >= 1.0 / cap) & (w <= cap)).to(old_logp.dtype)


class RolloutEngine(Component):
    """Generates ``n`` samples for each prompt. Engines: hf (default), vllm (GPU).

    ``is_correction``/``is_cap``: with an engine that reports its own log-probs
    (``RolloutOutput.engine_logp``), the loss of each token is weighted by the train–inference
    correction of ``is_weights``; that needs the behaviour log-probs before the advantage.
    """

    family = "rollout"
    is_correction: str = "none"
    is_cap: float = 2.0
    reports_logprobs: ClassVar[bool] = False

    def set_correction(self, is_correction: str, is_cap: float) -> None:
        """Set by the engine's constructor, whose typed parameters checked both values."""
        require(is_correction == "none" or self.reports_logprobs, self, "is_correction", is_correction,
                "none unless the engine reports its own log-probs (rollout=vllm with rollout.logprobs=engine)")
        self.is_correction, self.is_cap = is_correction, is_cap

    def needs(self) -> Needs:
        return Needs(logp_before_advantage=self.is_correction != "none")

    def generate(self, model: torch.nn.Module, tokenizer, prompts: list[str], n: int, *,
                 temperature: float, top_p: float, max_new_tokens: int,
                 generator: Optional[torch.Generator] = None,
                 compute_logprobs: bool = True) -> RolloutOutput:
        """``compute_logprobs=False`` leaves ``old_logp`` zero: callers that score the final batch
        themselves (the trainer, after pipeline stages) or only need texts (eval) skip a forward."""
        raise NotImplementedError

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Called after each optimizer step; engines that hold their own copy reload here."""
