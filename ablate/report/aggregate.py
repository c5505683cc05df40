"""Per-combination aggregates over seeds: the leaderboard, known-method labels, robust aggregates
(IQM with stratified bootstrap) and pairwise comparisons (difference CI, probability of improvement).

Only full-budget finished trials enter these numbers; early-stopped trials carry truncated values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ablate.spec.groups import UPGE_SLOTS

from .load import Sweep
from .stats import (
    Interval,
    bootstrap_ci,
    bootstrap_diff_ci,
    probability_of_improvement,
    probability_of_improvement_ci,
    stable_seed,
    stratified_bootstrap_ci,
)

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


@dataclass
class Comparison:
    a: str
    b: str
    diff: Interval  # mean(a) - mean(b)
    poi: Interval  # P(a better than b)

    def significant(self) -> bool:
        return self.diff.excludes(0.0)

    def poi_significant(self) -> bool:
        return self.poi.excludes(0.5)


def is_missing(v) -> bool:
    """None or NaN: a conditional parameter that this trial did not sample."""
    return v is None or (isinstance(v, float) and v != v)


def _fmt_value(v) -> str:
    if is_missing(v):
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _n_distinct(col: pd.Series) -> int:
    return len({_fmt_value(v) for v in col.tolist() if not is_missing(v)})


def varying(sweep: Sweep) -> tuple[list[str], list[str]]:
    """Slots and params that take more than one (non-missing) value across the sweep's trials."""
    t = sweep.trials
    vs = [s for s in sweep.slot_names if _n_distinct(t["slot." + s]) > 1]
    vp = [p for p in sweep.param_names if _n_distinct(t["param." + p]) > 1]
    return vs, vp


def fixed_settings(sweep: Sweep) -> dict[str, str]:
    """Slots and params constant over the sweep (shown once in the header); a conditional
    parameter that is set in only some trials is marked '(when set)'."""
    vs, vp = varying(sweep)
    out = {}
    t = sweep.trials
    if t.empty:
        return out
    for kind, names, skip in (("slot.", sweep.slot_names, vs), ("param.", sweep.param_names, vp)):
        for n in names:
            if n in skip:
                continue
            vals = [v for v in t[kind + n].tolist() if not is_missing(v)]
            if not vals:
                continue
            out[n] = _fmt_value(vals[0]) + ("" if len(vals) == len(t) else " (when set)")
    return out


def trial_desc(sweep: Sweep, row) -> str:
    """The varying slots/params of one trial row, like a combination's description."""
    vs, vp = varying(sweep)
    parts = [f"{s}={_fmt_value(row.get('slot.' + s))}" for s in vs if not is_missing(row.get("slot." + s))]
    parts += [f"{p}={_fmt_value(row.get('param.' + p))}" for p in vp if not is_missing(row.get("param." + p))]
    return ", ".join(parts)


def normalise_presets(presets) -> list[dict]:
    out = []
    for p in presets or []:
        if isinstance(p, dict):
            d = p
        elif hasattr(p, "__dataclass_fields__"):
            import dataclasses

            d = dataclasses.asdict(p)
        elif hasattr(p, "__dict__"):
            d = dict(vars(p))
        else:
            continue
        if d.get("name"):
            out.append(d)
    return sorted(out, key=lambda d: str(d["name"]))


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
    exact, approx = [], []
    for p in presets:
        if not all(s in p for s in UPGE_SLOTS):
            continue
        if any(str(p[s]) != str(slots.get(s)) for s in UPGE_SLOTS):
            continue
        agg = p.get("aggregation")
        if agg is None or "aggregation" not in slots or str(agg) == str(slots.get("aggregation")):
            exact.append(_display_name(p))
        else:
            approx.append(_display_name(p))
    if exact:
        return "= " + ", ".join(exact)
    if approx:
        return "≈ " + ", ".join(approx) + " (aggregation differs)"
    if not presets and method:
        return f"preset {method}"
    return ""


def _better_sign(mode: str) -> float:
    return 1.0 if mode == "max" else -1.0


