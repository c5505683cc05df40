"""The method catalog: presets in conf/method/*.yaml, read as data (slots + paper metadata).

Which slots a preset changes relative to GRPO is computed from the files, so it cannot drift.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ablate.registry import conf_dir

SLOTS = ("mask", "denominator", "advantage", "likelihood")
OPTIONS = ("aggregation", "regularizers", "pipeline")
FIDELITY = ("exact", "approximation", "needs machinery")
REQUIRED = ("name", "title", "paper", "arxiv", "fidelity")
BASELINE = "grpo"


def _read(path: Path) -> dict[str, Any]:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    groups: dict[str, str] = {}
    for item in data.get("defaults", []) or []:
        if isinstance(item, dict):
            for k, v in item.items():
                key = k.replace("override", "").strip().lstrip("/")
                groups[key] = v
    meta = dict(data.get("method") or {})
    rec: dict[str, Any] = {"name": meta.get("name", path.stem), "file": str(path.relative_to(conf_dir().parent))}
    for g in SLOTS + OPTIONS:
        rec[g] = groups.get(g)
    rec.update({k: v for k, v in meta.items() if k != "name"})
    extra = {k: v for k, v in data.items() if k not in ("defaults", "method")}
    if extra:
        rec["settings"] = extra
    return rec


def load_presets() -> list[dict[str, Any]]:
    """Every preset with its slots, options, paper, arXiv id, fidelity and computed ``changes``."""
    recs = [_read(p) for p in sorted((conf_dir() / "method").glob("*.yaml"))]
    base = next((r for r in recs if r["name"] == BASELINE), None)
    for r in recs:
        r["changes"] = [] if base is None else \
            [g for g in SLOTS + OPTIONS if r.get(g) != base.get(g) or
             (g == "aggregation" and (r.get("settings") or {}).get("aggregation")
              != (base.get("settings") or {}).get("aggregation"))]
    return recs


def check_presets(recs: list[dict[str, Any]] | None = None) -> list[str]:
    """Problems with the catalog: missing fields, unknown fidelity, variants with no YAML file."""
    from ablate.registry import variant_names

    problems = []
    for r in recs or load_presets():
        for k in REQUIRED + SLOTS + ("aggregation",):
            if not r.get(k):
                problems.append(f"method {r['name']}: missing {k}")
        if r.get("fidelity") not in FIDELITY:
            problems.append(f"method {r['name']}: fidelity {r.get('fidelity')!r} not in {FIDELITY}")
        for g in SLOTS + OPTIONS:
            v = r.get(g)
            if v and v not in variant_names(g):
                problems.append(f"method {r['name']}: {g} variant {v!r} has no conf/{g}/{v}.yaml")
    return problems


def format_table(recs: list[dict[str, Any]]) -> str:
    cols = ("name", "mask", "denominator", "advantage", "likelihood", "aggregation", "pipeline",
            "fidelity", "arxiv")
    rows = [[str(r.get(c) or "-") for c in cols] for r in recs]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    line = lambda xs: "  ".join(x.ljust(w) for x, w in zip(xs, widths)).rstrip()  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows])
