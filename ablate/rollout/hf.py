"""HF ``model.generate`` rollout engine (default; CPU or GPU).

Prompts are left-padded and repeated ``n`` times (prompt-major), sampled in one batched, KV-cached
``generate`` call, cut at the first EOS (the EOS is part of the response; what follows is padding),
and scored with :func:`ablate.policy.forward.token_logprobs`, the function the trainer uses, so the
importance ratio is exactly 1 before the first update. With a ``generator`` the sampling is
reproducible: its next draw seeds a forked torch RNG (the caller's global RNG is left untouched).
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import torch

from ablate.spec.params import Gt, NonNeg, NonNegInt, Num, PosFrac, PosInt
from ablate.rollout.base import IS_CORRECTIONS, RolloutEngine, RolloutOutput
from ablate.rollout.common import assemble, eos_ids_of, seed_from


class HFEngine(RolloutEngine):
    """Batched sampling with ``transformers`` ``generate``.

    ``temperature``, ``top_p`` and ``max_new_tokens`` are defaults for ``generate`` calls that do
    not pass them; ``batch_size`` caps the rows per ``generate`` call (None = all at once);
    ``logprob_batch_size`` caps rows per log-prob forward. ``temperature == 0`` is greedy decoding
    (log-probs are then taken at temperature 1). With ``top_p < 1`` the sampled distribution is
    truncated while ``old_logp`` is the untruncated tempered log-prob (as in verl).
    """

    def __init__(self, temperature: NonNeg = 1.0, top_p: PosFrac = 1.0, max_new_tokens: Optional[PosInt] = None,
                 top_k: NonNegInt = 0, batch_size: Optional[PosInt] = None,
                 logprob_batch_size: Optional[PosInt] = None,
                 is_correction: Literal[IS_CORRECTIONS] = "none", is_cap: Annotated[Num, Gt(1)] = 2.0):
        self.temperature, self.top_p, self.max_new_tokens = temperature, top_p, max_new_tokens  # null: the task's budget
        self.top_k, self.batch_size, self.logprob_batch_size = top_k, batch_size, logprob_batch_size
        self.set_correction(is_correction, is_cap)

    def generate(self, model: torch.nn.Module, tokenizer, prompts: list[str], n: int, *,
                 temperature: Optional[float] = None, top_p: Optional[float] = None,
                 max_new_tokens: Optional[int] = None,
                 generator: Optional[torch.Generator] = None,
                 compute_logprobs: bool = True) -> RolloutOutput:
        from transformers import GenerationConfig

        temperature = self.temperature if temperature is None else float(temperature)
        top_p = self.top_p if top_p is None else float(top_p)
        max_new_tokens = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if max_new_tokens is None:
            raise ValueError("generate: no max_new_tokens (the trainer passes the resolved budget)")
        if n < 1 or not prompts:
            raise ValueError("generate: need at least one prompt and n >= 1")
        device = next(model.parameters()).device
        eos_ids = eos_ids_of(model, tokenizer)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]

        enc = tokenizer(list(prompts), padding=True, padding_side="left", return_tensors="pt")
        p_ids = enc["input_ids"].repeat_interleave(n, dim=0).to(device)
        p_att = enc["attention_mask"].repeat_interleave(n, dim=0).to(device)
        P = p_ids.shape[1]

        sample = temperature > 0
        gen_cfg = GenerationConfig(
            do_sample=sample, temperature=temperature if sample else None,
            top_p=top_p if sample else None, top_k=self.top_k if sample else None,
            max_new_tokens=max_new_tokens, min_new_tokens=0, num_beams=1,
            eos_token_id=eos_ids, pad_token_id=pad_id, bos_token_id=tokenizer.bos_token_id,
            repetition_penalty=1.0, use_cache=True)
        B = p_ids.shape[0]
        step = self.batch_size or B
        seed = seed_from(generator)
        devices = [device] if device.type == "cuda" else []
        chunks = []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None), torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            for s in range(0, B, step):
                out = model.generate(input_ids=p_ids[s:s + step], attention_mask=p_att[s:s + step],
                                     generation_config=gen_cfg)
                chunks.append(out[:, P:])
        T = max(1, max(c.shape[1] for c in chunks))
        resp = torch.full((B, T), pad_id, dtype=torch.long, device=device)
        r0 = 0
        for c in chunks:
            resp[r0:r0 + c.shape[0], :c.shape[1]] = c
            r0 += c.shape[0]
        # generate only stops a row early at an EOS, so a row without EOS used the whole budget
        return assemble(model, tokenizer, p_ids, p_att, resp, eos_ids, pad_id,
                        temperature if sample else 1.0, self.logprob_batch_size,
                        compute_logprobs=compute_logprobs)
