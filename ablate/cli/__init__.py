"""`ablate` command line: train, sweep, report, claims, plan, probe, methods, slots, bench.

The top layer: it may import every package, and none imports it. The commands that drive other
commands live here too: ``claims`` (``ablate.cli.claims``: runs claim sweeps, writes the claims
report) and ``plan`` (``ablate.cli.plan``: power planning from a pilot sweep)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from ablate.errors import ConfigError
from ablate.spec.cli_options import add_safety_arguments, apply_plugins


def _cmd_train(args: argparse.Namespace) -> int:
    from ablate.config import check_output_dir, compose_config
    from ablate.train.api import quiet_third_party, run_config

    apply_plugins(args)
    cfg = compose_config(args.overrides)
    if args.print_config:
        return _print_config(cfg)
    if cfg.get("run_dir"):
        check_output_dir(cfg.run_dir, "run_dir", args.allow_outside)
    elif os.environ.get("ABLATE_RUNS"):
        check_output_dir(os.environ["ABLATE_RUNS"], "ABLATE_RUNS", args.allow_outside)
    from ablate.tracking import progress

    try:
        with quiet_third_party(enabled=not args.verbose), \
                (progress.to_console() if not args.quiet else contextlib.nullcontext()):
            summary = run_config(cfg, progress=not args.quiet)
    except OSError as e:  # disk full, directory removed mid-run: one line; summary says failed
        print(f"error: run: {e.strerror or e} ({getattr(e, 'filename', None) or 'run dir'})",
              file=sys.stderr)
        return 1
    fin = summary["final"]
    init = summary.get("initial_eval", {})
    keys = [k for k in ("eval/pass@1", "eval/pass@8") if k in fin]
    parts = [f"{k.split('/')[1]} {init.get(k, float('nan')):.3f} -> {fin[k]:.3f}" for k in keys]
    print(f"[ablate] {summary['name']}: {summary['steps_done']} steps in {summary['wall_s']:.1f}s; "
          + "; ".join(parts) + f"; entropy {fin.get('train/entropy', float('nan')):.3f}")
    print(f"[ablate] run dir: {summary['run_dir']}")
    if summary["wandb"].get("dir"):
        print(f"[ablate] W&B ({summary['wandb'].get('mode')}): {summary['wandb']['dir']}"
              + ("  (upload later with `wandb sync <dir>`)" if summary['wandb'].get('mode') == 'offline' else ""))
    return 0


def _print_config(cfg) -> int:
    """The resolved, validated config as YAML (what a run would use); nothing is created."""
    import yaml

    from ablate.config import to_plain
    from ablate.train.validate import validate_config

    validate_config(cfg)
    sys.stdout.write(yaml.safe_dump(to_plain(cfg), sort_keys=False))
    return 0


def _train_epilog() -> str:
    """Config groups and their choices, read from the group list and conf/ (never hard-coded)."""
    from ablate.config import GROUPS
    from ablate.registry import conf_dir

    lines = ["config groups (choose one with group=name; set a field with group.field=value):"]
    for g in GROUPS:
        opts = sorted(p.stem for p in (conf_dir() / g).glob("*.yaml"))
        total, shown = len(opts), ", ".join(opts)
        while len(shown) > 70:  # one line per group: as many names as fit, then the count
            opts = opts[:-1]
            shown = ", ".join(opts) + f", ... ({total} in all)"
        lines.append(f"  {g:<13} {shown or '(none)'}")
    lines += ["", "where to look:",
              "  ablate slots [family]     every slot variant with its parameters and defaults",
              "  ablate methods [name]     method presets: which slots each one fills",
              f"  {conf_dir()}/<group>/<name>.yaml   the files behind each choice",
              "  ablate train ... --print-config   the resolved config, without running"]
    return "\n".join(lines)


def _cmd_methods(args: argparse.Namespace) -> int:
    from ablate.methods.catalog import entries, format_catalog

    if args.name:
        from ablate.methods.describe import describe, format_description

        d = describe(args.name)
        print(json.dumps(d, indent=2, ensure_ascii=False) if args.json else format_description(d))
    elif args.markdown:
        from ablate.methods.docs import render_markdown

        sys.stdout.write(render_markdown())
    elif args.json:
        print(json.dumps(entries(), indent=2, ensure_ascii=False))
    else:
        print(format_catalog())
    return 0


def _cmd_slots(args: argparse.Namespace) -> int:
    from ablate.registry import describe_variants
    from ablate.spec.groups import SLOT_FAMILIES

    fams = tuple(args.family) if args.family else SLOT_FAMILIES
    infos = describe_variants(fams)
    if args.json:
        print(json.dumps([vars(i) for i in infos], indent=2, default=str))
        return 0
    cur = None
    for i in infos:
        if i.family != cur:
            cur = i.family
            print(f"\n{cur}:")
        params = ", ".join(f"{k}={v!r}" for k, v in i.params.items())
        print(f"  {i.name:<26} {i.target.rsplit('.', 1)[-1]}({params})")
        if i.doc:
            print(f"  {'':<26} {i.doc}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ablate.report import generate_report

    from ablate.claims.spec import check_metric_name

    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"report: sweep dir {str(sweep_dir)!r} does not exist")
    metrics = [check_metric_name("--metric", m) for m in args.metric or []]
    presets = _read_presets(args.presets) if args.presets else None
    out = generate_report(sweep_dir, out_dir=Path(args.output) if args.output else None, presets=presets,
                          log=lambda m: print(f"[ablate] {m}"), metrics=metrics)
    print(f"[ablate] report: {out}")
    return 0


def _read_presets(path: str) -> list:
    """``--presets``: the JSON list ``ablate methods --json`` writes; anything else is one line."""
    try:
        presets = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"report: --presets {path!r}: {getattr(e, 'strerror', None) or e}; "
                          "allowed: the JSON file `ablate methods --json` writes") from None
    if not isinstance(presets, list):
        raise ConfigError(f"report: --presets {path!r} holds a {type(presets).__name__}; allowed: "
                          "the JSON list `ablate methods --json` writes")
    return presets


def _cmd_claims(args: argparse.Namespace) -> int:
    from ablate.cli.claims import run_claims

    return run_claims(args.files, report_only=args.report_only, output_dir=args.output_dir,
                      report_dir=args.report_dir, readme=args.readme, num_cpus=args.num_cpus)


def _cmd_plan(args: argparse.Namespace) -> int:
    from ablate.cli.plan import main as plan_main

    return plan_main(args.target, args.effect)


def _cmd_probe(args: argparse.Namespace) -> int:
    from ablate.probe.estimators import probe_estimators, split_arms, write_result

    res = probe_estimators(args.overrides, split_arms(args.arms), batches=args.batches,
                           reference=args.reference,
                           log=None if args.quiet else (lambda m: print(f"[ablate] probe: {m}")))
    js, _ = write_result(res, Path(args.output))
    print(res.markdown(), end="")
    print(f"[ablate] probe: {js} (+ .md)")
    return 0


BENCH_HINT = ("bench: the benchmarks are not part of the installed package; from a source "
              "checkout run `python -m bench [--quick] [--only ...]` (see bench/README.md)")


def _add_train_parser(sub) -> None:
    t = sub.add_parser("train", help="one training run: ablate train method=grpo [overrides]",
                       epilog=_train_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. method=dapo mask=none train.lr=3e-4")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_safety_arguments(t)
    t.add_argument("--print-config", action="store_true",
                   help="print the resolved config (YAML) and exit without running or creating anything")
    t.add_argument("-v", "--verbose", action="store_true",
                   help="let third-party warnings and logs (transformers, peft, torch) through")
    t.set_defaults(func=_cmd_train)


def _add_claims_parser(sub) -> None:
    c = sub.add_parser("claims", help="re-test published claims: run search_spaces/claims/*.yaml, "
                       "write reports/claims/claims.{md,html}")
    c.add_argument("files", nargs="*", help="claim sweeps (default: every search_spaces/claims/*.yaml)")
    c.add_argument("--report-only", action="store_true", help="no runs: report the sweeps on disk")
    c.add_argument("--output-dir", default="runs/claims", help="parent of the sweep dirs (default runs/claims)")
    c.add_argument("--report-dir", default="reports/claims", help="combined report dir (default reports/claims)")
    c.add_argument("--readme", default="README.md",
                   help="README whose claims block (between <!-- claims:begin/end --> markers) is regenerated")
    c.add_argument("--num-cpus", type=float, default=None, metavar="N", help="CPUs of the local Ray instance")
    c.set_defaults(func=_cmd_claims)


def _add_probe_parser(sub) -> None:
    pr = sub.add_parser("probe", help="estimators' gradients at a fixed policy on shared rollout "
                        "batches: variance and bias (ablate probe method=grpo --arms advantage=group_zscore,advantage=opo)")
    pr.add_argument("overrides", nargs="*", help="overrides shared by every arm (as for train; "
                    "model.path=<run_dir>/model probes a saved checkpoint, default the warm start)")
    pr.add_argument("--arms", required=True, help="comma-separated arms, each one or more "
                    "space-separated overrides (quoted); the arm's text is its label")
    pr.add_argument("--batches", type=int, default=16, help="shared rollout batches (>= 2; default 16)")
    pr.add_argument("--reference", default=None, help="the arm whose mean gradient is the reference (default: the first)")
    pr.add_argument("-o", "--output", default="runs/probe/probe", help="writes OUTPUT.json and OUTPUT.md")
    pr.add_argument("-q", "--quiet", action="store_true")
    pr.set_defaults(func=_cmd_probe)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ablate", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_train_parser(sub)
    m = sub.add_parser("methods", help="the method catalog: presets and every listed paper's method")
    m.add_argument("name", nargs="?", help="a preset or listed method: print its full decomposition")
    m.add_argument("--json", action="store_true")
    m.add_argument("--markdown", action="store_true", help="docs/methods.md (see ablate.methods.docs)")
    m.set_defaults(func=_cmd_methods)
    s = sub.add_parser("slots", help="every slot variant with its parameters")
    s.add_argument("family", nargs="*", help="mask, denominator, advantage, likelihood, aggregation")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_slots)
    r = sub.add_parser("report", help="(re)generate the report of a sweep directory")
    r.add_argument("sweep_dir")
    r.add_argument("-o", "--output", help="output dir (default reports/<sweep name>)")
    r.add_argument("--presets", help="JSON file from `ablate methods --json` for method labels "
                   "(default: the catalog's)")
    r.add_argument("--metric", action="append", metavar="NAME",
                   help="also analyse this logged metric (marginal means, pairwise differences); repeatable")
    r.set_defaults(func=_cmd_report)
    _add_claims_parser(sub)
    pl = sub.add_parser("plan", help="power planning from a pilot sweep: seeds needed for 80%% power, "
                        "MDE at the current seeds")
    pl.add_argument("target", help="a sweep directory, or a search space file whose sweep has run")
    pl.add_argument("--effect", type=float, default=None, metavar="DELTA",
                    help="the difference to detect (default: each claim's effect, else the observed one)")
    pl.set_defaults(func=_cmd_plan)
    _add_probe_parser(sub)
    from ablate.sweep.cli import add_sweep_parser

    add_sweep_parser(sub)
    sub.add_parser("bench", help="where the benchmarks are: `python -m bench` in a source checkout",
                   add_help=False)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the cli never imports bench/: say where it is
        print(f"error: {BENCH_HINT}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

