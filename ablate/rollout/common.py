"""Helpers shared by rollout engines: EOS cutting, seeding, and assembling a RolloutOutput with
behaviour log-probs from :func:`ablate.policy.forward.token_logprobs`."""

from __future__ import annotations

from typing import Optional

import torch

from ablate.policy.forward import token_logprobs
from ablate.rollout.base import RolloutOutput


def cut_at_eos(responses: torch.Tensor, eos_id: int | list[int], pad_id: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each row after its first EOS: returns (tokens with padding after the EOS,
    response_mask [B, T] float incl. the EOS, truncated [B] bool = no EOS in the row)."""
    eos_ids = eos_id if isinstance(eos_id, (list, tuple)) else [eos_id]
    is_eos = torch.zeros_like(responses, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= responses == e
    T = responses.shape[1]
    has_eos = is_eos.any(-1)
    first = torch.where(has_eos, is_eos.float().argmax(-1), torch.full_like(has_eos, T, dtype=torch.long))
    pos = torch.arange(T, device=responses.device).unsqueeze(0)
    valid = pos <= first.unsqueeze(1)  # includes the EOS; all T when there is none
    tokens = torch.where(valid, responses, torch.full_like(responses, pad_id))
    return tokens, valid.float(), ~has_eos


def eos_ids_of(model: torch.nn.Module, tokenizer) -> list[int]:
    """The tokenizer's EOS plus any extra end ids of the checkpoint's generation config."""
    ids = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in (extra if isinstance(extra, (list, tuple)) else [extra]):
        if e is not None and int(e) not in ids:
            ids.append(int(e))
    if not ids:
        raise ValueError("generate: the tokenizer has no eos_token_id")
    return ids


def seed_from(generator: Optional[torch.Generator]) -> Optional[int]:
    if generator is None:
        return None
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def assemble(model: torch.nn.Module, tokenizer, p_ids: torch.Tensor, p_att: torch.Tensor,
             responses: torch.Tensor, eos_ids: list[int], pad_id: int, logprob_temperature: float,
             logprob_batch_size: Optional[int] = None, compute_logprobs: bool = True) -> RolloutOutput:
    """Cut ``responses`` [B, T] at the first EOS, join them to the left-padded prompts [B, P] and
    score the sampled tokens with ``token_logprobs`` at ``logprob_temperature``."""
    tokens, rmask, truncated = cut_at_eos(responses, eos_ids, pad_id)
    P = p_ids.shape[1]
    B = p_ids.shape[0]
    input_ids = torch.cat([p_ids, tokens], dim=1)
    attention_mask = torch.cat([p_att.long(), rmask.long()], dim=1)
    if compute_logprobs:
        lb = logprob_batch_size or B
        with torch.no_grad():
            logps = [token_logprobs(model, input_ids[s:s + lb], attention_mask[s:s + lb], P,
                                    logprob_temperature)[0] for s in range(0, B, lb)]
        old_logp = torch.cat(logps, 0) * rmask
    else:
        old_logp = torch.zeros(rmask.shape, device=rmask.device)
    texts = []
    for row, m in zip(tokens.tolist(), rmask.sum(-1).long().tolist()):
        ids = row[:m]
        if ids and ids[-1] in eos_ids:
            ids = ids[:-1]
        texts.append(tokenizer.decode(ids, skip_special_tokens=True))
    return RolloutOutput(input_ids=input_ids, attention_mask=attention_mask, response_mask=rmask,
                         old_logp=old_logp, prompt_len=P, texts=texts, truncated=truncated)
