"""`ablate methods NAME`: a preset's full decomposition, read from the objects the trainer would build
(``compose_config`` + ``build_algorithm``), so what is printed is what runs; or, for a listed method
without a preset, its status and what is missing.
"""

from __future__ import annotations

from typing import Any

from ablate.errors import ConfigError
from ablate.spec.groups import SLOT_FAMILIES

_SCALARS = (str, int, float, bool, type(None))


def _is_part(v: Any) -> bool:
    """A structured ablate object (component, aggregation) rather than a parameter value."""
    from ablate.component import Component

    if isinstance(v, Component):
        return True
    return (not isinstance(v, type) and type(v).__module__.startswith("ablate.")
            and hasattr(v, "__dict__") and not isinstance(v, _SCALARS))


def _plain(v: Any) -> Any:
    if isinstance(v, _SCALARS):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (frozenset, set)):
        return sorted((_plain(x) for x in v), key=repr)
    r = repr(v)  # tensors, state buffers: a short repr, never the whole value
    return r if len(r) <= 80 else r[:79] + "…"


def node(obj: Any) -> dict[str, Any]:
    """{class, family, params, parts} of one built object, recursively (parts are sub-objects)."""
    cls = type(obj)
    params: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {}
    for k, v in vars(obj).items():
        if k.startswith("_"):
            continue
        if _is_part(v):
            parts[k] = node(v)
        elif isinstance(v, (list, tuple)) and v and all(_is_part(x) for x in v):
            for i, x in enumerate(v):
                parts[f"{k}.{i}"] = node(x)
        elif isinstance(v, dict) and v and all(_is_part(x) for x in v.values()):
            for name, x in v.items():
                parts[f"{k}.{name}"] = node(x)
        else:
            params[k] = _plain(v)
    family = getattr(cls, "family", "") or ("aggregation" if cls.__name__ == "Aggregation" else "")
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "family": family, "params": params,
            "parts": parts}


def render(n: dict[str, Any]) -> str:
    """One-line ``Class(param=value, part=Class(...))``."""
    items = [f"{k}={v!r}" for k, v in n["params"].items()]
    items += [f"{k}={render(v)}" for k, v in n["parts"].items()]
    return f"{n['class'].rsplit('.', 1)[-1]}({', '.join(items)})"


def term_slots(term: dict[str, Any]) -> tuple[dict[str, tuple[str, dict]], list[tuple[str, dict]]]:
    """A term's slot objects by family (first, shallowest occurrence, with its path) and any other
    parts that are not inside a slot (e.g. a regression term's own components)."""
    slots: dict[str, tuple[str, dict]] = {}
    other: list[tuple[str, dict]] = []

    def visit(n: dict[str, Any], path: str) -> None:
        for k, child in n["parts"].items():
            p = f"{path}.{k}" if path else k
            fam = child["family"]
            if fam in SLOT_FAMILIES or fam == "regularizer":
                if fam in SLOT_FAMILIES and fam not in slots:
                    slots[fam] = (p, child)
                elif fam in SLOT_FAMILIES and render(slots[fam][1]) != render(child):
                    other.append((p, child))
                continue
            if child["parts"]:
                if child["family"] not in ("estimator",):
                    other.append((p, {**child, "parts": {}}))
                visit(child, p)
            else:
                other.append((p, child))

    visit(term, "")
    return slots, other


def describe(name: str) -> dict[str, Any]:
    """Everything `ablate methods NAME` prints, as data (also `--json`)."""
    from ablate.methods.catalog import entries, load_presets
    from ablate.methods.listed import load_listed, resolve

    presets = {r["name"]: r for r in load_presets()}
    listed = load_listed()
    if name in presets:
        return _describe_preset(presets[name], listed)
    if name in listed.by_id:
        m = listed.by_id[name]
        res = resolve(m, presets)
        out = {"name": name, "kind": "listed", **{k: m.get(k) for k in
               ("title", "arxiv", "lists", "row", "scope", "evidence", "reason", "note")},
               "method": m.get("name"), "status": res["status"], "runs_with": res["presets"],
               "presets_planned": list(m.get("presets") or []), "related": list(m.get("related") or []),
               "needs": [listed.machinery_label(x) for x in m.get("needs") or []],
               "missing": res["missing"]}
        return out
    allowed = sorted({e["name"] for e in entries()} | set(listed.by_id))
    raise ConfigError(f"methods: unknown method {name!r}; allowed: {', '.join(allowed)}")


