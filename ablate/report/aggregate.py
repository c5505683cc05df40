"""Per-combination aggregates over seeds (full-budget finished trials only; early-stopped ones carry
truncated values): the leaderboard, known-method labels, robust aggregates (mean with a t interval;
IQM and median with a BCa interval only from 20 runs) and pairwise comparisons of units (paired t
via ``ablate.stats.compare``, Holm over every pair of ranked units so that picking the top ones
afterwards does not bias the test; the probability of improvement is descriptive).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ablate.render import value_text, is_missing
from ablate.spec.groups import UPGE_SLOTS
from ablate.stats import (CellModel, Comparison, Interval, adjust_p, compare, location_ci, mean_ci, paired_t,
                          probability_of_improvement)
from ablate.tracking.sweep_reader import Sweep

TASK_KEYS = ("task", "task.name")
EXTRA_COLS = {
    "final entropy": "run.final_entropy",
    "mean grad var": "run.mean_grad_var",
    "final reward": "run.final_reward",
    "response len": "run.final_response_len",
    "wall time (s)": "wall_s",
}


@dataclass
class Combo:
    cid: str
    key: str
    slots: dict
    params: dict
    desc: str
    label: str
    trial_ids: list[str]
    seeds: list
    values: np.ndarray
    target: Interval
    pass_k: dict[int, Interval]
    extras: dict[str, float]
    n_stopped: int = 0
    n_failed: int = 0


@dataclass
class Unit:
    """What the robust aggregates compare: a combination, or a combination pooled over tasks."""

    uid: str
    desc: str
    strata: dict  # task -> per-seed target values
    iqm: Interval
    mean: Interval
    median: Interval
    combo_ids: list[str] = field(default_factory=list)
    seeds: dict = field(default_factory=dict)  # task -> seeds of the values in strata[task]


@dataclass
class UnitComparison:
    a: str
    b: str
    test: Comparison  # a − b (ablate.stats), p_adjusted: Holm over every pair of units
    poi: float  # P(a better than b), descriptive
    n_family: int = 1


def _n_distinct(col: pd.Series) -> int:
    return len({value_text(v) for v in col.tolist() if not is_missing(v)})


def varying(sweep: Sweep) -> tuple[list[str], list[str]]:
    """Slots and params that take more than one (non-missing) value across the sweep's trials."""
    t = sweep.trials
    return ([s for s in sweep.slot_names if _n_distinct(t["slot." + s]) > 1],
            [p for p in sweep.param_names if _n_distinct(t["param." + p]) > 1])


def factor_columns(slots: list[str], params: list[str]) -> list[tuple[str, str]]:
    """(name, trials column) of the given slots, then the given params."""
    return [(s, "slot." + s) for s in slots] + [(p, "param." + p) for p in params]


def fixed_settings(sweep: Sweep) -> dict[str, str]:
    """Slots and params constant over the sweep (shown once in the header); a conditional
    parameter that is set in only some trials is marked '(when set)'."""
    vs, vp = varying(sweep)
    t, out = sweep.trials, {}
    for n, col in factor_columns([s for s in sweep.slot_names if s not in vs],
                                 [p for p in sweep.param_names if p not in vp]):
        vals = [v for v in t[col].tolist() if not is_missing(v)]
        if vals:
            out[n] = value_text(vals[0]) + ("" if len(vals) == len(t) else " (when set)")
    return out


def trial_desc(row, cols: list[tuple[str, str]]) -> str:
    """A trial row's values of the varying factors ``cols`` (``factor_columns``): 'mask=none, ...'."""
    return ", ".join(f"{n}={value_text(row.get(c))}" for n, c in cols if not is_missing(row.get(c)))


def normalise_presets(presets) -> list[dict]:
    """The named presets (dicts, as ``ablate methods --json`` writes them), sorted by name."""
    return sorted((p for p in presets or [] if isinstance(p, dict) and p.get("name")), key=lambda d: str(d["name"]))


def load_default_presets() -> list[dict]:
    """The method catalog from ablate.methods.catalog.load_presets() (a broken catalog is an
    error, not an empty list)."""
    from ablate.methods.catalog import load_presets

    return normalise_presets(load_presets())


def _display_name(preset: dict) -> str:
    """The preset's short title ('GRPO', 'Dr. GRPO') when it has one, else its name upper-cased."""
    title = preset.get("title")
    if isinstance(title, str) and 0 < len(title) <= 24:
        return title
    name = str(preset["name"])
    return name.upper() if name == name.lower() else name


