"""Runs saved by sequential seeds: a group-sequential paired t design (looks after every seed
batch, O'Brien–Fleming-type alpha spending, ``ablate.stats.sequential``) against the fixed-n paired
t design with the same power (80%) at the same two-sided α = 0.05, by simulation.

For a standardised effect δ (difference / SD of the per-seed difference): n_fixed = seeds per arm
for 80% power; the sequential design starts at 3 seeds, adds ``batch`` seeds per look and has the
smallest maximum whose simulated power is ≥ 80%. Reported: the expected seeds per arm when the
effect is there (E[N | δ]) and when it is not (E[N | 0], stopping for "within ±δ" through the
repeated CI), the error rate under the null, and the saving 1 − E[N | δ] / n_fixed.

    python -m bench.sequential [--reps 20000] [--batch 1]
"""

from __future__ import annotations

import argparse

from ablate.stats import SequentialPlan, seeds_needed
from ablate.stats.sequential import simulate

DELTAS = (0.5, 0.8, 1.2)


def design(delta: float, batch: int, reps: int) -> dict:
    n_fixed = seeds_needed(delta, 1.0, paired=True)
    n_max = max(4, n_fixed)
    while True:
        plan = SequentialPlan(3, n_max, batch)
        alt = simulate(plan, delta, reps=reps, stop_within=delta, seed=1)
        if alt["reject"] >= 0.8:
            break
        n_max += 1
    null = simulate(plan, 0.0, reps=reps, stop_within=delta, seed=2)
    return {"delta": delta, "n_fixed": n_fixed, "n_max": n_max, "power": alt["reject"],
            "en_alt": alt["expected_n"], "en_null": null["expected_n"], "fpr": null["reject"],
            "saving_alt": 1 - alt["expected_n"] / n_fixed, "saving_null": 1 - null["expected_n"] / n_fixed}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args(argv)
    print(f"{'δ':>4} {'n fixed':>8} {'n max':>6} {'power':>6} {'E[N|δ]':>7} {'E[N|0]':>7} "
          f"{'FPR':>6} {'saved|δ':>8} {'saved|0':>8}")
    for d in DELTAS:
        r = design(d, args.batch, args.reps)
        print(f"{d:>4} {r['n_fixed']:>8} {r['n_max']:>6} {r['power']:>6.3f} {r['en_alt']:>7.2f} "
              f"{r['en_null']:>7.2f} {r['fpr']:>6.3f} {r['saving_alt']:>8.1%} {r['saving_null']:>8.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
