"""Where a result came from: the source tree ablate runs from and its git commit, recorded in a
sweep's sweep.json and a probe claim's stored result, so a report names the code behind it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import ablate

REPO_ROOT = Path(ablate.__file__).resolve().parent.parent


def git_commit() -> str | None:
    """HEAD of the checkout ablate is imported from; None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
