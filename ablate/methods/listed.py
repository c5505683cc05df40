"""Every method of the three reference paper lists (``listed.yaml``) and whether a preset runs it.

The data file names the preset(s) meant to run each method; whether such a preset exists is read
from conf/method/ at call time, so the count of listed methods that run is never stored anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

LISTED_FILE = Path(__file__).with_name("listed.yaml")
STATUSES = ("needs machinery", "not expressible", "out of scope")  # for methods with no preset
EVIDENCE = ("code", "digest", "abstract", "standard")  # what the audit's reading rests on
LISTS = ("A", "B", "C")
SCOPES = ("in", "out")


@dataclass
class Listed:
    methods: list[dict[str, Any]]
    machinery: dict[str, dict[str, Any]]
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)

    def machinery_label(self, mid: str) -> str:
        m = self.machinery.get(mid)
        if m is None:
            return str(mid)
        return f"{mid} {m['name']} ({'in the contract' if m.get('landed') else 'not built'})"


@lru_cache(maxsize=4)
def _load(path: str) -> Listed:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    methods = list(data.get("methods") or [])
    lst = Listed(methods=methods, machinery=dict(data.get("machinery") or {}))
    lst.by_id = {m["id"]: m for m in methods}
    return lst


def load_listed(path: Optional[Path] = None) -> Listed:
    return _load(str(path or LISTED_FILE))


def check_listed(lst: Optional[Listed] = None) -> list[str]:
    """Problems in listed.yaml: duplicate ids, bad scope/status/evidence/lists, unknown machinery ids."""
    lst = lst or load_listed()
    problems, seen = [], set()
    for m in lst.methods:
        mid = m.get("id")
        if not mid or mid in seen:
            problems.append(f"listed: id {mid!r} missing or duplicated")
        seen.add(mid)
        for k in ("name", "title", "lists", "scope", "row"):
            if not m.get(k):
                problems.append(f"listed {mid}: missing {k}")
        if "arxiv" not in m:
            problems.append(f"listed {mid}: missing arxiv (null when unknown)")
        if m.get("scope") not in SCOPES:
            problems.append(f"listed {mid}: scope {m.get('scope')!r} not in {SCOPES}")
        if any(x not in LISTS for x in m.get("lists") or []):
            problems.append(f"listed {mid}: lists {m.get('lists')!r} not within {LISTS}")
        if m.get("scope") == "out":
            if not m.get("reason"):
                problems.append(f"listed {mid}: out of scope without a reason")
            continue
        if m.get("status") not in STATUSES[:2]:
            problems.append(f"listed {mid}: status {m.get('status')!r} not in {STATUSES[:2]}")
        if m.get("evidence") not in EVIDENCE:
            problems.append(f"listed {mid}: evidence {m.get('evidence')!r} not in {EVIDENCE}")
        if not m.get("missing"):
            problems.append(f"listed {mid}: missing `missing` (what a preset would need)")
        for x in m.get("needs") or []:
            if x not in lst.machinery:
                problems.append(f"listed {mid}: unknown machinery id {x!r}")
    return problems


def resolve(m: dict[str, Any], present: Iterable[str]) -> dict[str, Any]:
    """This listed method's status now: ``runs`` when one of its presets exists, else the stored
    status with what is missing (and which planned presets are absent)."""
    present = set(present)
    if m.get("scope") == "out":
        return {"status": "out of scope", "presets": [], "missing": m.get("reason")}
    have = [p for p in m.get("presets") or [] if p in present]
    if have:
        return {"status": "runs", "presets": have, "missing": None}
    planned = [p for p in m.get("presets") or []]
    missing = str(m.get("missing") or "")
    if planned:
        missing += f" (planned preset {', '.join(planned)} not in conf/method/)"
    return {"status": m["status"], "presets": [], "missing": missing}


def _present() -> set[str]:
    from ablate.methods.catalog import preset_names

    return preset_names()


def statuses(present: Optional[Iterable[str]] = None) -> dict[str, dict[str, Any]]:
    """{listed id: resolve(...)} for every listed method."""
    present = _present() if present is None else set(present)
    return {m["id"]: resolve(m, present) for m in load_listed().methods}


def named_presets() -> list[str]:
    """Every preset name listed.yaml maps a method to (planned or present)."""
    return sorted({p for m in load_listed().methods for p in m.get("presets") or []})


def missing_presets(present: Optional[Iterable[str]] = None) -> list[str]:
    """Preset names listed.yaml maps a method to that conf/method/ does not have (yet)."""
    present = _present() if present is None else set(present)
    return [p for p in named_presets() if p not in present]


def coverage(present: Optional[Iterable[str]] = None) -> dict[str, int]:
    """Counts of listed methods by scope and current status (computed, never stored)."""
    st = statuses(present)
    ms = load_listed().methods
    inscope = [m for m in ms if m["scope"] == "in"]
    out = {"entries": sum(len(m["lists"]) for m in ms), "unique": len(ms), "in_scope": len(inscope),
           "out_of_scope": len(ms) - len(inscope)}
    for s in ("runs",) + STATUSES[:2]:
        out[s] = sum(1 for m in inscope if st[m["id"]]["status"] == s)
    return out
