"""Read a sweep directory (sweep.json, search_space.yaml, trials/<id>/...) into pandas.

One row per run in ``Sweep.trials`` (from the run store's records, ablate.tracking.trials: slots
as ``slot.<name>``, hyperparameters as ``param.<name>``, final metrics as ``final.<metric>``,
per-run summaries derived from metrics.jsonl); one row per logged step in ``Sweep.metrics``. Bad
lines and missing files become notes in ``Sweep.warnings``, never exceptions: a report of a
half-broken sweep is still a report. ``Sweep.skipped`` names every trial left out of the
statistics or read only in part, and why.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ablate.errors import ConfigError
from ablate.spec.groups import SLOT_FAMILIES
from ablate.tracking.run_store import FINAL_STATUSES, INTERRUPTED, read_jsonl
from ablate.tracking.trials import read_trials, sweep_metric

STATUSES = (*FINAL_STATUSES, "running", INTERRUPTED)  # a row with another status: "other:<it>"
_ROW_COPIED = ("method", "tune_trial_id", "seed", "wandb_run_id", "wandb_dir", "wandb_mode", "error")
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
        return sweep_metric(self.meta)

    @property
    def mode(self) -> str:
        mode = str(self.meta.get("mode") or "max").lower()
        return mode if mode in ("max", "min") else "max"

    @property
    def target_col(self) -> str:
        return "final." + self.metric

    def full_budget(self) -> pd.DataFrame:
        """Finished trials that ran the whole budget and have a finite target value."""
        return self.trials[self.trials["full_budget"]]

    def samples(self, trial_id: str) -> list[dict]:
        """The trial's samples.jsonl records (read on demand), with unreadable lines dropped."""
        row = self.trials.loc[self.trials["trial_id"] == trial_id]
        if row.empty:
            return []
        # run_dir: relative to the sweep dir, or absolute
        return read_jsonl(self.path / row.iloc[0]["run_dir"] / "samples.jsonl")[0]


def _read_meta(path: Path) -> dict:
    """sweep.json, the one file a report cannot do without."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepFormatError(f"{path} is missing: not a sweep directory?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SweepFormatError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise SweepFormatError(f"{path} must hold a JSON object")
    return meta


def as_float(x) -> float:
    """A float, NaN for None/non-numeric."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _scalar(v):
    """Params are shown and grouped as scalars; lists/dicts become their JSON text."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return json.dumps(v, sort_keys=True)


def load_sweep(sweep_dir) -> Sweep:
    """Read ``sweep_dir``; raises SweepFormatError only when sweep.json is absent or no object."""
    path = Path(sweep_dir)
    warnings: list[str] = []
    meta = _read_meta(path / "sweep.json")
    try:
        space_text = (path / "search_space.yaml").read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        space_text = ""
        warnings.append("search_space.yaml is missing")
    if not (path / "trials").is_dir():
        raise SweepFormatError(f"{path / 'trials'} is missing: not a sweep directory?")
    metric = sweep_metric(meta)
    rows, logged, skipped = [], [], []
    for r in read_trials(path):
        rows.append(_row(r))
        logged += _logged(path, r, warnings, skipped)
    trials, metrics = _frames(rows, logged, metric)
    budget = _budget(trials, meta, warnings)
    _mark_full_budget(trials, budget, metric, skipped)
    names = {p: sorted(str(c)[len(p):] for c in trials.columns if str(c).startswith(p))
             for p in ("slot.", "param.", "final.")}
    journal = path / "optuna.journal"
    return Sweep(path=path, meta=meta, search_space_text=space_text,
                 trials=trials.reset_index(drop=True), metrics=metrics,
                 slot_names=([s for s in SLOT_FAMILIES if s in names["slot."]]
                             + [s for s in names["slot."] if s not in SLOT_FAMILIES]),
                 param_names=names["param."], budget=budget,
                 pass_ks=sorted(int(m.group(1)) for k in names["final."] if (m := PASS_AT_RE.match(k))),
                 journal_path=journal if journal.is_file() else None, warnings=warnings,
                 skipped=skipped)


def _row(r: dict) -> dict:
    """One run's row (ablate.tracking.trials) as DataFrame columns."""
    tid, status = str(r["trial_id"]), str(r["status"])
    slots = {str(k): _scalar(v) for k, v in (r.get("slots") or {}).items()}
    params = _factors(r)
    return {"trial_id": tid, "status": status if status in STATUSES else "other:" + status,
            **{k: r.get(k) for k in _ROW_COPIED},
            "combo": (str(r.get("combo") or "")
                      or json.dumps({"slots": slots, "params": params}, sort_keys=True, default=str)),
            "run_dir": str(r.get("run_dir") or f"trials/{tid}"), "wall_s": as_float(r.get("wall_s")),
            "steps_done": as_float(r.get("steps_done")), **{"slot." + k: v for k, v in slots.items()},
            **{"param." + k: v for k, v in params.items()},
            **{"final." + str(k): as_float(v) for k, v in r["final"].items()}}


def _skip(skipped: list[dict], tid: str, combo: str, excluded: bool, reason: str) -> None:
    skipped.append({"trial_id": tid, "combo": combo, "excluded": excluded, "reason": reason})


