"""A cheap stand-in for ablate.train.api.run_training with the same signature (sweep tests only).

Behaviour is driven by ``fake.*`` overrides (the sweep passes base_overrides through untouched):
  fake.steps=N           steps to run (default 4), reporting {"step", "eval/pass@1", "train/loss"}
  fake.sleep=S           seconds per step (default 0)
  fake.warm_steps=N      a warm start of N steps (fake.sleep each) before step 1, with progress
  fake.fail_when=K:V     raise RuntimeError when the override K=V is present
  fake.nan_when=K:V      report NaN metrics and return a NaN final value when K=V is present
  fake.marker_dir=DIR    write DIR/<key>.start.<n> / DIR/<key>.finish.<n> per invocation
  fake.die_marker=FILE   SIGKILL the worker at step fake.die_at (default 2) unless FILE exists
(``dying_run_training`` below is the real trainer with an injected worker death.)
The metric depends on the overrides only (mask=ppo_clip is best), so results are reproducible.
A minimal run store is written: config.yaml (with ``choices``), metrics.jsonl, summary.json.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Optional, Sequence

from ablate.spec.groups import GROUPS

MASK_SCORE = {"ppo_clip": 0.3, "clip_higher": 0.25, "none": 0.1}


def _opts(overrides: Sequence[str]) -> dict[str, str]:
    out = {}
    for o in overrides:
        k, sep, v = o.lstrip("+").partition("=")
        if sep:
            out[k] = v
    return out


def trial_key(overrides: Sequence[str]) -> str:
    """Identity of a run for marker files: its overrides without name= and fake.* ones."""
    kept = sorted(o for o in overrides if not o.startswith(("name=", "fake.")))
    return hashlib.sha1("|".join(kept).encode()).hexdigest()[:12]


def _matches(spec: Optional[str], opts: dict) -> bool:
    if not spec:
        return False
    k, _, v = spec.partition(":")
    return opts.get(k) == v


def _mark(opts: dict, key: str, what: str, overrides: Sequence[str]) -> None:
    d = opts.get("fake.marker_dir")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
        (Path(d) / f"{key}.{what}.{uuid.uuid4().hex[:8]}").write_text(
            json.dumps({"pid": os.getpid(), "time": time.time(), "overrides": list(overrides)}))


def fake_run_training(overrides: Sequence[str], run_dir: str,
                      reporter: Optional[Callable[[dict], None]] = None,
                      extra_tracker: Optional[dict] = None) -> dict:
    opts = _opts(overrides)
    key = trial_key(overrides)
    steps = int(opts.get("fake.steps", 4))
    sleep = float(opts.get("fake.sleep", 0))
    seed = int(opts.get("seed", 0))
    rd = Path(run_dir)
    rd.mkdir(parents=True, exist_ok=True)
    choices = {g: opts.get(g) for g in GROUPS}
    (rd / "config.yaml").write_text(
        "choices:\n" + "".join(f"  {g}: {v if v is not None else 'null'}\n"
                               for g, v in choices.items())
        + f"seed: {seed}\nextra_tracker: {json.dumps(extra_tracker or {})}\n")
    _mark(opts, key, "start", overrides)
    t_start = time.time()
    nan = _matches(opts.get("fake.nan_when"), opts)
    base = MASK_SCORE.get(opts.get("mask", ""), 0.2) + 0.01 * seed
    if "train.lr" in opts:
        base += 0.1 - abs(math.log10(float(opts["train.lr"])) + 4) * 0.05
    if opts.get("mask.eps_high"):
        base += 0.1 * float(opts["mask.eps_high"])
    if opts.get("train.epochs"):
        base += 0.01 * int(opts["train.epochs"])
    warm = int(opts.get("fake.warm_steps", 0))
    if warm:  # a stand-in warm start, reporting through the same channel as the real one
        from ablate.tracking import progress

        for i in range(1, warm + 1):
            time.sleep(sleep)
            progress.note("warm_start", cache="miss", step=i, target=warm)
    last = {}
    with open(rd / "metrics.jsonl", "w") as mf:
        for step in range(1, steps + 1):
            if sleep:
                time.sleep(sleep)
            if opts.get("fake.die_marker") and step == int(opts.get("fake.die_at", 2)) \
                    and not Path(opts["fake.die_marker"]).exists():
                import signal  # the worker process dies (once): an infrastructure failure
                Path(opts["fake.die_marker"]).write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            if _matches(opts.get("fake.fail_when"), opts) and step == 2:
                summary = {"status": "failed", "error": "RuntimeError: injected failure"}
                (rd / "summary.json").write_text(json.dumps(summary))
                raise RuntimeError("injected failure")
            val = float("nan") if nan and step >= 2 else base * step / steps
            last = {"step": step, "eval/pass@1": val, "train/loss": 1.0 / step}
            mf.write(json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v)
                                 for k, v in last.items()}) + "\n")
            mf.flush()
            if reporter is not None:
                reporter(dict(last))
    t_end = time.time()
    _mark(opts, key, "finish", overrides)
    final = {k: v for k, v in last.items() if k != "step"}
    summary = {"status": "finished", "final": final, "wall_s": t_end - t_start,
               "steps_done": steps, "t_start": t_start, "t_end": t_end, "pid": os.getpid(),
               "saw_wandb_key": bool(os.environ.get("WANDB_API_KEY")),
               "wandb": {"run_id": f"fake-{key}", "dir": None, "mode": "disabled"}}
    (rd / "summary.json").write_text(json.dumps(
        summary, default=lambda x: None).replace("NaN", "null"))
    return summary


def dying_run_training(overrides: Sequence[str], run_dir: str,
                       reporter: Optional[Callable[[dict], None]] = None,
                       extra_tracker: Optional[dict] = None, resume: Optional[dict] = None,
                       on_step_end: Optional[Callable] = None) -> dict:
    """The real run_training, whose worker process SIGKILLs itself after step ``fake.die_at`` the
    first time (``fake.die_marker`` records that it did): an infrastructure failure mid-run.
    ``fake.step_sleep=S`` sleeps after each step (time to kill the driver mid-run)."""
    import signal

    from ablate.train.api import run_training

    opts = _opts(overrides)
    die_at = int(opts.get("fake.die_at", 0))
    marker = Path(opts["fake.die_marker"]) if opts.get("fake.die_marker") else None

    step_sleep = float(opts.get("fake.step_sleep", 0))

    def hook(trainer, step: int) -> None:
        if on_step_end is not None:
            on_step_end(trainer, step)
        if step_sleep:
            time.sleep(step_sleep)
        if step == die_at and marker is not None and not marker.exists():
            marker.write_text(json.dumps({"pid": os.getpid(), "step": step}))
            os.kill(os.getpid(), signal.SIGKILL)

    real = [o for o in overrides if not o.startswith("fake.")]
    return run_training(real, run_dir, reporter, extra_tracker, resume=resume, on_step_end=hook)
