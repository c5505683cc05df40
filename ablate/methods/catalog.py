"""The method catalog: presets in conf/method/*.yaml, read as data (slots + paper metadata), joined
with every method of the reference paper lists (``listed.yaml``, see ``ablate.methods.listed``).

Which slots a preset changes relative to GRPO, and which listed methods run, are computed from the
files, so neither can drift.

Keys of a preset's ``method:`` block (all strings): required ``name``, ``title``, ``paper`` (paper
title), ``arxiv`` (id), ``fidelity`` (exact | approximation), ``evidence`` (code | paper | abstract:
what the preset was read from); recommended ``notes`` (sources, and what differs from the paper when
``fidelity: approximation``) and ``formula`` (one line, ``L = ...`` with the defaults, describing
what the preset computes); optional ``hyperparameters`` (the paper's / released script's defaults,
including those this preset does not set, e.g. lr or group size) and ``peer_differences`` (where the
verl/TRL implementations differ). ``ablate methods NAME``, ``--json`` and docs/methods.md show all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

from ablate.registry import conf_dir
from ablate.spec.groups import PRESET_OPTIONS, SLOT_FAMILIES, UPGE_SLOTS
from ablate.spec.yaml import TRUSTED_LOADER  # the report reads every preset

SLOTS = UPGE_SLOTS  # names kept for callers: the four slots and the options a preset may set
OPTIONS = PRESET_OPTIONS
FIDELITY = ("exact", "approximation")
EVIDENCE = ("code", "paper", "abstract")
REQUIRED = ("name", "title", "paper", "arxiv", "fidelity", "evidence")
RECOMMENDED = ("notes", "formula")  # reported by missing_recommended(), not a failure
METHOD_FIELDS = REQUIRED + ("notes", "formula", "hyperparameters", "peer_differences", "reference", "schedule")
# reference: the authors' code or text the preset was checked against ("owner/repo@commit path");
# schedule: the paper's update schedule and loop defaults, which the preset's train.* values set
BASELINE = "grpo"
UPGE_OBJECTIVES = (None, "upge")  # objectives built from the top-level slots


def _read(path: Path) -> dict[str, Any]:
    with open(path) as f:
        data = yaml.load(f, Loader=TRUSTED_LOADER) or {}
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
    rec["method_keys"] = sorted(meta)
    extra = {k: v for k, v in data.items() if k not in ("defaults", "method")}
    if extra:
        rec["settings"] = extra
    return rec


def preset_names() -> set[str]:
    """Names of the presets present in conf/method/ now (file stems, as `method=NAME` takes them)."""
    return {p.stem for p in (conf_dir() / "method").glob("*.yaml")}


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


def _uses_slots(rec: dict[str, Any]) -> bool:
    return rec.get("objective") in UPGE_OBJECTIVES


def check_presets(recs: list[dict[str, Any]] | None = None) -> list[str]:
    """Problems with the catalog: missing fields, unknown method-block keys (e.g. a second spelling of
    ``hyperparameters``), unknown fidelity/evidence, variants with no YAML file.

    A preset that selects its own objective (``override /objective``) need not name the four slots."""
    from ablate.registry import variant_names

    problems = []
    for r in recs or load_presets():
        need = REQUIRED + (SLOT_FAMILIES if _uses_slots(r) else ())
        for k in need:
            if not r.get(k):
                problems.append(f"method {r['name']}: missing {k}")
        if r.get("fidelity") not in FIDELITY:
            problems.append(f"method {r['name']}: fidelity {r.get('fidelity')!r} not in {FIDELITY}")
        if r.get("evidence") and r.get("evidence") not in EVIDENCE:
            problems.append(f"method {r['name']}: evidence {r.get('evidence')!r} not in {EVIDENCE}")
        unknown = [k for k in r.get("method_keys", ()) if k not in METHOD_FIELDS]
        if unknown:
            problems.append(f"method {r['name']}: unknown key(s) {', '.join(map(repr, unknown))} in the method "
                            f"block; allowed: {', '.join(METHOD_FIELDS)}")
        for g in SLOTS + OPTIONS:
            v = r.get(g)
            if v and v not in variant_names(g):
                problems.append(f"method {r['name']}: {g} variant {v!r} has no conf/{g}/{v}.yaml")
    return problems


def missing_recommended(recs: list[dict[str, Any]] | None = None) -> dict[str, list[str]]:
    """{preset: recommended fields it lacks (formula, notes)} — shown by `ablate methods`, not fatal."""
    out = {}
    for r in recs or load_presets():
        lack = [k for k in RECOMMENDED if not r.get(k)]
        if lack:
            out[r["name"]] = lack
    return out


# ---------------------------------------------------------------------------------------------- entries

def slot_summary(rec: dict[str, Any]) -> dict[str, Optional[str]]:
    """The preset's choices per group (None where it keeps the root default)."""
    return {g: rec.get(g) for g in SLOTS + OPTIONS}


