"""Run the CLI in-process in an empty working directory and say what it left behind."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml


@dataclass
class Outcome:
    rc: int
    stderr: str
    stdout: str
    created: list[str]  # paths (relative to the working directory) that exist afterwards
    crashed: str = ""  # an exception that escaped main(), as "Type: message"

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]

    @property
    def clean(self) -> bool:
        """Exit 2 with exactly one line, naming what is allowed, and nothing created."""
        lines = self.error_lines
        return (self.rc == 2 and not self.crashed and len(lines) == 1
                and lines[0].startswith("error: ") and not self.created)


def run_cli(argv: Sequence[str], cwd: Path) -> Outcome:
    """``ablate <argv>`` in-process with ``cwd`` as the working directory (restored after)."""
    from ablate.cli import main

    cwd = Path(cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(cwd))
    old = os.getcwd()
    err, out = io.StringIO(), io.StringIO()
    crashed, rc = "", -1
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = main(list(argv))
            except SystemExit as e:  # argparse
                rc = int(e.code) if isinstance(e.code, int) else 2
            except BaseException as e:  # noqa: BLE001 - a crash is what we are counting
                crashed = f"{type(e).__name__}: {e}"[:300]
    finally:
        os.chdir(old)
    created = sorted(set(os.listdir(cwd)) - before)
    return Outcome(rc, err.getvalue(), out.getvalue(), created, crashed)


def write_space(path: Path, **fields) -> Path:
    data = {"name": "sec", "metric": "eval/pass@1", "seeds": [0],
            "base_overrides": ["train.steps=1"], **fields}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
