"""`ablate sweep <file> [overrides...]`: argument parsing around ablate.sweep.runner.run_sweep.

Wire into the main CLI with ``add_sweep_parser(subparsers)`` (sets ``func`` to a handler taking
the parsed namespace and returning an exit code), or call ``sweep_main(argv)`` directly;
``python -m ablate.sweep.cli <file> ...`` works too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ablate.errors import ConfigError

DESCRIPTION = """\
Run a sweep over slot variants, method presets and hyperparameters (Ray Tune + Optuna).
Results go to <output_dir>/<name>/ (sweep.json, per-trial run stores with their records, the Tune
experiment, optuna.journal) and a report to reports/<name>/.

examples:
  ablate sweep search_spaces/quickstart.yaml
  ablate sweep search_spaces/mask_ablation.yaml train.steps=10 --name mask_short
  ablate sweep search_spaces/quickstart.yaml --resume          # after Ctrl-C or a crash
  ablate sweep search_spaces/tpe_example.yaml --address auto   # on an existing Ray cluster
  ablate sweep search_spaces/upge_table.yaml --dry-run         # validate, list the trials
"""
_PARSER = {"description": DESCRIPTION, "formatter_class": argparse.RawDescriptionHelpFormatter}


def _add_arguments(p: argparse.ArgumentParser, remainder: bool = False) -> None:
    p.add_argument("file", help="search-space YAML (see search_spaces/)")
    # as a subcommand the main parser cannot intermix options and positionals: take the rest
    # verbatim and sort options from overrides in run_from_args
    p.add_argument("overrides", nargs=argparse.REMAINDER if remainder else "*", metavar="override",
                   help="Hydra overrides appended to every trial's base_overrides (key=value)")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="attach to an existing Ray cluster (default: start a local Ray)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep: finished trials are kept, unfinished rerun")
    p.add_argument("--output-dir", default=None, metavar="DIR",
                   help="parent of the sweep directory (default: the file's output_dir, 'runs')")
    p.add_argument("--name", default=None, help="sweep name (default: the file's name)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and print the trials without running anything")
    p.add_argument("--num-cpus", type=float, default=None, metavar="N",
                   help="CPUs of the local Ray instance (default: all cores)")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument("--yes", action="store_true",
                   help="start a large sweep (more than 100 trials) without asking")
    from ablate.spec.cli_options import add_safety_arguments

    add_safety_arguments(p)
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's own output (status tables, worker logs) instead of writing "
                        "it to <sweep_dir>/ray.log")


def add_sweep_parser(subparsers) -> argparse.ArgumentParser:
    """Register `sweep` on an argparse subparsers object; ``args.func(args)`` runs it."""
    p = subparsers.add_parser("sweep", help="run a sweep from a search-space file", **_PARSER)
    _add_arguments(p, remainder=True)
    p.set_defaults(func=run_from_args)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ablate sweep", **_PARSER)
    _add_arguments(p)
    return p


def _merge_trailing_options(args: argparse.Namespace) -> argparse.Namespace:
    """Options written after the file/overrides (``sweep f.yaml a=b --resume``) via a subparser."""
    rest = list(args.overrides or [])
    if not any(a.startswith("-") for a in rest):
        return args
    p = build_parser()
    for k, v in vars(p.parse_intermixed_args([args.file] + rest)).items():
        if k == "overrides" or v != p.get_default(k):
            setattr(args, k, v)
    return args


def run_from_args(args: argparse.Namespace) -> int:
    from ablate.spec.cli_options import apply_plugins
    from ablate.sweep.runner import EXIT_INTERRUPTED, run_sweep

    try:
        args = _merge_trailing_options(args)
        apply_plugins(args)
        return run_sweep(args.file, list(args.overrides or []), address=args.address,
                         resume=args.resume, output_dir=args.output_dir, name=args.name,
                         dry_run=args.dry_run, num_cpus=args.num_cpus,
                         report=not args.no_report, verbose=args.verbose,
                         allow_outside=args.allow_outside, yes=args.yes)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def sweep_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    return run_from_args(args)


if __name__ == "__main__":
    sys.exit(sweep_main())
