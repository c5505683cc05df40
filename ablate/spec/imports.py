"""The import graph between ablate's packages, and its cycles: ``python -m ablate.spec.imports``.

A package is ``ablate.<name>`` (a sub-package or a top-level module such as ``config``). An edge
A -> B means some module of A imports B; imports inside functions (lazy) count too, since they tie
the packages together just the same. tests/test_layering.py asserts the graph has no cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the ablate/ folder


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "ablate" else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the ablate modules ``path`` imports (relative imports resolved)."""
    mod = _module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = pkg.split(".")
            name = node.module or ""
            if node.level:
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([name] if name else []))
            out.add(name)
    return {n for n in out if n.startswith("ablate.")}


def package_graph() -> dict[str, set[str]]:
    """{package: packages it imports}, self-edges left out."""
    graph: dict[str, set[str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        src = _package(_module_name(path)) if path.parent != ROOT or path.name != "__init__.py" else None
        if src is None:
            continue
        deps = {_package(m) for m in _imports(path)} - {None, src}
        graph.setdefault(src, set()).update(d for d in deps if d)
    return graph


def module_graph() -> dict[str, set[str]]:
    """{module: ablate modules it imports}: the finer graph, where a package's layers show (e.g. the
    claim format below the report, the ``ablate claims`` runner above the sweep)."""
    paths = sorted(ROOT.rglob("*.py"))
    mods = {_module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        src, deps = _module_name(path), set()
        for name in _imports(path):
            while name and name not in mods:  # ``from ablate.x import name`` -> ablate.x
                name = name.rpartition(".")[0]
            if name and name != src:
                deps.add(name)
        graph[src] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    graph = package_graph()
    for pkg in sorted(graph):
        print(f"{pkg:12s} -> {', '.join(sorted(graph[pkg])) or '-'}")
    found = cycles(graph)
    for comp in found:
        print("CYCLE: " + " <-> ".join(comp))
    print(f"{len(graph)} packages, {sum(map(len, graph.values()))} edges, {len(found)} cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
