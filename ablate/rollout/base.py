"""Rollout engine contract: G samples per prompt with behaviour log-probs and response masks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


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


class RolloutEngine:
    """Generates ``n`` samples for each prompt. Engines: hf (default), vllm (GPU)."""

    def generate(self, model: torch.nn.Module, tokenizer, prompts: list[str], n: int, *,
                 temperature: float, top_p: float, max_new_tokens: int,
                 generator: Optional[torch.Generator] = None,
                 compute_logprobs: bool = True) -> RolloutOutput:
        """``compute_logprobs=False`` leaves ``old_logp`` zero: callers that score the final batch
        themselves (the trainer, after pipeline stages) or only need texts (eval) skip a forward."""
        raise NotImplementedError

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Called after each optimizer step; engines that hold their own copy reload here."""
