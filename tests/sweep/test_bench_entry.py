"""`ablate bench` loads bench/ from the source checkout without touching sys.path, and says
plainly that it needs one when ablate runs from an installed package."""

from __future__ import annotations

import sys
from pathlib import Path

import ablate.cli as cli
from tests.sweep.conftest import REPO


def test_bench_loads_from_the_checkout_without_sys_path(monkeypatch):
    before = list(sys.path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != REPO])
    saved = {k: v for k, v in sys.modules.items() if k == "bench" or k.startswith("bench.")}
    for k in saved:
        monkeypatch.delitem(sys.modules, k)
    mod = cli._load_bench()
    assert Path(mod.__file__).resolve() == REPO / "bench" / "__main__.py"
    assert callable(mod.main)
    assert str(REPO) not in sys.path
    monkeypatch.setattr(sys, "path", before)


def test_bench_without_a_source_checkout_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "_bench_root", lambda: tmp_path / "bench")
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bench: `ablate bench` needs a source checkout")
    assert err.count("\n") == 1
