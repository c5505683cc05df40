"""Layering: the package import graph (python -m ablate.spec.imports) has no cycle."""

from __future__ import annotations

import subprocess
import sys

from ablate.spec.imports import cycles, package_graph

# Cycles that are known and not yet removed; each entry must still be a cycle (so a fix forces its
# removal). claims <-> report <-> sweep: ablate/claims holds both the claim format (claims.spec, which
# sweep.space and report import) and the runner/evaluation (claims.run, claims.evaluate, which import
# sweep and report); and report.load recovers torn trials.jsonl lines through sweep.ledger (goes
# with "one record of a trial", issue 19 item 3).
PENDING: list[list[str]] = [["claims", "report", "sweep"]]


def test_cycles_finds_a_planted_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_packages():
    found = cycles(package_graph())
    assert [c for c in found if c not in PENDING] == []
    assert all(c in found for c in PENDING), "a pending cycle is gone: remove it from PENDING"


def test_low_layers_import_nothing_above_them():
    g = package_graph()
    assert g["spec"] <= {"errors"} and g["errors"] == set() and g["component"] == set()
    assert g["registry"] <= {"errors", "spec"}
    assert g["config"] <= {"adapters", "errors", "registry", "schema", "spec"}
    assert g.get("adapters", set()) == set()
    assert "train" not in g["upge"] | g["critic"] | g["objectives"] | g["pipeline"]


def test_import_graph_command_prints_edges():
    out = subprocess.run([sys.executable, "-m", "ablate.spec.imports"], capture_output=True, text=True)
    assert "train" in out.stdout and "cycle(s)" in out.stdout


def test_ablate_never_imports_bench():
    """bench/ measures ablate from outside; the package (cli included) does not depend on it."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "ablate"
    offenders = []
    for p in root.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "bench" or n.startswith("bench.") for n in names):
                offenders.append(str(p.relative_to(root)))
    assert offenders == []
