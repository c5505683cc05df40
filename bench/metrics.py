"""Section 3: cost of the per-step diagnostics ``train/grad_var`` (+ grad_snr) and ``train/entropy``.

(a) Step level: ``ablate train`` with ``train.metrics.grad_var=true train.metrics.entropy=true``
    (as shipped) against both false, interleaved, at 2 and 4 microbatches on the tiny model and at
    2 microbatches on a 4x larger model. Row: median step(on) / median step(off), target <= 1.10.

(b) Meter level: the GradVarianceMeter's own work per optimizer step (K x ``after_backward`` +
    ``finish``) against the forward+backward of the same K microbatches, for three model sizes and
    K = 2, 4. This isolates how the cost grows: the meter is O(P) memory traffic per microbatch
    (one foreach subtract, norm and copy over the gradient), the backward is O(P x tokens per
    microbatch) FLOPs, so the relative cost is ~ K / tokens per step and independent of P.
"""

from __future__ import annotations

import time

import torch

from bench.ablate_run import run_ablate
from bench.common import Section, StepSetup, log, median, row

OFF = ["train.metrics.grad_var=false", "train.metrics.entropy=false"]
ON = ["train.metrics.grad_var=true", "train.metrics.entropy=true"]
BIGGER = ["model.hidden_size=256", "model.intermediate_size=512"]  # ~2.5M params (tiny: ~0.66M)


def _kept(xs):
    return list(xs[1:-1]) if len(xs) > 2 else list(xs[-1:])


def step_level(setup: StepSetup, extra: list[str], repeats: int) -> dict:
    on, off = [], []
    for r in range(repeats):
        order = [("on", ON), ("off", OFF)] if r % 2 == 0 else [("off", OFF), ("on", ON)]
        for name, ov in order:
            res = run_ablate(setup, extra=list(extra) + ov)
            (on if name == "on" else off).extend(_kept(res["step_s"]))
    return {"on_s": median(on), "off_s": median(off), "ratio": median(on) / median(off),
            "on": on, "off": off}


def _model(hidden: int, layers: int, inter: int, vocab: int = 20):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=128, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def meter_level(hidden: int, layers: int, inter: int, K: int, rows: int, seq: int,
                repeats: int) -> dict:
    """Seconds per optimizer step of the meter vs of K microbatch forward+backward passes."""
    from ablate.metrics.gradvar import GradVarianceMeter

    model = _model(hidden, layers, inter)
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in {id(p): p for p in params}.values())
    meter = GradVarianceMeter(params)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 20, (rows, seq), generator=g)
    chunks = ids.tensor_split(K)
    fb, mt = [], []
    for r in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        meter.start()
        t_fb = t_m = 0.0
        for c in chunks:
            t0 = time.perf_counter()
            out = model(input_ids=c, use_cache=False).logits
            torch.log_softmax(out.float(), -1)[..., 0].mean().backward()
            t1 = time.perf_counter()
            meter.after_backward()
            t_fb += t1 - t0
            t_m += time.perf_counter() - t1
        t0 = time.perf_counter()
        meter.finish()
        t_m += time.perf_counter() - t0
        if r:  # first round is warm-up
            fb.append(t_fb)
            mt.append(t_m)
    return {"params": n_params, "K": K, "rows": rows, "seq": seq, "meter_s": median(mt),
            "fwd_bwd_s": median(fb), "meter_over_fwd_bwd": median(mt) / median(fb)}


def run(quick: bool = False) -> Section:
    sec = Section("metrics")
    t0 = time.perf_counter()
    if quick:
        cases = [("tiny, 2 microbatches", StepSetup(prompts=4, group=4, steps=4, microbatches=2), [])]
        repeats = 1
        meter_cases = [(128, 4, 256, 2)]
        meter_rows, meter_seq, meter_reps = 32, 16, 2
    else:
        cases = [("tiny, 2 microbatches", StepSetup(prompts=32, group=8, steps=6, microbatches=2), []),
                 ("tiny, 4 microbatches", StepSetup(prompts=32, group=8, steps=6, microbatches=4), []),
                 ("~2.5M params, 2 microbatches",
                  StepSetup(prompts=32, group=8, steps=5, microbatches=2), BIGGER)]
        repeats = 2
        meter_cases = [(h, l, i, K) for (h, l, i) in ((128, 4, 256), (256, 4, 512), (512, 6, 1536))
                       for K in (2, 4)]
        meter_rows, meter_seq, meter_reps = 64, 16, 2
    for name, setup, extra in cases:
        log(f"[bench] metrics on/off: {name}")
        r = step_level(setup, extra, repeats)
        sec.rows.append(row(f"metrics on/off step, {name}", r["ratio"], target="<= 1.10",
                            note=f"{r['on_s']:.3f} s vs {r['off_s']:.3f} s (B={setup.batch})"))
        sec.details[f"step {name}"] = {k: v for k, v in r.items()}
    meter = []
    for h, l, i, K in meter_cases:
        log(f"[bench] grad-var meter: hidden={h} layers={l} K={K}")
        m = meter_level(h, l, i, K, meter_rows, meter_seq, meter_reps)
        meter.append(m)
        sec.rows.append(row(f"grad-var meter / fwd+bwd, {m['params'] / 1e6:.2f}M params, K={K}",
                            m["meter_over_fwd_bwd"], unit="x",
                            note=f"{m['meter_s'] * 1e3:.1f} ms vs {m['fwd_bwd_s'] * 1e3:.0f} ms "
                                 f"({meter_rows}x{meter_seq} tokens)"))
    sec.details["meter"] = meter
    sec.seconds = time.perf_counter() - t0
    return sec