def method_label(slots: dict, presets: list[dict], method: str | None = None) -> str:
    """'= GRPO' for an exact slot match (four slots + aggregation), '≈ GRPO (aggregation differs)'
    when only the four UPGE slots match; falls back to the runner's method name when no catalog."""
    same = [p for p in presets if all(s in p and str(p[s]) == str(slots.get(s)) for s in UPGE_SLOTS)]
    exact = [p for p in same if p.get("aggregation") is None or "aggregation" not in slots
             or str(p["aggregation"]) == str(slots["aggregation"])]
    if exact:
        return "= " + ", ".join(map(_display_name, exact))
    if same:
        return "≈ " + ", ".join(map(_display_name, same)) + " (aggregation differs)"
    if not presets and method:
        return f"preset {method}"
    return ""


def better_sign(mode: str) -> float:
    return 1.0 if mode == "max" else -1.0


def build_combos(sweep: Sweep, presets: list[dict]) -> list[Combo]:
    """Leaderboard rows (combinations with ≥1 full-budget trial) sorted best first, ids C01…"""
    cols, target = factor_columns(*varying(sweep)), sweep.target_col
    t = sweep.trials.sort_values(["seed", "trial_id"], kind="mergesort")  # once: groups keep this order
    combos: list[Combo] = []
    for key, g in t.groupby("combo", sort=True):
        fb = g[g["full_budget"]]
        if fb.empty:
            continue
        first = g.iloc[0]
        slots = {s: first.get("slot." + s) for s in sweep.slot_names}
        params = {p: first.get("param." + p) for p in sweep.param_names}
        methods = sorted({str(m) for m in g["method"].dropna()}) if "method" in g else []
        label = method_label(slots, presets, methods[0] if len(methods) == 1 else None)
        vals = fb[target].to_numpy(dtype=float)
        pk = {k: mean_ci(fb[f"final.eval/pass@{k}"]) for k in sweep.pass_ks if f"final.eval/pass@{k}" in fb}
        extras = {name: float(np.nanmean(fb[col])) if fb[col].notna().any() else float("nan")
                  for name, col in EXTRA_COLS.items() if col in fb}
        combos.append(Combo(
            cid="", key=str(key), slots=slots, params=params,
            desc=trial_desc(first, cols) or "(single combination)", label=label,
            trial_ids=fb["trial_id"].tolist(), seeds=fb["seed"].tolist(), values=vals,
            target=mean_ci(vals), pass_k=pk, extras=extras,
            n_stopped=int((g["status"] == "early_stopped").sum()), n_failed=int((g["status"] == "failed").sum())))
    sign = better_sign(sweep.mode)
    combos.sort(key=lambda c: (-sign * c.target.point, c.key))
    width = max(2, len(str(len(combos))))
    for i, c in enumerate(combos, 1):
        c.cid = f"C{i:0{width}d}"
    return combos


def build_units(sweep: Sweep, combos: list[Combo]) -> tuple[list[Unit], str | None]:
    """Units for robust aggregates. Without a swept task parameter a unit is a combination and
    the single stratum is its seeds; with one, combinations are pooled over tasks (strata)."""
    tk = next((k for k in TASK_KEYS if k in varying(sweep)[1]), None)
    if tk is None:  # in the leaderboard's order
        return [_unit(c.cid, c.desc, {"": c.values}, {"": list(c.seeds)}, [c.cid]) for c in combos], None
    groups: dict[str, list[Combo]] = {}
    for c in combos:
        rest = {k: v for k, v in c.params.items() if k != tk}
        groups.setdefault(json.dumps({"s": c.slots, "p": rest}, sort_keys=True, default=str), []).append(c)
    tasks = sorted({str(c.params.get(tk)) for c in combos})
    units: list[Unit] = []
    for gkey in sorted(groups):
        cs = groups[gkey]
        by_task = {task: [c for c in cs if str(c.params.get(tk)) == task] for task in tasks}
        if not all(by_task.values()):
            continue  # not evaluated on every task: not comparable
        strata = {task: np.concatenate([c.values for c in g]) for task, g in by_task.items()}
        seeds = {task: [s for c in g for s in c.seeds] for task, g in by_task.items()}
        desc = ", ".join(x for x in cs[0].desc.split(", ") if not x.startswith(tk + "=")) or "(all)"
        units.append(_unit("", desc, strata, seeds, [c.cid for c in cs]))
    sign = better_sign(sweep.mode)
    units.sort(key=lambda u: (-sign * u.mean.point, u.desc))  # like the leaderboard: best mean first
    for i, u in enumerate(units, 1):
        u.uid = f"M{i:02d}"
    return units, tk