def _logged(path: Path, r: dict, warnings: list[str], skipped: list[dict]) -> list[dict]:
    """A run's metrics.jsonl records, and its skip notes: an unfinished run is left out; a run
    whose curves are missing or partly unreadable is kept (its final values stand)."""
    tid, combo, status = str(r["trial_id"]), str(r.get("combo") or ""), str(r["status"])
    run_dir = r.get("run_dir") or f"trials/{tid}"
    if status != "finished":
        err = r.get("error")
        _skip(skipped, tid, combo, True, f"status {status}" + (f": {_one_line(err)}" if err else ""))
    rd = path / run_dir
    logged, bad = read_jsonl(rd / "metrics.jsonl")
    if bad:
        warnings.append(f"{rd / 'metrics.jsonl'}: {bad} unreadable line(s) skipped")
    if status in ("finished", "early_stopped") and not (rd / "metrics.jsonl").is_file():
        _skip(skipped, tid, combo, False, f"metrics.jsonl missing in {run_dir} (no curves; final "
                                          f"values from summary.json)")
    elif status in ("finished", "early_stopped") and bad:
        _skip(skipped, tid, combo, False, f"{bad} unreadable line(s) in {run_dir}/metrics.jsonl "
                                          f"(those steps are missing from the curves)")
    return [{**m, "trial_id": tid} for m in logged]


def _factors(r: dict) -> dict:
    """A run's factors besides slots: hyperparameters, other config-group choices (task, model,
    regularizers, ...) and the method preset; constant ones show in the header, swept ones get
    effects."""
    params = {str(k): _scalar(v) for k, v in (r.get("params") or {}).items() if k != "seed"}
    for g, v in (r.get("choices") or {}).items():  # a row's slots are its SLOT_FAMILIES choices
        if v is not None and str(g) not in SLOT_FAMILIES and g != "method":
            params.setdefault(str(g), _scalar(v))
    if r.get("method") is not None:
        params.setdefault("method", _scalar(r["method"]))
    return params


def _frames(rows: list[dict], logged: list[dict], metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The trials and metrics DataFrames; finals a run's summary lacks are its last logged
    values, and the per-run summaries (DERIVED) come from its metrics."""
    trials = (pd.DataFrame.from_records(sorted(rows, key=lambda r: r["trial_id"])) if rows else
              pd.DataFrame(columns=["trial_id", "status", "combo", "run_dir", "wall_s", "steps_done",
                                    *_ROW_COPIED]))
    metrics = pd.DataFrame.from_records(logged) if logged else pd.DataFrame(columns=["trial_id", "step"])
    if "step" not in metrics.columns:
        metrics["step"] = np.nan
    for c in metrics.columns:
        if c != "trial_id":
            metrics[c] = pd.to_numeric(metrics[c], errors="coerce")
    metrics = metrics.sort_values(["trial_id", "step"], kind="mergesort").reset_index(drop=True)
    keys = {metric, *(str(c)[6:] for c in trials.columns if str(c).startswith("final.")),
            *(c for c in metrics.columns if PASS_AT_RE.match(str(c)) or c == "eval/mean@8")}
    per_trial = metrics.groupby("trial_id", sort=True)  # grouped once: finals and DERIVED
    last = per_trial.last() if not metrics.empty else pd.DataFrame()
    for k in sorted(keys):
        col = "final." + k
        if col not in trials.columns:
            trials[col] = np.nan
        if k in last.columns and not trials.empty:
            fill = trials["trial_id"].map(last[k])
            # only finished/early-stopped runs get their last logged value as a final value
            can = trials["status"].isin(["finished", "early_stopped"])
            trials[col] = trials[col].where(trials[col].notna() | ~can, fill)
        trials[col] = trials[col].astype(float)
    for col, (m, how) in DERIVED.items():  # how: "last" | "mean", a groupby method
        per_run = getattr(per_trial[m], how)() if m in metrics.columns else {}
        trials[col] = trials["trial_id"].map(per_run).astype(float)
    return trials, metrics


def _budget(trials: pd.DataFrame, meta: dict, warnings: list[str]) -> float | None:
    """max_t when some finished trial reached it, else the most steps any finished trial did."""
    max_t = as_float(meta.get("max_t"))
    steps = trials.loc[trials["status"] == "finished", "steps_done"].astype(float)
    if not steps.notna().any():
        return None
    if np.isfinite(max_t) and (steps >= max_t).any():
        return max_t
    budget = float(steps.max())
    if np.isfinite(max_t):
        warnings.append(f"no finished trial reached max_t={max_t:g} steps; "
                        f"full budget taken as {budget:g} steps")
    return budget


def _mark_full_budget(trials: pd.DataFrame, budget: float | None, metric: str,
                      skipped: list[dict]) -> None:
    """``full_budget``: finished with the whole budget and a finite final value of the metric; a
    finished run without either is named in the skip list."""
    finished = trials["status"] == "finished"
    finite = np.isfinite(trials["final." + metric].astype(float))
    steps_ok = finished if budget is None else trials["steps_done"].isna() | (trials["steps_done"] >= budget)
    trials["full_budget"] = finished & steps_ok & finite
    for tid, combo, done, has, ok in zip(trials["trial_id"], trials["combo"], finished, finite, steps_ok):
        if done and not has:  # an unfinished run is named with its status
            _skip(skipped, tid, combo, True, f"no final {metric}")
        elif done and not ok:
            _skip(skipped, tid, combo, True, f"ran fewer steps than the full budget ({budget:g})")


def _one_line(x, n: int = 200) -> str:
    s = " ".join(str(x).split())
    return s if len(s) <= n else s[: n - 1] + "…"