def _describe_preset(rec: dict[str, Any], listed) -> dict[str, Any]:
    from ablate.config import compose_config
    from ablate.train.components import build_algorithm

    cfg = compose_config([f"method={rec['name']}"])
    algo = build_algorithm(cfg)
    obj = algo.objective
    terms = []
    for tname, term in obj.terms.items():
        n = node(term)
        slots, other = term_slots(n)
        terms.append({"name": tname, "class": n["class"], "params": n["params"],
                      "slots": {f: {"path": p, **s} for f, (p, s) in slots.items()},
                      "other_parts": [{"path": p, **s} for p, s in other]})
    listed_as = [m["id"] for m in listed.methods if rec["name"] in (m.get("presets") or [])]
    needs = algo.needs()
    return {
        "name": rec["name"], "kind": "preset", "status": "runs",
        **{k: rec.get(k) for k in ("title", "paper", "arxiv", "fidelity", "evidence", "notes", "formula",
                                    "hyperparameters", "peer_differences", "file", "reference",
                                    "schedule")},
        "train_schedule": {"epochs": int(cfg.train.epochs), "minibatches": int(cfg.train.minibatches),
                           "group_size": int(cfg.train.group_size),
                           "prompts_per_step": int(cfg.train.prompts_per_step)},
        "listed_as": listed_as,
        "choices": {k: v for k, v in dict(getattr(cfg, "choices", {}) or {}).items()},
        "objective": {"class": node(obj)["class"], "terms": terms,
                      "regularizers": [{"name": k, **node(r)} for k, r in obj.regularizers.items()]},
        "stages": [node(s) for s in algo.stages],
        "needs": {k: _plain(v) for k, v in vars(needs).items()},
        "settings": rec.get("settings"),
    }


def format_description(d: dict[str, Any]) -> str:
    if d["kind"] == "listed":
        return _format_listed(d)
    lines = [f"{d['name']}: {d.get('title') or ''} — status runs, fidelity {d.get('fidelity')}, "
             f"evidence {d.get('evidence')}"]
    arx = d.get("arxiv")
    lines.append(f"  paper:    {d.get('paper')}" + (f" (arXiv {arx}, https://arxiv.org/abs/{arx})" if arx else ""))
    if d["listed_as"]:
        lines.append(f"  listed:   {', '.join(d['listed_as'])} (reference paper lists)")
    lines.append(f"  formula:  {d.get('formula') or '(no formula: field missing in the preset)'}")
    if d.get("hyperparameters"):
        lines.append(f"  defaults: {d['hyperparameters']}")
    ts = d["train_schedule"]
    lines.append(f"  schedule: {ts['epochs']} epoch(s) × {ts['minibatches']} minibatch(es) = "
                 f"{ts['epochs'] * ts['minibatches']} optimizer step(s) per rollout batch, "
                 f"G = {ts['group_size']}, {ts['prompts_per_step']} prompts per step")
    if d.get("schedule"):
        lines.append(f"            paper: {d['schedule']}")
    lines.append(f"  authors:  {d.get('reference') or '-'}")
    lines.append("objective: " + d["objective"]["class"].rsplit(".", 1)[-1])
    for t in d["objective"]["terms"]:
        params = ", ".join(f"{k}={v!r}" for k, v in t["params"].items())
        lines.append(f"  term {t['name']}: {t['class'].rsplit('.', 1)[-1]}({params})")
        for fam in SLOT_FAMILIES:
            s = t["slots"].get(fam)
            if s is not None:
                lines.append(f"    {fam:<12} {render(s)}")
        for s in t["other_parts"]:
            lines.append(f"    {s['path']:<12} {render(s)}")
    regs = d["objective"]["regularizers"]
    lines.append("regularizers:" + (" none" if not regs else ""))
    for r in regs:
        lines.append(f"  {r['name']:<14} {render(r)}")
    lines.append("pipeline stages:" + (" none" if not d["stages"] else ""))
    for i, s in enumerate(d["stages"]):
        lines.append(f"  {i}. {render(s)}")
    on = [k for k, v in d["needs"].items() if v and k not in ("refill_rounds", "rollouts")]
    lines.append("needs: " + (", ".join(on) if on else "nothing beyond rollouts")
                 + f"; refill_rounds={d['needs'].get('refill_rounds')}, rollouts={d['needs'].get('rollouts')}")
    if d.get("settings"):
        lines.append(f"settings: {d['settings']}")
    lines.append(f"notes: {d.get('notes') or '-'}")
    lines.append(f"differences from verl/TRL: {d.get('peer_differences') or '-'}")
    lines.append(f"file: {d.get('file')}")
    return "\n".join(lines)


def _format_listed(d: dict[str, Any]) -> str:
    arx = d.get("arxiv")
    lines = [f"{d['name']}: {d.get('method')} — status {d['status']}",
             f"  paper:    {d.get('title')}" + (f" (arXiv {arx}, https://arxiv.org/abs/{arx})" if arx else " (no arXiv id)"),
             f"  lists:    {', '.join(d.get('lists') or [])} (catalog_gap.md row {d.get('row')})"]
    if d["status"] == "out of scope":
        lines.append(f"  reason:   {d.get('reason')}")
        return "\n".join(lines)
    lines.append(f"  evidence: {d.get('evidence')}")
    if d["runs_with"]:
        lines.append(f"  runs with preset(s): {', '.join(d['runs_with'])} (`ablate methods NAME` for each)")
    else:
        lines.append(f"  missing:  {d.get('missing')}")
        for n in d["needs"]:
            lines.append(f"  needs:    {n}")
    if d.get("related"):
        lines.append(f"  related presets (do not run this method): {', '.join(d['related'])}")
    if d.get("note"):
        lines.append(f"  note:     {d['note']}")
    return "\n".join(lines)


def describe_text(name: str) -> str:
    return format_description(describe(name))
