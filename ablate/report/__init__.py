"""Sweep comparison reports: ``generate_report(sweep_dir)`` reads a sweep directory and writes
report.md, a self-contained report.html and figures/*.png (ablate.tracking.sweep_reader → stats/effects →
plots → ablate.render)."""

__all__ = ["generate_report", "main"]


def __getattr__(name: str):
    """``generate_report`` is imported on first use, so that importing one report module
    (aggregate, effects) does not pull in the builder's plotting (matplotlib)."""
    if name == "generate_report":
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv=None) -> int:
    """``python -m ablate.report <sweep_dir> [--out DIR] [--presets methods.json]``."""
    import argparse
    import json
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="ablate report", description="Write a comparison report for a sweep.")
    ap.add_argument("sweep_dir")
    ap.add_argument("--out", default=None, help="output directory (default: reports/<sweep name>)")
    ap.add_argument("--presets", default=None, help="JSON file from `ablate methods --json` for method labels")
    ap.add_argument("--metric", action="append", default=[], help="also analyse this logged metric (repeatable)")
    args = ap.parse_args(argv)
    presets = json.loads(Path(args.presets).read_text(encoding="utf-8")) if args.presets else None
    from ablate.tracking.sweep_reader import SweepFormatError

    from .build import generate_report

    try:
        out = generate_report(args.sweep_dir, args.out, presets, metrics=args.metric)
    except SweepFormatError as e:
        print(f"ablate report: {e}")
        return 2
    print(out / "report.html")
    return 0
