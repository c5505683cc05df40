"""A small synthetic sweep in the runner's format with planted per-step metric curves, for claim
verdicts and multi-metric statistics.

Design: mask ∈ {clip_higher, ppo_clip} × advantage ∈ {group_zscore, opo} × seeds. Logged metric
``train/m`` at step t = level[mask] + slope[mask]·t + noise; ``eval/pass@1`` logged every 5 steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

MASKS = ("clip_higher", "ppo_clip")
ADVS = ("group_zscore", "opo")


def make_claim_sweep(root, *, level: dict | None = None, slope: dict | None = None,
                     noise: float = 0.05, n_seeds: int = 4, n_steps: int = 20, claims: list | None = None,
                     report_metrics: list | None = None, name: str = "claimsynth", seed: int = 0,
                     first_seed: int = 0) -> Path:
    level = level or {"clip_higher": 1.0, "ppo_clip": 1.0}
    slope = slope or {"clip_higher": 0.0, "ppo_clip": 0.0}
    rng = np.random.default_rng(seed)
    out = Path(root) / name
    (out / "trials").mkdir(parents=True, exist_ok=True)
    space = {"name": name, "slots": {"mask": list(MASKS), "advantage": list(ADVS)}, "methods": [],
             "params": {}, "seeds": list(range(first_seed, first_seed + n_seeds)), "metric": "eval/pass@1", "mode": "max"}
    if claims:
        space["claims"] = claims
    if report_metrics:
        space["report"] = {"metrics": report_metrics}
    (out / "search_space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    (out / "sweep.json").write_text(json.dumps({"name": name, "metric": "eval/pass@1", "mode": "max",
                                                "algorithm": "grid", "max_t": n_steps}))
    i = 0
    for sd in range(first_seed, first_seed + n_seeds):
        for mask in MASKS:
            for adv in ADVS:
                tid = f"t{i:03d}"
                i += 1
                rd = out / "trials" / tid
                rd.mkdir()
                recs = []
                for step in range(1, n_steps + 1):
                    rec = {"step": step, "train/m": level[mask] + slope[mask] * step + noise * rng.standard_normal(),
                           "train/other": float(rng.standard_normal())}
                    if step % 5 == 0:
                        rec["eval/pass@1"] = 0.3 + 0.01 * rng.standard_normal()
                        rec["eval/pass@8"] = 0.6 + 0.01 * rng.standard_normal()
                    recs.append(rec)
                (rd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
                slots = {"mask": mask, "advantage": adv}
                record = {"trial_id": tid, "status": "finished", "assign": slots, "seed": sd,
                          "seeds": [sd], "combo": json.dumps(slots, sort_keys=True),
                          "overrides": [f"mask={mask}", f"advantage={adv}", f"seed={sd}"],
                          "run_dir": f"trials/{tid}", "steps_done": n_steps, "wall_s": 1.0}
                (rd / "summary.json").write_text(json.dumps({"status": "finished",
                                                             "sweep": record}))
    return out


def claim(cid: str, expect: str, metric: str = "train/m", aggregation: str = "mean",
          a: dict | None = None, b: dict | None = None, **extra) -> dict:
    return {"id": cid, "paper": "A paper", "arxiv": "2503.14476", "claim": f"claim {cid}",
            "a": a or {"mask": "clip_higher"}, "b": b or {"mask": "ppo_clip"}, "metric": metric,
            "aggregation": aggregation, "expect": expect, **extra}
