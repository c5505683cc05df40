"""Where ablate's step time goes: pyinstrument over an ``ablate train method=grpo`` run (the
B=256 workload of section 1), plus torch's operator profiler over one step's update.

``python -m bench --profile`` writes bench/results/profile_ablate.txt (pyinstrument call tree,
time-ordered) and profile_ablate.html; py-spy (also in the bench extra) gives the same picture
from outside: ``py-spy record -o prof.svg -- python -m bench --only step``.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import StepSetup, log


def run_profile(out_dir: Path, quick: bool = False) -> dict:
    from pyinstrument import Profiler

    from bench.ablate_run import run_ablate

    setup = StepSetup(prompts=4, group=4, steps=3) if quick else StepSetup(prompts=32, group=8, steps=6)
    run_ablate(StepSetup(prompts=2, group=2, steps=2))  # imports and first-call costs outside
    log(f"[bench] profiling ablate train ({setup.label()}, {setup.steps} steps)")
    prof = Profiler(interval=0.001)
    t0 = time.perf_counter()
    prof.start()
    res = run_ablate(setup)
    prof.stop()
    wall = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    txt = prof.output_text(unicode=False, color=False, show_all=False)
    (out_dir / "profile_ablate.txt").write_text(txt)
    (out_dir / "profile_ablate.html").write_text(prof.output_html())
    return {"wall_s": wall, "text": str(out_dir / "profile_ablate.txt"),
            "html": str(out_dir / "profile_ablate.html"), "phases": res["phases"]}
