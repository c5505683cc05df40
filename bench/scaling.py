"""Section 6: how ablate's GRPO step time grows as group size, batch size and response length
double (three points each, the other two held at the centre point).

Centre: 16 prompts x 8 samples (B=128), up to 16 new tokens. Batch axis: prompts 8 / 16 / 32
(B = 64 / 128 / 256); group axis: G = 4 / 8 / 16 at 16 prompts; length axis: max_new_tokens
8 / 16 / 32 (the realised mean length is reported too: the untrained policy stops early at EOS
sometimes). Rows give the median step time and its growth over the previous point (2.0x = linear).
"""

from __future__ import annotations

import time

from bench.ablate_run import run_ablate
from bench.common import Section, StepSetup, log, median, row


def _kept(xs):
    return list(xs[1:-1]) if len(xs) > 2 else list(xs[-1:])


def run(quick: bool = False) -> Section:
    sec = Section("scaling")
    t0 = time.perf_counter()
    if quick:
        c = dict(prompts=2, group=4, max_new_tokens=4, steps=3)
        axes = {"group": [2, 4], "prompts": [2, 4], "max_new_tokens": [4, 8]}
    else:
        c = dict(prompts=16, group=8, max_new_tokens=16, steps=5)
        axes = {"prompts": [8, 16, 32], "group": [4, 8, 16], "max_new_tokens": [8, 16, 32]}
    cache: dict[tuple, dict] = {}

    def measure(**kw) -> dict:
        s = StepSetup(**{**c, **kw})
        key = (s.prompts, s.group, s.max_new_tokens)
        if key not in cache:
            log(f"[bench] scaling: {s.label()}")
            res = run_ablate(s)
            lens = [x for x in _kept(res["response_len"]) if x is not None]
            ph = {p: median(_kept(v)) for p, v in res["phases"].items()}
            cache[key] = {"batch": s.batch, "prompts": s.prompts, "group": s.group,
                          "max_new_tokens": s.max_new_tokens, "step_s": median(_kept(res["step_s"])),
                          "mean_response_len": sum(lens) / len(lens) if lens else None,
                          "phases_s": ph}
        return cache[key]

    for axis, values in axes.items():
        pts = [measure(**{axis: v}) for v in values]
        sec.details[axis] = pts
        for i, p in enumerate(pts):
            growth = p["step_s"] / pts[i - 1]["step_s"] if i else None
            name = {"prompts": "batch", "group": "group size", "max_new_tokens": "response length"}[axis]
            label = (f"B={p['batch']}" if axis == "prompts" else
                     f"G={p['group']} (B={p['batch']})" if axis == "group" else
                     f"T={p['max_new_tokens']} (mean {p['mean_response_len']:.1f})")
            sec.rows.append(row(f"scaling {name}: {label}", p["step_s"], unit="s",
                                note="" if growth is None else f"x{growth:.2f} over previous point; "
                                f"rollout {p['phases_s']['rollout']:.2f} s, "
                                f"fwd/bwd {p['phases_s']['forward_backward']:.2f} s"))
    sec.seconds = time.perf_counter() - t0
    return sec
