"""Section `generation`: rollout tokens/s of ablate's HF engine vs the floor's bare ``generate``,
and the transformers/torch options tried on the engine (kept only where they win on CPU).

Same tiny policy, prompts and sampling settings as the `step` section (temperature 1, top-p 1,
top-k 0). "ablate" is ``HFEngine.generate`` as the trainer calls it for rollouts and evals
(tokenize, one batched KV-cached ``generate``, cut at EOS, decode; no log-prob pass); "floor" is
what ``bench/floor.py`` does for the same (tokenize, ``generate`` under ``no_grad``, cut, batch
decode). tokens/s counts generated response tokens (EOS included). The option rows time bare
``model.generate`` calls interleaved on identical inputs: ``inference_mode`` vs ``no_grad`` and a
static KV cache vs the dynamic one (neither won on 2 CPU cores: the engine keeps no_grad + dynamic).
``torch.compile`` of the decode step is not timed here (its first call compiles for ~1 min on
2 cores: see bench/README.md).
"""

from __future__ import annotations

import time

from bench.common import Section, StepSetup, build_tiny, interleaved, log, median, row


def _inputs(tok, task, setup: StepSetup):
    import numpy as np

    problems = task.train_problems(setup.prompts, np.random.default_rng(setup.seed))
    prompts = [p.prompt for p in problems]
    enc = tok(prompts, padding=True, padding_side="left", return_tensors="pt")
    G = setup.group
    return prompts, enc["input_ids"].repeat_interleave(G, 0), enc["attention_mask"].repeat_interleave(G, 0)


def _gen_config(tok, T: int, **kw):
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=T,
                            min_new_tokens=0, eos_token_id=[tok.eos_token_id],
                            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                            use_cache=True, **kw)


def measure(model, tok, prompts, setup: StepSetup, repeats: int) -> dict:
    """Interleaved timings of the engine and the floor's generation on one workload."""
    import torch

    from ablate.rollout.hf import HFEngine

    G, T = setup.group, setup.max_new_tokens
    engine = HFEngine(max_new_tokens=T)
    gen_cfg = _gen_config(tok, T)
    tokens: dict[str, list[float]] = {"ablate": [], "floor": []}
    model.eval()

    def ablate():
        out = engine.generate(model, tok, prompts, G, generator=torch.Generator().manual_seed(0),
                              compute_logprobs=False)
        tokens["ablate"].append(float(out.response_mask.sum()))

    def floor():
        enc = tok(prompts, padding=True, padding_side="left", return_tensors="pt")
        ids, att = enc["input_ids"].repeat_interleave(G, 0), enc["attention_mask"].repeat_interleave(G, 0)
        with torch.no_grad():
            resp = model.generate(input_ids=ids, attention_mask=att, generation_config=gen_cfg)[:, ids.shape[1]:]
        L = resp.shape[1]
        is_eos = resp == tok.eos_token_id
        first = torch.where(is_eos.any(-1), is_eos.float().argmax(-1), torch.full((resp.shape[0],), L))
        rmask = torch.arange(L)[None, :] <= first[:, None]
        tok.batch_decode(torch.where(rmask, resp, torch.full_like(resp, tok.pad_token_id)),
                         skip_special_tokens=True)
        tokens["floor"].append(float(rmask.sum()))

    times = interleaved({"ablate": ablate, "floor": floor}, repeats=repeats)
    out = {}
    for k, ts in times.items():
        toks = tokens[k][-len(ts):]
        out[k] = {"s": median(ts), "tokens_per_s": median(n / t for n, t in zip(toks, ts)),
                  "tokens": median(toks), "times": ts}
    return out


def options(model, ids, att, tok, T: int, repeats: int) -> dict:
    """Bare ``generate`` under the options tried: seconds per call (medians, interleaved)."""
    import torch

    dyn, static = _gen_config(tok, T), _gen_config(tok, T, cache_implementation="static")

    def call(cfg, ctx):
        def f():
            with ctx():
                model.generate(input_ids=ids, attention_mask=att, generation_config=cfg)
        return f

    times = interleaved({"no_grad": call(dyn, torch.no_grad), "inference_mode": call(dyn, torch.inference_mode),
                         "static_cache": call(static, torch.inference_mode)}, repeats=repeats)
    return {k: median(v) for k, v in times.items()}


def run(quick: bool = False) -> Section:
    sec = Section("generation")
    t0 = time.perf_counter()
    setups = ([StepSetup(prompts=2, group=4, max_new_tokens=4)] if quick else
              [StepSetup(prompts=8, group=8, max_new_tokens=8), StepSetup(prompts=32, group=8, max_new_tokens=8),
               StepSetup(prompts=8, group=8, max_new_tokens=32)])
    repeats = 2 if quick else 9
    for s in setups:
        log(f"[bench] generation: {s.label()}")
        model, tok, task, _ = build_tiny(s)
        prompts, ids, att = _inputs(tok, task, s)
        m = measure(model, tok, prompts, s, repeats)
        opt = options(model, ids, att, tok, s.max_new_tokens, repeats)
        sec.details[s.label()] = {"measure": m, "options_s": opt}
        a, f = m["ablate"], m["floor"]
        sec.rows.append(row(f"generation {s.label()}: ablate tokens/s", a["tokens_per_s"], unit="tok/s",
                            note=f"floor {f['tokens_per_s']:.0f} tok/s; {a['s'] * 1e3:.0f} vs {f['s'] * 1e3:.0f} ms "
                                 f"per call ({a['tokens']:.0f} vs {f['tokens']:.0f} tokens)"))
        sec.rows.append(row(f"generation {s.label()}: ablate / floor (s per token)",
                            (a["s"] / a["tokens"]) / (f["s"] / f["tokens"]), target="<= 1.05"))
        sec.rows.append(row(f"generation {s.label()}: inference_mode / no_grad", opt["inference_mode"] / opt["no_grad"],
                            note=f"static KV cache / dynamic {opt['static_cache'] / opt['inference_mode']:.2f}x"))
    sec.seconds = time.perf_counter() - t0
    return sec
