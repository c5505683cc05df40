"""Section `evalcache`: what an arm saves when its eval is read from the sweep's eval cache
(ablate/train/eval_cache.py) instead of computed.

Two trainers of the quickstart config (GRPO on 2-digit addition, the tiny warm-started policy,
64 eval prompts × 8 samples) that differ only in the mask slot, as two arms of a sweep sharing a
seed: the first computes the step-0 eval (and stores it), the second reads it back. Repeated with
a fresh cache each time; medians. Also the cost of the key (hashing the weights).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import Section, compose, log, median, row


def run(quick: bool = False) -> Section:
    from ablate.train.eval_cache import EvalCache, weights_digest
    from ablate.train.trainer import Trainer

    sec = Section("evalcache")
    t0 = time.perf_counter()
    base = ["method=grpo", "task=addition", "tracker=none", "seed=0"]
    if quick:
        base += ["eval.num_prompts=4", "eval.n=2", "model.warm_start.steps=0"]
    res: dict[str, list[float]] = {"compute": [], "read": [], "hash": []}
    with tempfile.TemporaryDirectory(prefix="bench-evalcache-") as d:
        for r in range(1 if quick else 3):
            log(f"[bench] evalcache: repeat {r + 1}")
            cache = EvalCache(Path(d) / str(r))
            a = Trainer(compose(base + ["mask=ppo_clip"]), eval_cache=cache)
            b = Trainer(compose(base + ["mask=none"]), eval_cache=cache)
            t = time.perf_counter()
            ea = a.evaluate_prompts(0)
            res["compute"].append(time.perf_counter() - t)
            t = time.perf_counter()
            eb = b.evaluate_prompts(0)
            res["read"].append(time.perf_counter() - t)
            t = time.perf_counter()
            weights_digest(b.model)
            res["hash"].append(time.perf_counter() - t)
            if (cache.hits, cache.misses) != (1, 1) or ea[0] != eb[0] or ea[2] != eb[2]:
                raise RuntimeError("evalcache: the second arm did not read the first arm's eval")
    sec.details = {k: v for k, v in res.items()}
    c, rd, h = (median(res[k]) for k in ("compute", "read", "hash"))
    sec.rows.append(row("step-0 eval read from the sweep cache / computed", rd / c,
                        note=f"{rd * 1e3:.1f} ms vs {c:.2f} s (weights hash {h * 1e3:.1f} ms)"))
    sec.seconds = time.perf_counter() - t0
    return sec