def build_combos(sweep: Sweep, presets: list[dict]) -> list[Combo]:
    """Leaderboard rows (combinations with ≥1 full-budget trial) sorted best first, ids C01…"""
    t = sweep.trials
    if t.empty:
        return []
    vs, vp = varying(sweep)
    target = sweep.target_col
    fb_mask = t["full_budget"] & np.isfinite(t[target].astype(float))
    combos: list[Combo] = []
    for key, g in t.groupby("combo", sort=True):
        fb = g[fb_mask.loc[g.index]].sort_values(["seed", "trial_id"], kind="mergesort")
        if fb.empty:
            continue
        first = g.iloc[0]
        slots = {s: first.get("slot." + s) for s in sweep.slot_names}
        params = {p: first.get("param." + p) for p in sweep.param_names}
        parts = [f"{s}={_fmt_value(slots[s])}" for s in vs if not is_missing(slots[s])] + [
            f"{p}={_fmt_value(params[p])}" for p in vp if not is_missing(params[p])
        ]
        methods = sorted({str(m) for m in g["method"].dropna()}) if "method" in g else []
        label = method_label(slots, presets, methods[0] if len(methods) == 1 else None)
        vals = fb[target].to_numpy(dtype=float)
        seed = stable_seed(key)
        pk = {
            k: bootstrap_ci(fb[f"final.eval/pass@{k}"], seed=seed + k)
            for k in sweep.pass_ks
            if f"final.eval/pass@{k}" in fb
        }
        extras = {name: float(np.nanmean(fb[col])) if fb[col].notna().any() else float("nan")
                  for name, col in EXTRA_COLS.items() if col in fb}
        combos.append(
            Combo(
                cid="",
                key=str(key),
                slots=slots,
                params=params,
                desc=", ".join(parts) if parts else "(single combination)",
                label=label,
                trial_ids=fb["trial_id"].tolist(),
                seeds=fb["seed"].tolist(),
                values=vals,
                target=bootstrap_ci(vals, seed=seed),
                pass_k=pk,
                extras=extras,
                n_stopped=int((g["status"] == "early_stopped").sum()),
                n_failed=int((g["status"] == "failed").sum()),
            )
        )
    sign = _better_sign(sweep.mode)
    combos.sort(key=lambda c: (-sign * c.target.point, c.key))
    width = max(2, len(str(len(combos))))
    for i, c in enumerate(combos, 1):
        c.cid = f"C{i:0{width}d}"
    return combos


def combos_without_full_budget(sweep: Sweep, combos: list[Combo]) -> list[str]:
    have = {c.key for c in combos}
    return sorted(set(sweep.trials["combo"]) - have) if not sweep.trials.empty else []


def task_key(sweep: Sweep) -> str | None:
    _, vp = varying(sweep)
    for k in TASK_KEYS:
        if k in vp:
            return k
    return None


def build_units(sweep: Sweep, combos: list[Combo]) -> tuple[list[Unit], str | None]:
    """Units for robust aggregates. Without a swept task parameter a unit is a combination and
    the single stratum is its seeds; with one, combinations are pooled over tasks (strata)."""
    tk = task_key(sweep)
    sign = _better_sign(sweep.mode)
    units: list[Unit] = []
    if tk is None:
        for c in combos:
            seed = stable_seed("unit", c.key)
            strata = {"": c.values}
            units.append(
                Unit(
                    uid=c.cid,
                    desc=c.desc,
                    strata=strata,
                    iqm=stratified_bootstrap_ci([c.values], "iqm", seed=seed),
                    mean=stratified_bootstrap_ci([c.values], "mean", seed=seed),
                    median=stratified_bootstrap_ci([c.values], "median", seed=seed),
                    combo_ids=[c.cid],
                )
            )
    else:
        groups: dict[str, list[Combo]] = {}
        for c in combos:
            rest = {k: v for k, v in c.params.items() if k != tk}
            groups.setdefault(json.dumps({"s": c.slots, "p": rest}, sort_keys=True, default=str), []).append(c)
        tasks = sorted({str(c.params.get(tk)) for c in combos})
        for gkey in sorted(groups):
            cs = groups[gkey]
            strata = {task: np.array([]) for task in tasks}
            for c in cs:
                strata[str(c.params.get(tk))] = np.concatenate([strata[str(c.params.get(tk))], c.values])
            if any(v.size == 0 for v in strata.values()):
                continue  # not evaluated on every task: not comparable
            seed = stable_seed("unit", gkey)
            arrs = [strata[k] for k in tasks]
            desc = cs[0].desc.replace(f"{tk}={_fmt_value(cs[0].params.get(tk))}", "").strip(", ")
            desc = ", ".join(x for x in (p.strip() for p in desc.split(",")) if x) or "(all)"
            units.append(
                Unit(
                    uid="",
                    desc=desc,
                    strata=strata,
                    iqm=stratified_bootstrap_ci(arrs, "iqm", seed=seed),
                    mean=stratified_bootstrap_ci(arrs, "mean", seed=seed),
                    median=stratified_bootstrap_ci(arrs, "median", seed=seed),
                    combo_ids=[c.cid for c in cs],
                )
            )
        units.sort(key=lambda u: (-sign * u.mean.point, u.desc))
        for i, u in enumerate(units, 1):
            u.uid = f"M{i:02d}"
    # same order as the leaderboard: by mean, best first
    return units, tk


