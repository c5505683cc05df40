"""Read a sweep directory (sweep.json, search_space.yaml, trials.jsonl, trials/<id>/...) into pandas.

One row per trial in ``Sweep.trials`` (slots as ``slot.<name>``, hyperparameters as
``param.<name>``, final metrics as ``final.<metric>``, per-run summaries derived from
metrics.jsonl); one row per logged step in ``Sweep.metrics``. Bad lines and missing files become
notes in ``Sweep.warnings``, never exceptions: a report of a half-broken sweep is still a report.
A trial whose trials.jsonl line is unreadable (torn by a killed driver) but whose run directory is
complete is recovered from its own files; ``Sweep.skipped`` names every trial left out of the
statistics or read only in part, and why.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablate.errors import ConfigError
from ablate.spec.groups import SLOT_FAMILIES
from ablate.tracking.run_store import read_jsonl

STATUSES = ("finished", "failed", "early_stopped", "running", "pending")
PASS_AT_RE = re.compile(r"^eval/pass@(\d+)$")

# per-run summaries derived from metrics.jsonl: column -> (metric, how)
DERIVED = {
    "run.final_entropy": ("train/entropy", "last"),
    "run.mean_grad_var": ("train/grad_var", "mean"),
    "run.final_reward": ("train/reward_mean", "last"),
    "run.final_response_len": ("train/response_len", "last"),
}


class SweepFormatError(ConfigError):  # one-line user error: `ablate report` prints it cleanly
    """The sweep directory lacks a file the report cannot do without."""


@dataclass
class Sweep:
    path: Path
    meta: dict
    search_space_text: str
    trials: pd.DataFrame
    metrics: pd.DataFrame
    slot_names: list[str]
    param_names: list[str]
    pass_ks: list[int]
    budget: float | None
    journal_path: Path | None
    warnings: list[str] = field(default_factory=list)
    # {"trial_id", "combo", "excluded" (left out of the statistics), "reason"}
    skipped: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name)

    @property
    def metric(self) -> str:
        return str(self.meta.get("metric") or "eval/pass@1")

    @property
    def mode(self) -> str:
        mode = str(self.meta.get("mode") or "max").lower()
        return mode if mode in ("max", "min") else "max"

    @property
    def target_col(self) -> str:
        return "final." + self.metric

    def full_budget(self) -> pd.DataFrame:
        """Finished trials that ran the whole budget and have a finite target value."""
        t = self.trials
        ok = t["full_budget"] & np.isfinite(t[self.target_col].astype(float))
        return t[ok]

    def samples(self, trial_id: str) -> list[dict]:
        """The trial's samples.jsonl records (read on demand), with unreadable lines dropped."""
        row = self.trials.loc[self.trials["trial_id"] == trial_id]
        if row.empty:
            return []
        run_dir = self._run_dir(row.iloc[0])
        return read_jsonl(run_dir / "samples.jsonl")[0]

    def _run_dir(self, row) -> Path:
        rd = row.get("run_dir")
        if isinstance(rd, str) and rd:
            p = Path(rd)
            return p if p.is_absolute() else self.path / p
        return self.path / "trials" / str(row["trial_id"])


def _read_json(path: Path, warnings: list[str], required: bool = False) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise SweepFormatError(f"{path} is missing: not a sweep directory?") from None
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if required:
            raise SweepFormatError(f"{path} is not valid JSON: {e}") from None
        warnings.append(f"{path.name}: unreadable JSON ({e.__class__.__name__}); ignored")
        return None


def _read_jsonl(path: Path, warnings: list[str]) -> list[dict]:
    return _read_jsonl_counted(path, warnings)[0]


def _read_jsonl_counted(path: Path, warnings: list[str]) -> tuple[list[dict], int]:
    """The run store's reader (ablate.tracking.run_store.read_jsonl), its skipped lines noted:
    the records and the number of unreadable lines from one parse."""
    recs, bad = read_jsonl(path)
    if bad:
        warnings.append(f"{path}: {bad} unreadable line(s) skipped")
    return recs, bad


