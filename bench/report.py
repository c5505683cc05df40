"""Section 5: ``generate_report`` on a synthetic sweep of 200 trials x 100 logged steps.

The sweep directory is written by the report tests' generator (tests/report/synthetic.py: the
exact format the sweep runner writes, with planted slot effects): 5 masks x 5 advantages x 2
likelihoods x 4 seeds = 200 trials, 100 steps each, evals every 10 steps. Only
``generate_report`` (load → statistics → plots → markdown + self-contained HTML) is timed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.common import Section, log, median, quiet, row

SLOTS = {
    "mask": ["none", "ppo_clip", "clip_higher", "dual_clip", "clip_cov"],
    "denominator": ["behaviour"],
    "advantage": ["group_zscore", "group_centered", "rloo", "reinforce_pp", "gpg"],
    "likelihood": ["identity", "luffy"],
    "aggregation": ["seq_mean_token_mean"],
}
EFFECTS = {"advantage": {"group_centered": 0.05, "rloo": 0.08, "reinforce_pp": -0.03, "gpg": 0.02},
           "mask": {"ppo_clip": 0.03, "clip_higher": 0.05, "dual_clip": 0.02, "clip_cov": 0.01}}


# what a real trial logs per step besides the generator's few keys (trainer metrics + perf/*)
EXTRA_KEYS = ["train/pg_loss", "train/mask_frac", "train/clip_frac_low", "train/clip_frac_high",
              "train/clip_frac_dual", "train/ratio_mean", "train/ratio_max", "train/ratio_min",
              "train/kl_old", "train/adv_mean", "train/adv_abs_mean", "train/grad_snr",
              "train/grad_norm_preclip", "train/optimizer_steps", "train/skipped_steps", "train/lr",
              "train/truncated_frac", "train/frac_zero_adv_groups", "train/batch_rows",
              "train/demo_frac", "train/gen_rounds", "perf/tokens_per_s", "perf/rollout_s",
              "perf/logp_s", "perf/advantage_s", "perf/forward_backward_s", "perf/estimator_s",
              "perf/metrics_s", "perf/optimizer_s", "perf/logging_s"]


def make_synthetic(root: Path, n_steps: int, seeds: int) -> Path:
    """The generator's sweep, with every metrics.jsonl row padded to the ~40 keys a real trial
    logs per step (the generator writes 7), so that loading costs what it would."""
    import json

    import numpy as np

    from tests.report.synthetic import make_sweep
    sd = make_sweep(root, name="synth200", slots=SLOTS, effects=EFFECTS, n_seeds=seeds,
                    n_steps=n_steps, eval_every=10, n_failed=2, n_early_stopped=3, hostile=False)
    rng = np.random.default_rng(0)
    for f in (sd / "trials").glob("*/metrics.jsonl"):
        rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        vals = rng.random((len(rows), len(EXTRA_KEYS)))
        for r, v in zip(rows, vals):
            r.update({k: float(x) for k, x in zip(EXTRA_KEYS, v)})
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return sd


def run(quick: bool = False) -> Section:
    sec = Section("report")
    t0 = time.perf_counter()
    from ablate.report import generate_report

    steps, seeds, repeats = (20, 1, 1) if quick else (100, 4, 2)
    with tempfile.TemporaryDirectory(prefix="bench-report-") as d:
        root = Path(d)
        tg = time.perf_counter()
        sd = make_synthetic(root, steps, seeds)
        gen_s = time.perf_counter() - tg
        n_trials = sum(1 for _ in (sd / "trials").iterdir())
        times = []
        for r in range(repeats):
            log(f"[bench] report: {n_trials} trials x {steps} steps (repeat {r + 1}/{repeats})")
            t = time.perf_counter()
            with quiet():
                generate_report(sd, out_dir=root / f"out{r}")
            times.append(time.perf_counter() - t)
        html = (root / "out0" / "report.html").stat().st_size
        figures = len(list((root / "out0" / "figures").glob("*.png")))
    per_k = median(times) / (n_trials * steps / 1000)
    sec.rows.append(row(f"report, {n_trials} trials x {steps} steps", median(times), unit="s",
                        target="<= 3" if not quick else None,  # issue 21 item 6
                        note=f"html {html / 1e6:.1f} MB; {figures} figures (bound: 8); runs: "
                             f"{', '.join(f'{t:.1f}' for t in times)} s"))
    # the size-free figure: seconds per 1000 logged trial-steps (was a wall-clock test assertion)
    sec.rows.append(row("report, per 1000 trial-steps", per_k, unit="s"))
    sec.details = {"trials": n_trials, "steps": steps, "times_s": times, "html_bytes": html,
                   "figures": figures, "s_per_1000_trial_steps": per_k,
                   "generate_synthetic_s": gen_s}
    sec.seconds = time.perf_counter() - t0
    return sec