def entries() -> list[dict[str, Any]]:
    """Every catalog entry: each preset (``kind: preset``, ``status: runs``) with the listed methods
    it runs, then each listed method no present preset runs (``kind: listed``) with its status and
    what is missing. Computed from conf/method/ and listed.yaml at call time."""
    from ablate.methods.listed import load_listed, resolve

    listed = load_listed()
    presets = load_presets()
    names = {r["name"] for r in presets} | preset_names()
    runs_by: dict[str, list[str]] = {}
    for m in listed.methods:
        for p in m.get("presets") or []:
            runs_by.setdefault(p, []).append(m["id"])
    out: list[dict[str, Any]] = []
    for r in presets:
        listed_as = runs_by.get(r["name"], [])
        e = {"name": r["name"], "kind": "preset", "status": "runs", "title": r.get("title"),
             "paper": r.get("paper"), "arxiv": r.get("arxiv"), "evidence": r.get("evidence"),
             "fidelity": r.get("fidelity"), "slots": slot_summary(r), "changes": r.get("changes"),
             "listed_as": listed_as,
             "lists": sorted({x for i in listed_as for x in listed.by_id[i]["lists"]}),
             "file": r.get("file")}
        for k in ("notes", "formula", "hyperparameters", "peer_differences"):
            e[k] = r.get(k)
        # flat slot keys too (older consumers read r["mask"], ...)
        e.update(slot_summary(r))
        out.append(e)
    for m in listed.methods:
        res = resolve(m, names)
        if res["status"] == "runs":
            continue
        out.append({"name": m["id"], "kind": "listed", "status": res["status"], "title": m.get("name"),
                    "paper": m.get("title"), "arxiv": m.get("arxiv"), "evidence": m.get("evidence"),
                    "fidelity": None, "slots": None, "lists": list(m["lists"]), "row": m.get("row"),
                    "scope": m["scope"], "presets_planned": list(m.get("presets") or []),
                    "related": list(m.get("related") or []),
                    "needs": [listed.machinery_label(x) for x in m.get("needs") or []],
                    "missing": res["missing"], "note": m.get("note")})
    return out


# ---------------------------------------------------------------------------------------------- text

def _table(cols: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda xs: "  ".join(x.ljust(w) for x, w in zip(xs, widths)).rstrip()  # noqa: E731
    return [line(list(cols)), line(["-" * w for w in widths])] + [line(r) for r in rows]


def format_table(recs: list[dict[str, Any]]) -> str:
    """The presets as one aligned table (slots, fidelity, evidence, arXiv)."""
    cols = ("name", *SLOT_FAMILIES, "pipeline", "fidelity", "evidence", "arxiv")
    rows = [[str(r.get(c) or "-") for c in cols] for r in recs]
    return "\n".join(_table(cols, rows))


def format_catalog(ents: list[dict[str, Any]] | None = None) -> str:
    """`ablate methods`: presets (status runs + fidelity + evidence + which listed method), then the
    listed methods without a running preset (status + what is missing), then the counts."""
    from ablate.methods.listed import coverage

    ents = entries() if ents is None else ents
    pre = [e for e in ents if e["kind"] == "preset"]
    order = {"needs machinery": 0, "not expressible": 1, "out of scope": 2}
    lis = sorted((e for e in ents if e["kind"] == "listed"),
                 key=lambda e: (order.get(e["status"], 3), e.get("row") or 0))
    cols = ("name", "status", "fidelity", "evidence", "objective/slots", "listed as", "arxiv")
    rows = []
    for e in pre:
        s = e["slots"]
        shape = f"objective={s['objective']}" if s.get("objective") not in UPGE_OBJECTIVES else \
            "/".join(str(s.get(g) or "-") for g in SLOT_FAMILIES)
        rows.append([e["name"], e["status"], str(e.get("fidelity") or "-"), str(e.get("evidence") or "-"),
                     shape, ",".join(e["listed_as"]) or "-", str(e.get("arxiv") or "-")])
    out = [f"Presets ({len(pre)}; `ablate methods NAME` for the decomposition; objective/slots = "
           "mask/denominator/advantage/likelihood/aggregation)", *_table(cols, rows)]
    cols2 = ("name", "status", "evidence", "lists", "arxiv", "missing")
    rows2 = [[e["name"], e["status"], str(e.get("evidence") or "-"), ",".join(e["lists"]),
              str(e.get("arxiv") or "-"), _short(e["missing"])] for e in lis]
    out += ["", f"Listed methods with no preset ({len(lis)})", *_table(cols2, rows2)]
    c = coverage()
    out += ["", f"Listed methods: {c['unique']} unique ({c['in_scope']} in scope, {c['out_of_scope']} out of "
            f"scope); in scope: {c['runs']} run by a preset, {c['needs machinery']} need machinery, "
            f"{c['not expressible']} not expressible."]
    lack = missing_recommended()
    if lack:
        out.append("Presets without " + "/".join(RECOMMENDED) + ": "
                   + ", ".join(f"{k} ({'+'.join(v)})" for k, v in sorted(lack.items())))
    return "\n".join(out)


def _short(text: Optional[str], n: int = 90) -> str:
    t = " ".join(str(text or "-").split())
    return t if len(t) <= n else t[: n - 1] + "…"