def _unit(uid: str, desc: str, strata: dict, seeds: dict, combo_ids: list[str]) -> Unit:
    """A unit's aggregates over all its runs: mean (t interval), IQM and median (BCa from 20 runs)."""
    flat = np.concatenate([np.asarray(v, float) for v in strata.values()])
    return Unit(uid=uid, desc=desc, strata=strata, iqm=location_ci(flat, "iqm"), mean=mean_ci(flat),
                median=location_ci(flat, "median"), combo_ids=combo_ids, seeds=seeds)


def _per_seed(u: Unit) -> dict:
    """Seed → the unit's mean over tasks at that seed (seeds present on every task only)."""
    by: dict = {}
    for task, vals in u.strata.items():
        for s, v in zip(u.seeds.get(task, []), np.asarray(vals, float)):
            by.setdefault(s, {}).setdefault(task, []).append(v)
    return {s: float(np.mean([np.mean(v) for v in d.values()])) for s, d in by.items()
            if len(d) == len(u.strata)}


def compare_units(a: Unit, b: Unit, pa: dict, pb: dict, detail: bool = True) -> Comparison:
    """a − b: paired t over the seeds both units ran (same seed = same warm start and sampling
    streams), Welch t over all runs when fewer than 2 seeds are shared. ``pa``, ``pb``: the two
    units' ``_per_seed``."""
    shared = sorted(set(pa) & set(pb), key=str)
    if len(shared) >= 2:
        return compare([pa[s] for s in shared], [pb[s] for s in shared], paired=True, detail=detail)
    fa, fb = (np.concatenate([np.asarray(v, float) for v in u.strata.values()]) for u in (a, b))
    return compare(fa, fb, detail=detail)


def poi(a: Unit, b: Unit, mode: str) -> float:
    """P(a better than b) over pairs of runs, averaged over tasks (descriptive)."""
    sign = better_sign(mode)
    vals = [probability_of_improvement(sign * np.asarray(a.strata[k], float), sign * np.asarray(b.strata[k], float))
            for k in sorted(set(a.strata) & set(b.strata))]
    return float(np.mean(vals)) if vals else float("nan")


def top_comparisons(units: list[Unit], mode: str, top: int = 5) -> list[UnitComparison]:
    """Pairs among the ``top`` units (best first), with p-values Holm-corrected over the family of
    every pair of ranked units: the family does not depend on the ranking, so choosing the top
    pairs afterwards does not inflate the error rate."""
    pairs = [(i, j) for i in range(len(units)) for j in range(i + 1, len(units))]
    per_seed = [_per_seed(u) for u in units]
    adj = adjust_p(_pair_p_values(units, per_seed, pairs), "holm")
    return [UnitComparison(units[i].uid, units[j].uid,
                           compare_units(units[i], units[j], per_seed[i], per_seed[j]).adjusted(q),
                           poi(units[i], units[j], mode), len(pairs))
            for (i, j), q in zip(pairs, adj) if i < top and j < top]


def _pair_p_values(units: list[Unit], per_seed: list[dict], pairs: list) -> np.ndarray:
    """``compare_units(...).p_value`` of every pair, the paired ones as one batched paired t per
    number of shared seeds (a report of 50 units has 1225 pairs: one scipy call each was ~1 s)."""
    p = np.full(len(pairs), np.nan)
    batches: dict[int, tuple[list, list]] = {}
    for k, (i, j) in enumerate(pairs):
        pa, pb = per_seed[i], per_seed[j]
        d = np.array([pa[s] - pb[s] for s in sorted(set(pa) & set(pb), key=str)], float)
        if d.size < 2:
            p[k] = compare_units(units[i], units[j], pa, pb, detail=False).p_value
            continue
        d = d[np.isfinite(d)]
        if d.size >= 2:
            rows, idx = batches.setdefault(d.size, ([], []))
            rows.append(d)
            idx.append(k)
    for rows, idx in batches.values():
        p[idx] = paired_t(np.stack(rows))["p"]
    return p


def poi_matrix(units: list[Unit], mode: str, top: int = 6) -> tuple[list[str], np.ndarray]:
    head = units[:top]
    m = [[poi(a, b, mode) if i != j else np.nan for j, b in enumerate(head)] for i, a in enumerate(head)]
    return [u.uid for u in head], np.array(m, float).reshape(len(head), len(head))


def seed_noise_sd(combos: list[Combo]) -> float:
    """Pooled within-combination standard deviation of the target over seeds: the residual SD of
    ablate.stats' cell-means model without seed blocks."""
    y = np.concatenate([c.values for c in combos]) if combos else np.array([])
    return CellModel(y, [c.key for c in combos for _ in c.values], blocked=False).sigma
