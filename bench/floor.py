"""The practical floor: a minimal hand-written GRPO step on the same work, no framework.

Per step: sample P prompts, tokenize them (left-padded), one batched KV-cached ``generate`` of G
samples each (same GenerationConfig as ablate's HF engine), cut at the first EOS, decode and
verify with the task, group z-score advantages, ONE forward with grad over all P·G rows, the GRPO
loss (PPO clip ε=0.2, π_old = sg(π_θ) because the batch is on-policy, seq-mean-token-mean), one
backward, grad-norm clip and an AdamW step. No old-log-prob pass, no metrics, no logging.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.common import StepSetup, build_tiny, state_digest


def make_floor_step(model, tok, task, setup: StepSetup, lr: float = 1e-4):
    from transformers import GenerationConfig

    G, T = setup.group, setup.max_new_tokens
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0,
                            fused=True)  # as ablate (ablate.optim.adamw) and TRL (its default)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    gen_cfg = GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                               max_new_tokens=T, min_new_tokens=0, eos_token_id=eos,
                               pad_token_id=pad, bos_token_id=tok.bos_token_id, use_cache=True)
    rng = np.random.default_rng(setup.seed)

    def step() -> float:
        problems = task.train_problems(setup.prompts, rng)
        enc = tok([p.prompt for p in problems], padding=True, padding_side="left", return_tensors="pt")
        ids = enc["input_ids"].repeat_interleave(G, 0)
        att = enc["attention_mask"].repeat_interleave(G, 0)
        P = ids.shape[1]
        model.eval()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=att, generation_config=gen_cfg)
        resp = out[:, P:]
        L = resp.shape[1]
        is_eos = resp == eos
        first = torch.where(is_eos.any(-1), is_eos.float().argmax(-1), torch.full((resp.shape[0],), L))
        rmask = torch.arange(L)[None, :] <= first[:, None]
        resp = torch.where(rmask, resp, torch.full_like(resp, pad))
        texts = tok.batch_decode(resp, skip_special_tokens=True)
        rewards = torch.tensor([task.verify(problems[i // G], t).total for i, t in enumerate(texts)])
        r = rewards.view(-1, G)
        adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)).view(-1, 1)

        model.train()
        full = torch.cat([ids, resp], 1)
        fatt = torch.cat([att, rmask.long()], 1)
        pos = (fatt.cumsum(-1) - 1).clamp_min(0)
        logits = model(input_ids=full, attention_mask=fatt, position_ids=pos, use_cache=False,
                       logits_to_keep=L + 1).logits[:, :-1].float()
        logp = F.log_softmax(logits, -1).gather(-1, resp.unsqueeze(-1)).squeeze(-1)
        ratio = torch.exp(logp - logp.detach())
        tok_loss = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv)
        m = rmask.float()
        loss = ((tok_loss * m).sum(-1) / m.sum(-1).clamp_min(1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(rewards.mean()), float(m.sum(-1).mean())

    return step


def run_floor(setup: StepSetup) -> dict:
    model, tok, task, _ = build_tiny(setup)
    digest = state_digest(model)
    step = make_floor_step(model, tok, task, setup)
    times, rewards, lens = [], [], []
    for _ in range(setup.steps):
        t0 = time.perf_counter()
        r, n = step()
        times.append(time.perf_counter() - t0)
        rewards.append(r)
        lens.append(n)
    return {"step_s": times, "weights": digest, "reward_mean": rewards, "response_len": lens}
