"""Token log-probs and entropies of response tokens in one forward pass (shared by rollout,
trainer and warm start, so the behaviour and training log-probs are computed identically).

Layout (same as ``RolloutOutput``/``RolloutBatch``): ``input_ids`` is [B, P+T] with the prompt
left-padded to P and the response right-padded to T; ``attention_mask`` is 0 on both paddings.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=64)
def _accepts_logits_to_keep(cls: type) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... counted over attended tokens only (left padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def token_logprobs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   prompt_len: int, temperature: float, with_entropy: bool = False,
                   entropy_grad: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """log π(y_t | y_<t) of the response tokens ``input_ids[:, prompt_len:]`` under
    ``logits / temperature`` ([B, T]), and the per-token entropy of that distribution ([B, T],
    detached unless ``entropy_grad``) or None.

    Values on padded response positions are finite but meaningless: multiply by the response mask.
    """
    logits = response_logits(model, input_ids, attention_mask, prompt_len, temperature)
    return logprobs_of_logits(logits, input_ids[:, prompt_len:], with_entropy, entropy_grad)


def response_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    prompt_len: int, temperature: float) -> torch.Tensor:
    """``logits / temperature`` in float at the positions that predict the response tokens
    ([B, T, V], carrying the gradient): what a loss over the whole vocabulary reads
    (``Needs(full_logits=True)``)."""
    return response_outputs(model, input_ids, attention_mask, prompt_len, temperature)[0]


def response_outputs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     prompt_len: int, temperature: float, with_hidden: bool = False
                     ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(``response_logits``, the last layer's hidden states at the same positions [B, T, H],
    detached, or None): the LM head's inputs, for components that model the head's update
    (``Needs(hidden_states=True)``)."""
    if temperature is None or temperature <= 0:
        raise ValueError(f"temperature must be > 0 for log-probs, got {temperature!r}")
    L = input_ids.shape[1]
    T = L - prompt_len
    if prompt_len < 1 or T < 1:
        raise ValueError(f"need 1 <= prompt_len < sequence length, got prompt_len={prompt_len}, length={L}")
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask,
                  position_ids=position_ids_from_mask(attention_mask), use_cache=False)
    if _accepts_logits_to_keep(type(model)):
        kwargs["logits_to_keep"] = T + 1  # logits at positions P-1 .. L-1
    out = model(**kwargs, output_hidden_states=True) if with_hidden else model(**kwargs)
    logits = out.logits[:, -(T + 1):-1, :].float()
    if temperature != 1.0:
        logits = logits / temperature
    hidden = out.hidden_states[-1][:, -(T + 1):-1, :].detach().float() if with_hidden else None
    return logits, hidden


def logprobs_of_logits(logits: torch.Tensor, targets: torch.Tensor, with_entropy: bool = False,
                       entropy_grad: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(log π of ``targets`` [B, T], per-token entropy [B, T] or None) from ``response_logits``."""
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        src = logp_all if entropy_grad else logp_all.detach()
        entropy = -(src.exp() * src).sum(-1)
    return logp, entropy


def pad_rows(rows: Sequence[Sequence[int]], pad: int, left: bool,
             min_width: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded to the longest (at least ``min_width``; on the left for prompts) [B, W] long,
    and their 0/1 mask: one boolean scatter of all tokens in row-major order (a ``torch.tensor``
    per row costs ≈ 7 µs a row)."""
    lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    width = max(int(lens.max(initial=0)), min_width)
    cols = np.arange(width)
    mask = cols >= (width - lens)[:, None] if left else cols < lens[:, None]
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    ids[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lens.sum()))
    return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))


def pack(prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int,
         device: torch.device | str | None = None) -> dict:
    """Left-pad prompts to P and right-pad responses to T (at least 1).

    Returns ``input_ids`` [B, P+T] long, ``attention_mask`` [B, P+T] long, ``response_mask``
    [B, T] float and ``prompt_len`` P."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError("pack: prompts and responses differ in number")
    p_ids, p_att = pad_rows(prompt_ids, pad_id, left=True)
    r_ids, r_att = pad_rows(response_ids, pad_id, left=False, min_width=1)
    ids, att, rmask = torch.cat([p_ids, r_ids], 1), torch.cat([p_att, r_att], 1), r_att.float()
    if device is not None:
        ids, att, rmask = ids.to(device), att.to(device), rmask.to(device)
    return {"input_ids": ids, "attention_mask": att, "response_mask": rmask, "prompt_len": p_ids.shape[1]}


def encode_pairs(tokenizer, prompts: Sequence[str], responses: Sequence[str], add_eos: bool = True,
                 max_response_tokens: Optional[int] = None,
                 device: torch.device | str | None = None) -> dict:
    """Tokenize (prompt, response) text pairs in the rollout layout (see :func:`pack`).

    Prompts are encoded with the tokenizer's special tokens (e.g. BOS), responses without, plus
    EOS when ``add_eos``; responses longer than ``max_response_tokens`` are cut (EOS kept last)."""
    p_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    r_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    out_r = []
    for r in r_ids:
        r = list(r) + ([eos] if add_eos else [])
        if max_response_tokens is not None and len(r) > max_response_tokens:
            r = r[:max_response_tokens - 1] + ([eos] if add_eos else r[max_response_tokens - 1:max_response_tokens])
        out_r.append(r)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return pack(p_ids, out_r, pad, device)
