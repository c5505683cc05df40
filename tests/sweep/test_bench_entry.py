"""`ablate bench` imports nothing of bench/ (the cli stays independent of it) and says in one
line how to run the benchmarks: `python -m bench` in a source checkout."""

from __future__ import annotations

import sys

import ablate.cli as cli


def test_bench_points_to_python_m_bench_without_importing_it(capsys):
    had = {k for k in sys.modules if k == "bench" or k.startswith("bench.")}
    assert cli.main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bench:") and "python -m bench" in err
    assert err.count("\n") == 1
    assert {k for k in sys.modules if k == "bench" or k.startswith("bench.")} == had