def _oriented(values: np.ndarray, mode: str) -> np.ndarray:
    return values if mode == "max" else -values


def compare_units(a: Unit, b: Unit, mode: str) -> Comparison:
    tasks = sorted(set(a.strata) & set(b.strata))
    xa = [np.asarray(a.strata[k], dtype=float) for k in tasks]
    xb = [np.asarray(b.strata[k], dtype=float) for k in tasks]
    seed = stable_seed("cmp", a.uid, b.uid)
    flat_a = np.concatenate(xa) if xa else np.array([])
    flat_b = np.concatenate(xb) if xb else np.array([])
    diff = bootstrap_diff_ci(flat_a, flat_b, seed=seed)
    poi = probability_of_improvement_ci(
        [_oriented(x, mode) for x in xa], [_oriented(x, mode) for x in xb], seed=seed + 1
    )
    return Comparison(a=a.uid, b=b.uid, diff=diff, poi=poi)


def top_comparisons(units: list[Unit], mode: str, top: int = 5) -> list[Comparison]:
    """The best unit against each of the next ``top - 1`` units, then the remaining pairs among them."""
    head = units[:top]
    out = []
    for i in range(len(head)):
        for j in range(i + 1, len(head)):
            out.append(compare_units(head[i], head[j], mode))
    return out


def poi_matrix(units: list[Unit], mode: str, top: int = 6) -> tuple[list[str], np.ndarray]:
    head = units[:top]
    m = np.full((len(head), len(head)), np.nan)
    for i, a in enumerate(head):
        for j, b in enumerate(head):
            if i != j:
                tasks = sorted(set(a.strata) & set(b.strata))
                m[i, j] = probability_of_improvement(
                    [_oriented(np.asarray(a.strata[k], float), mode) for k in tasks],
                    [_oriented(np.asarray(b.strata[k], float), mode) for k in tasks],
                )
    return [u.uid for u in head], m


def seed_noise_sd(combos: list[Combo]) -> float:
    """Pooled within-combination standard deviation of the target over seeds."""
    num, den = 0.0, 0
    for c in combos:
        v = c.values[np.isfinite(c.values)]
        if v.size >= 2:
            num += float(((v - v.mean()) ** 2).sum())
            den += v.size - 1
    return float(np.sqrt(num / den)) if den else float("nan")


def seeds_per_combo(combos: list[Combo]) -> tuple[int, int]:
    if not combos:
        return 0, 0
    ns = [len(c.values) for c in combos]
    return min(ns), max(ns)


def trial_table(sweep: Sweep, combos: list[Combo]) -> pd.DataFrame:
    """One row per trial with its combination id (or '—' when the combination is not ranked)."""
    cid = {c.key: c.cid for c in combos}
    t = sweep.trials.copy()
    t["cid"] = t["combo"].map(cid).fillna("—")
    return t.sort_values(["trial_id"], kind="mergesort")


__all__ = [
    "Combo",
    "Comparison",
    "Unit",
    "build_combos",
    "build_units",
    "compare_units",
    "fixed_settings",
    "load_default_presets",
    "method_label",
    "normalise_presets",
    "poi_matrix",
    "seed_noise_sd",
    "seeds_per_combo",
    "top_comparisons",
    "trial_table",
    "varying",
]
