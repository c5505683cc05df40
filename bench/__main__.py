"""``python -m bench`` / ``ablate bench``: run the benchmarks, print one table of ratios, write JSON.

Sections (``--only``/``--skip`` take comma-separated names):
  step       ablate train vs TRL GRPOTrainer vs a hand-written GRPO step (+ ablate's phase breakdown)
  generation rollout tokens/s: ablate's HF engine vs the floor's bare generate; options tried
  long       GRPO step + tokens/s with 128/256-token answers, a locally built 3.6M Qwen2 (BPE, chat)
  evalcache  a sweep arm's step-0 eval read from the shared eval cache vs computed
  estimator  composed UPGE loss vs hand-fused loss (GRPO, DAPO, GSPO; log-probs and 32k logits)
  metrics    grad-var + entropy diagnostics on vs off; grad-var meter cost vs model size / microbatches
  sweep      ablate sweep per-trial overhead vs direct trainer calls; 2 concurrent trials vs 1
  report     report generation for a synthetic 200-trial x 100-step sweep
  scaling    step time as group size, batch size and response length double

``--quick`` runs a small smoke configuration of each (seconds, not minutes; its numbers are not
meaningful). Results: ``bench/results/latest.json`` (and ``bench/results/<date>.json`` for a full
run), or ``--out FILE``. The last line printed is a one-line summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence

import bench.common  # noqa: F401  (sets the environment before torch/W&B/Ray load)
from bench.common import CpuMeter, Section, load_average, log, machine_info, set_threads

SECTIONS = ("step", "generation", "long", "evalcache", "estimator", "metrics", "sweep", "report", "scaling")
RESULTS = Path(__file__).resolve().parent / "results"


def _section_runner(name: str):
    import importlib
    return importlib.import_module(f"bench.{name}").run


def _fmt(v, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "s":
        return f"{v:.3f} s" if abs(v) < 10 else f"{v:.1f} s"
    return f"{v:.3g} {unit}"


def format_table(sections: list[Section]) -> str:
    rows = [(s.name, r) for s in sections for r in s.rows]
    w = max([len(r["metric"]) for _, r in rows] + [20])
    lines = [f"{'metric':<{w}}  {'value':>10}  {'target':>9}  {'met':>4}  note",
             "-" * (w + 40)]
    for _, r in rows:
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        lines.append(f"{r['metric']:<{w}}  {_fmt(r['value'], r['unit']):>10}  "
                     f"{(r['target'] or ''):>9}  {met:>4}  {r['note']}")
    loads = [f"{s.name} {s.load:.2f}" for s in sections if s.load is not None]
    if loads:
        busy = any(s.load > 0.3 for s in sections if s.load is not None and s.name != "sweep")
        lines.append("cores used by other processes during each section (of "
                     f"{os.cpu_count()}): " + ", ".join(loads)
                     + ("   [> 0.3: timings disturbed by other processes]" if busy else "")
                     + "  (sweep: includes its own Ray workers)")
    for s in sections:
        if s.error:
            last = [x for x in s.error.splitlines() if x.strip()] or [""]
            lines.append(f"{s.name}: ERROR {last[-1][:300]}")
    return "\n".join(lines)


def summary_line(sections: list[Section], out: Path, wall: float) -> str:
    rows = [r for s in sections for r in s.rows]
    judged = [r for r in rows if r["met"] is not None]
    met = sum(1 for r in judged if r["met"])
    missed = [r["metric"] for r in judged if not r["met"]]
    errors = [s.name for s in sections if s.error]
    parts = [f"bench: {met}/{len(judged)} targets met"]
    if missed:
        parts.append(f"missed: {'; '.join(missed)}")
    if errors:
        parts.append(f"errors in: {', '.join(errors)}")
    parts.append(f"{wall:.0f} s")
    parts.append(f"-> {out}")
    return " | ".join(parts)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke configuration")
    ap.add_argument("--only", default=None, help=f"sections to run ({','.join(SECTIONS)})")
    ap.add_argument("--skip", default="", help="sections to leave out")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/latest.json; "
                                                 "--quick: bench/results/quick.json)")
    ap.add_argument("--no-dated", action="store_true",
                    help="do not also write bench/results/<date>.json")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--profile", action="store_true",
                    help="also profile an ablate run with pyinstrument (bench/results/profile_ablate.*)")
    argv_l = list(sys.argv[1:] if argv is None else argv)
    if argv_l[:1] == ["--"]:  # `ablate bench -- --quick` passes the separator through
        argv_l = argv_l[1:]
    args = ap.parse_args(argv_l)

    only = [s for s in (args.only or ",".join(SECTIONS)).split(",") if s]
    skip = {s for s in args.skip.split(",") if s}
    bad = [s for s in only + sorted(skip) if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    todo = [s for s in only if s not in skip]
    set_threads(args.threads)

    out = Path(args.out) if args.out else RESULTS / ("quick.json" if args.quick else "latest.json")
    la = load_average()
    if la and la[0] > 1.5:
        log(f"[bench] warning: load average {la[0]:.2f} (> 1.5): the machine is busy, timings "
            "will be noisy and slow")
    import torch
    threads = torch.get_num_threads()
    machine = machine_info()  # before any section (the load average at the start is in it)
    t_start = time.perf_counter()
    started = datetime.now().astimezone()
    sections: list[Section] = []
    for name in todo:
        log(f"[bench] === {name} ===")
        t0 = time.perf_counter()
        cpu = CpuMeter()
        try:
            sec = _section_runner(name)(quick=args.quick)
        except Exception as e:  # noqa: BLE001 - one broken section must not lose the others
            sec = Section(name, error="".join(traceback.format_exception(type(e), e, e.__traceback__))[-3000:])
            log(f"[bench] {name} failed: {type(e).__name__}: {e}")
        sec.seconds = sec.seconds or time.perf_counter() - t0
        sec.load = cpu.other_cores()
        torch.set_num_threads(threads)  # a trainer run with `threads=N` changes it process-wide
        log(f"[bench] {name}: {sec.seconds:.1f} s")
        sections.append(sec)
    profile = None
    if args.profile:
        from bench.profile import run_profile
        try:
            profile = run_profile(RESULTS, quick=args.quick)
        except Exception as e:  # noqa: BLE001
            profile = {"error": f"{type(e).__name__}: {e}"}
    wall = time.perf_counter() - t_start

    machine["load_average_at_end"] = load_average()
    doc = {
        "created": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "argv": list(argv) if argv is not None else sys.argv[1:],
        "wall_s": wall,
        "machine": machine,
        "rows": [{"section": s.name, **r} for s in sections for r in s.rows],
        "sections": {s.name: {"seconds": s.seconds, "error": s.error,
                              "other_processes_cores": s.load, "details": s.details}
                     for s in sections},
        "profile": profile,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(doc), indent=1, default=_json_default, allow_nan=False)
    out.write_text(text + "\n")
    if not args.quick and not args.no_dated and args.out is None and set(todo) == set(SECTIONS):
        (RESULTS / f"{started.strftime('%Y-%m-%d')}.json").write_text(text + "\n")
    print(format_table(sections))
    print(summary_line(sections, out, wall))
    return 1 if any(s.error for s in sections) else 0


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj



if __name__ == "__main__":
    sys.exit(main())
