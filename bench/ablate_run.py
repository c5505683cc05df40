"""Run ``ablate train`` in-process and collect per-step wall times and the trainer's perf/* phases.

``run_config`` is what ``ablate train`` calls (config → run store → Trainer.run); a reporter
callback stamps the wall clock at every emitted step, so a step's time is everything between two
emits (rollout, old log-probs, advantages, forward/backward, estimator, optimizer, metrics, the
run store write of the previous step, the reporter). The evals ablate always runs before the first
and after the last step fall outside the steps the callers keep (they drop the first and the
last step).
"""

from __future__ import annotations

import tempfile
import time
from typing import Sequence

from bench.common import StepSetup, compose

PHASES = ("rollout", "logp", "advantage", "forward_backward", "estimator", "metrics", "optimizer",
          "logging")


def run_ablate(setup: StepSetup, method: str = "grpo", extra: Sequence[str] = ()) -> dict:
    from ablate.train.api import run_config

    cfg = compose(setup.overrides(method) + list(extra))
    stamps: list[float] = []
    metrics: list[dict] = []

    def reporter(m: dict) -> None:
        stamps.append(time.perf_counter())
        metrics.append(dict(m))

    with tempfile.TemporaryDirectory(prefix="bench-ablate-") as d:
        t0 = time.perf_counter()
        summary = run_config(cfg, run_dir=d, reporter=reporter, progress=False)
        wall = time.perf_counter() - t0
    # metrics[0] is the initial eval (step 0); metrics[k] is step k
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    per_step = metrics[1:]
    phases = {p: [float(m.get(f"perf/{p}_s", 0.0)) for m in per_step] for p in PHASES}
    phases["step"] = [float(m.get("perf/step_s", float("nan"))) for m in per_step]
    return {"step_s": steps, "phases": phases, "wall_s": wall,
            "reward_mean": [m.get("train/reward_mean") for m in per_step],
            "response_len": [m.get("train/response_len") for m in per_step],
            "summary_steps": summary.get("steps_done")}


def ablate_weights_digest(setup: StepSetup) -> str:
    """Digest of the initial weights inside ablate's own Trainer (proves the shared init)."""
    from ablate.train.trainer import Trainer
    from bench.common import state_digest
    return state_digest(Trainer(compose(setup.overrides())).model)
