"""Section 1: step time of ``ablate train method=grpo`` against TRL's GRPOTrainer and against the
hand-written floor (bench/floor.py), on the same tiny policy, prompts and settings.

The three runs of a batch size are interleaved (order rotated every repeat) so that machine drift
hits all alike. Each run does ``steps`` optimizer steps; the first (warm-up: allocator, first
generate) and the last (ablate evaluates after it) are dropped, and the median of the remaining
steps over all repeats is reported.
"""

from __future__ import annotations

import time

from bench.ablate_run import PHASES, ablate_weights_digest, run_ablate
from bench.common import GenerateMeter, Section, StepSetup, log, median, row
from bench.floor import run_floor
from bench.trl_step import run_trl

RUNNERS = {"ablate": run_ablate, "trl": run_trl, "floor": run_floor}


def _kept(xs: list[float]) -> list[float]:
    return list(xs[1:-1]) if len(xs) > 2 else list(xs[-1:])


def run(quick: bool = False) -> Section:
    sec = Section("step")
    t0 = time.perf_counter()
    if quick:
        setups, repeats = [StepSetup(prompts=4, group=4, steps=4)], 1
    else:
        setups, repeats = [StepSetup(prompts=8, group=8, steps=7),
                           StepSetup(prompts=32, group=8, steps=7)], 2
    digests = {"ablate_trainer": ablate_weights_digest(setups[0])}
    for s in setups:
        label = s.label()
        times: dict[str, list[float]] = {k: [] for k in RUNNERS}
        phases: dict[str, list[float]] = {p: [] for p in (*PHASES, "step")}
        lens: dict[str, list[float]] = {k: [] for k in RUNNERS}
        gen = {k: GenerateMeter(rows=s.batch) for k in RUNNERS}  # HF generate of the training batches
        names = list(RUNNERS)
        for r in range(repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                log(f"[bench] step {label}: {name} (repeat {r + 1}/{repeats})")
                with gen[name].measure():
                    res = RUNNERS[name](s)
                times[name] += _kept(res["step_s"])
                if name == "ablate":
                    for p, v in res["phases"].items():
                        phases[p] += _kept(v)
                    lens[name] += [x for x in _kept(res["response_len"]) if x is not None]
                elif name == "trl":
                    lens[name] += [x for x in _kept(res["completion_len"]) if x is not None]
                    digests["trl"] = res["weights"]
                else:
                    lens[name] += _kept(res["response_len"])
                    digests["floor"] = res["weights"]
        med = {k: median(v) for k, v in times.items()}
        r_trl = med["ablate"] / med["trl"]
        r_floor = med["ablate"] / med["floor"]
        sec.rows.append(row(f"step {label}: ablate / TRL", r_trl, target="<= 0.67",
                            note=f"{med['ablate']:.3f} s vs {med['trl']:.3f} s"))
        sec.rows.append(row(f"step {label}: ablate / floor", r_floor, target="<= 1.1",
                            note=f"{med['ablate']:.3f} s vs {med['floor']:.3f} s"))
        ph = {p: median(v) for p, v in phases.items()}
        parts = ", ".join(f"{p} {ph[p] * 1e3:.0f}" for p in PHASES)
        sec.rows.append(row(f"step {label}: ablate phases (ms)", ph["step"], unit="s",
                            note=parts + " (forward_backward includes estimator)"))
        tps = {k: g.tokens_per_s for k, g in gen.items()}
        sec.rows.append(row(f"step {label}: generate tokens/s, ablate", tps["ablate"], unit="tok/s",
                            note=f"TRL {tps['trl']:.0f}, floor {tps['floor']:.0f} tok/s (time inside HF "
                                 f"generate for the {s.batch}-row rollouts of every step)"))
        sec.details[label] = {
            "batch": s.batch, "prompts": s.prompts, "group": s.group,
            "max_new_tokens": s.max_new_tokens, "steps_per_run": s.steps, "repeats": repeats,
            "median_step_s": med, "ratio_vs_trl": r_trl, "ratio_vs_floor": r_floor,
            "step_s": times, "ablate_phases_median_s": ph,
            "mean_response_len": {k: (sum(v) / len(v) if v else None) for k, v in lens.items()},
            "generate": {k: {"seconds": g.seconds, "tokens": g.tokens, "calls": g.calls}
                         for k, g in gen.items()},
        }
    sec.details["initial_weights_sha"] = digests
    sec.details["same_initial_weights"] = len(set(digests.values())) == 1
    sec.seconds = time.perf_counter() - t0
    return sec
