"""Command-line options that only the person at the terminal may set, shared by every subcommand
that builds from config: ``--plugins`` (modules a ``_target_`` may name besides ablate.*) and
``--allow-outside`` (an output directory outside the working directory). A config or search-space
file cannot set either."""

from __future__ import annotations

import argparse


def add_safety_arguments(p: argparse.ArgumentParser) -> None:
    """``--plugins`` and ``--allow-outside``: what only the person at the command line may allow
    (a config or search-space file cannot)."""
    p.add_argument("--plugins", default=None, metavar="MOD[,MOD]",
                   help="modules whose classes a _target_ may name besides ablate.* (e.g. "
                        "--plugins my_slots for _target_: my_slots.RatioBand; the working "
                        "directory is importable); also ABLATE_PLUGINS")
    p.add_argument("--allow-outside", action="store_true",
                   help="allow an output directory outside the working directory")


def apply_plugins(args: argparse.Namespace) -> None:
    from ablate.spec.targets import set_plugins

    if getattr(args, "plugins", None):
        set_plugins(args.plugins.split(","))