def _num(x) -> float:
    """A float, NaN for None/non-numeric."""
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float)):
        return float(x)
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _scalar(v):
    """Params are shown and grouped as scalars; lists/dicts become their JSON text."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return json.dumps(v, sort_keys=True)


def _combo_key(slots: dict, params: dict) -> str:
    return json.dumps({"slots": slots, "params": params}, sort_keys=True, default=str)


def load_sweep(sweep_dir) -> Sweep:
    """Read ``sweep_dir``; raises SweepFormatError only when sweep.json or trials.jsonl is absent."""
    path = Path(sweep_dir)
    warnings: list[str] = []
    meta = _read_json(path / "sweep.json", warnings, required=True)
    if not isinstance(meta, dict):
        raise SweepFormatError(f"{path / 'sweep.json'} must hold a JSON object")
    try:
        space_text = (path / "search_space.yaml").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        space_text = ""
        warnings.append("search_space.yaml is missing")
    if not (path / "trials.jsonl").exists():
        raise SweepFormatError(f"{path / 'trials.jsonl'} is missing: not a sweep directory?")
    records, torn = _read_jsonl_counted(path / "trials.jsonl", warnings)
    skipped: list[dict] = []
    recovered = _recover_rows(path, meta, records)
    if recovered:
        warnings.append(f"{len(recovered)} trial(s) missing from trials.jsonl recovered from their "
                        f"run directories: {', '.join(str(r['trial_id']) for r in recovered)}")
        records += recovered
    if torn > len(recovered):
        skipped.append({"trial_id": "(unknown)", "combo": "", "excluded": True,
                        "reason": f"{torn - len(recovered)} unreadable line(s) in trials.jsonl "
                                  f"that no complete run directory accounts for"})

    # the last record of a trial id wins (a runner may append status updates)
    by_id: dict[str, dict] = {}
    for i, r in enumerate(records):
        tid = str(r.get("trial_id", f"trial_{i:05d}"))
        by_id[tid] = r

    metric = str(meta.get("metric") or "eval/pass@1")
    rows: list[dict] = []
    metric_records: list[dict] = []
    slot_names: set[str] = set()
    param_names: set[str] = set()
    final_keys: set[str] = {metric}
    for tid in sorted(by_id):
        r = by_id[tid]
        slots = {str(k): _scalar(v) for k, v in (r.get("slots") or {}).items()}
        params = {str(k): _scalar(v) for k, v in (r.get("params") or {}).items() if k != "seed"}
        # other config-group choices (task, model, regularizers, ...) and the method preset are
        # factors too: constant ones show in the header, swept ones get effects
        choices = r.get("choices") if isinstance(r.get("choices"), dict) else {}
        for g, v in choices.items():
            g = str(g)
            if v is None:
                continue
            if g not in slots and g not in SLOT_FAMILIES and g != "method" and g not in params:
                params[g] = _scalar(v)
        if r.get("method") is not None and "method" not in params:
            params["method"] = _scalar(r.get("method"))
        slot_names.update(slots)
        param_names.update(params)
        status = str(r.get("status") or "pending")
        run_dir = r.get("run_dir") or f"trials/{tid}"
        rd = Path(run_dir) if Path(run_dir).is_absolute() else path / run_dir
        summary = _read_json(rd / "summary.json", warnings)
        summary = summary if isinstance(summary, dict) else {}
        combo_text = str(r["combo"]) if r.get("combo") else ""
        logged, bad = _read_jsonl_counted(rd / "metrics.jsonl", warnings)
        if status != "finished":
            err = r.get("error") or summary.get("error")
            skipped.append({"trial_id": tid, "combo": combo_text, "excluded": True,
                            "reason": f"status {status}" + (f": {_one_line(err)}" if err else "")})
        if status in ("finished", "early_stopped"):
            if not (rd / "metrics.jsonl").is_file():
                skipped.append({"trial_id": tid, "combo": combo_text, "excluded": False,
                                "reason": f"metrics.jsonl missing in {run_dir} (no curves; final "
                                          f"values from trials.jsonl/summary.json)"})
            elif bad:
                skipped.append({"trial_id": tid, "combo": combo_text, "excluded": False,
                                "reason": f"{bad} unreadable line(s) in {run_dir}/metrics.jsonl "
                                          f"(those steps are missing from the curves)"})
        wandb = summary.get("wandb") if isinstance(summary.get("wandb"), dict) else {}
        final = r.get("final") if isinstance(r.get("final"), dict) else None
        if not final and isinstance(summary.get("final"), dict):
            final = summary["final"]
        final = final or {}
        final_keys.update(str(k) for k in final)
        row = {
            "trial_id": tid,
            "status": status if status in STATUSES else "other:" + status,
            "method": r.get("method"),
            "tune_trial_id": r.get("tune_trial_id"),
            "seed": r.get("seed"),
            "combo": str(r["combo"]) if r.get("combo") else _combo_key(slots, params),
            "run_dir": str(run_dir),
            "wandb_run_id": r.get("wandb_run_id") or wandb.get("run_id"),
            "wandb_dir": r.get("wandb_dir") or wandb.get("dir"),
            "wandb_mode": wandb.get("mode"),
            "error": r.get("error") or summary.get("error"),
            "wall_s": _num(r.get("wall_s") if r.get("wall_s") is not None else summary.get("wall_s")),
            "steps_done": _num(r.get("steps_done")),
        }
        for k, v in slots.items():
            row["slot." + k] = v
        for k, v in params.items():
            row["param." + k] = v
        for k, v in final.items():
            row["final." + str(k)] = _num(v)
        rows.append(row)

        for m in logged:
            m["trial_id"] = tid
            metric_records.append(m)

    trials = pd.DataFrame.from_records(rows)
    if trials.empty:
        trials = pd.DataFrame(columns=["trial_id", "status", "combo", "seed", "wall_s", "steps_done"])
    metrics = (
        pd.DataFrame.from_records(metric_records)
        if metric_records
        else pd.DataFrame(columns=["trial_id", "step"])
    )
    if "step" not in metrics.columns:
        metrics["step"] = np.nan
    for c in metrics.columns:
        if c != "trial_id":
            metrics[c] = pd.to_numeric(metrics[c], errors="coerce")
    metrics = metrics.sort_values(["trial_id", "step"], kind="mergesort").reset_index(drop=True)

    # fill finals missing from trials.jsonl/summary.json with the last logged value
    final_keys.update(c for c in metrics.columns if PASS_AT_RE.match(str(c)) or c == "eval/mean@8")
    if not metrics.empty:
        last = metrics.groupby("trial_id", sort=True).last()
    else:
        last = pd.DataFrame()
    for k in sorted(final_keys):
        col = "final." + k
        if col not in trials.columns:
            trials[col] = np.nan
        if k in last.columns and not trials.empty:
            fill = trials["trial_id"].map(last[k])
            # only finished/early-stopped runs get their last logged value as a final value
            can = trials["status"].isin(["finished", "early_stopped"])
            trials[col] = trials[col].where(trials[col].notna() | ~can, fill)
        trials[col] = trials[col].astype(float)

    # per-run summaries
    for col, (m, how) in DERIVED.items():
        if m in metrics.columns and not metrics.empty:
            g = metrics.groupby("trial_id", sort=True)[m]
            agg = g.last() if how == "last" else g.mean()
            trials[col] = trials["trial_id"].map(agg).astype(float)
        else:
            trials[col] = np.nan

    # budget: max_t when some finished trial reached it, else the most steps any finished trial did
    finished = trials[trials["status"] == "finished"] if not trials.empty else trials
    max_t = _num(meta.get("max_t"))
    steps = finished["steps_done"].astype(float) if not finished.empty else pd.Series(dtype=float)
    budget: float | None
    if steps.notna().any():
        if np.isfinite(max_t) and (steps >= max_t).any():
            budget = max_t
        else:
            budget = float(steps.max())
            if np.isfinite(max_t):
                warnings.append(
                    f"no finished trial reached max_t={max_t:g} steps; "
                    f"full budget taken as {budget:g} steps"
                )
    else:
        budget = None
    if trials.empty:
        trials["full_budget"] = pd.Series(dtype=bool)
    else:
        fb = trials["status"] == "finished"
        if budget is not None:
            fb &= trials["steps_done"].isna() | (trials["steps_done"] >= budget)
        trials["full_budget"] = fb

    if not trials.empty:
        target = trials["final." + metric].astype(float)
        for tid, combo, fb, st, v in zip(trials["trial_id"], trials["combo"], trials["full_budget"],
                                         trials["status"], target):
            if st != "finished":
                continue  # named above with its status
            if not np.isfinite(v):
                skipped.append({"trial_id": tid, "combo": combo, "excluded": True,
                                "reason": f"no final {metric}"})
            elif not fb:
                skipped.append({"trial_id": tid, "combo": combo, "excluded": True,
                                "reason": f"ran fewer steps than the full budget ({budget:g})"})

    slot_list = [s for s in SLOT_FAMILIES if s in slot_names] + sorted(slot_names - set(SLOT_FAMILIES))
    pass_ks = sorted(
        int(m.group(1)) for k in final_keys if (m := PASS_AT_RE.match(k)) is not None
    )
    journal = path / "optuna.journal"
    return Sweep(
        path=path,
        meta=meta,
        search_space_text=space_text,
        trials=trials.reset_index(drop=True),
        metrics=metrics,
        slot_names=slot_list,
        param_names=sorted(param_names),
        pass_ks=pass_ks,
        budget=budget,
        journal_path=journal if journal.is_file() else None,
        warnings=warnings,
        skipped=skipped,
    )


def _one_line(x, n: int = 200) -> str:
    s = " ".join(str(x).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _recover_rows(path: Path, meta: dict, records: list[dict]) -> list[dict]:
    """Rows for ended trials whose run directory is complete but which trials.jsonl lacks (its
    line was torn), rebuilt from their own files by the sweep's ledger."""
    from ablate.sweep.ledger import rows_from_run_dirs
    have_ids = {str(r.get("trial_id")) for r in records}
    have_dirs = {str(r.get("run_dir")) for r in records if r.get("run_dir")}
    return [r for r in rows_from_run_dirs(path, meta)
            if str(r.get("trial_id")) not in have_ids and str(r.get("run_dir")) not in have_dirs]
