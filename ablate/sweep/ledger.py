"""The sweep's trial table, ``<sweep_dir>/trials.jsonl``: one JSON object per run (trial × seed).

A view, derived from Tune's trials and the run store: each run's own record (the ``sweep`` entry
of its summary.json, ablate.sweep.trial.run_record) says how it ended; Tune says what is pending
or running. Written by a Tune callback in the driver as trials start, report and end (atomic
rewrite), and once more at the end, so a killed sweep still leaves a usable table. Rows of earlier
attempts (a resumed sweep) are kept; the run dirs rebuild any row the table lacks (``recover``).

Row fields: trial_id (unique per row), tune_trial_id, key (combo|seed), status
(finished|failed|early_stopped|running|pending), slots {mask, denominator, advantage, likelihood,
aggregation}, choices (every config group, when the run's config.yaml exists), method, params,
seed, combo, final (metrics), value (final[metric]), run_dir (relative to the sweep dir),
wandb_run_id, wandb_dir, error, failure_kind (failed rows: "trial" = the run's own code or
config, "infrastructure" = its process died; --resume reruns those), wall_s, steps_done, started,
ended, overrides, experiment, resumed_from_step (a run continued from a trial checkpoint).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ablate.spec.groups import GROUPS, SLOT_FAMILIES
from ablate.sweep.space import active_assignment, assignment_overrides, combo_key, spec_key
from ablate.sweep.trial import COMPLETE_KEY, ENDED, joined_error, trial_runs
from ablate.tracking.run_store import read_jsonl

FINAL_STATUSES = ("finished", "failed", "early_stopped")
INFRA = "infrastructure"  # failure_kind of a run whose process died (actor died, node lost)


def is_done(row: Mapping[str, Any]) -> bool:
    """A row --resume keeps: final, except a run that failed for infrastructure reasons."""
    return row.get("status") in FINAL_STATUSES and not (
        row.get("status") == "failed" and row.get("failure_kind") == INFRA)
_TUNE_STATUS = {"PENDING": "pending", "PAUSED": "pending", "RUNNING": "running",
                "TERMINATED": "finished", "ERROR": "failed"}
_SKIP_FINAL = {"seed", "sweep/seed_index", COMPLETE_KEY, "sweep/num_seeds", "done",
               "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s",
               "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
               "iterations_since_restore", "checkpoint_dir_name", "config", "experiment_tag",
               "should_checkpoint"}


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if x is None or isinstance(x, (bool, int, str)):
        return x
    item = getattr(x, "item", None)
    if callable(item):
        try:
            return _jsonable(item())
        except Exception:  # noqa: BLE001
            pass
    return str(x)


def read_rows(path: Path) -> list[dict]:
    """Trial rows of a trials.jsonl (a torn last line from a killed driver is skipped)."""
    rows, _bad = read_jsonl(path)
    return [r for r in rows if r.get("trial_id")]


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return d if isinstance(d, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _read_choices(run_dir: Path) -> dict | None:
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    ch = cfg.get("choices") if isinstance(cfg, dict) else None
    return {str(k): v for k, v in ch.items()} if isinstance(ch, dict) else None


def _choices_from_overrides(overrides: Iterable[str]) -> dict:
    out: dict[str, Any] = {}
    for o in overrides:
        k, sep, v = o.lstrip("+").partition("=")
        if sep and k in GROUPS:
            out[k] = v
    return out


def _last_line(text: str | None) -> str | None:
    if not text:
        return None
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[-1][:2000] if lines else None


class Ledger:
    """In-memory rows keyed by trial_id, mirrored to trials.jsonl on every change."""

    def __init__(self, sweep_dir: str | Path, ctx: Mapping[str, Any]):
        self.sweep_dir = Path(sweep_dir)
        self.path = self.sweep_dir / "trials.jsonl"
        self.ctx = dict(ctx)
        self.rows: dict[str, dict] = {}
        self._loaded = False
        self._choices: dict[str, dict] = {}

    # -------------------------------------------------------------------------- persistence
    def load(self) -> "Ledger":
        if not self._loaded:
            for r in read_rows(self.path):
                self.rows[str(r["trial_id"])] = r
            self._loaded = True
        return self

    def write(self) -> None:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        rows = sorted(self.rows.values(), key=lambda r: (r.get("experiment") or "",
                                                         r.get("order", 0), r["trial_id"]))
        text = "".join(json.dumps(_jsonable(r), sort_keys=False) + "\n" for r in rows)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)

    def finished_keys(self) -> set[str]:
        """Spec keys of runs already measured (finished, failed or early-stopped)."""
        return {r["key"] for r in self.load().rows.values() if is_done(r) and r.get("key")}

    # -------------------------------------------------------------------------- row building
    def _row(self, *, trial_id: str, tune_id: str, status: str, assign: dict, seed: int,
             run: dict | None, last: Mapping[str, Any], error: str | None, order: int,
             experiment: str, failure_kind: str | None = None) -> dict:
        metric = self.ctx["metric"]
        run = run or {}
        run_rel = run.get("run_dir")
        if run_rel is None and "run_dir" not in run:
            run_rel = (f"trials/{tune_id}/seed_{seed}" if self.ctx.get("optuna")
                       else f"trials/{tune_id}")
        overrides = run.get("overrides") or (list(self.ctx["base_overrides"])
                                             + assignment_overrides(assign) + [f"seed={seed}"])
        choices = self._choices.get(run_rel) if run_rel else None
        if choices is None and run_rel:
            choices = _read_choices(self.sweep_dir / run_rel)
            if choices is not None:  # written once at the start of a run: cache it
                self._choices[run_rel] = choices
        src = choices or _choices_from_overrides(overrides)
        slots = {g: src.get(g) for g in SLOT_FAMILIES if src.get(g) is not None}
        summary = _read_json(self.sweep_dir / run_rel / "summary.json") if run_rel else {}
        final = run.get("final")
        if not isinstance(final, Mapping) or not final:
            final = summary.get("final") if isinstance(summary.get("final"), Mapping) else None
        if not final:
            final = {k: v for k, v in last.items()
                     if k not in _SKIP_FINAL and isinstance(v, (int, float, str, bool))}
        wb = summary.get("wandb") if isinstance(summary.get("wandb"), Mapping) else {}
        steps = run.get("steps_done")
        if steps is None:
            steps = summary.get("steps_done", last.get("step"))
        return {
            "trial_id": trial_id,
            "tune_trial_id": tune_id,
            "key": spec_key(assign, seed),
            "status": status,
            "slots": slots,
            "choices": choices,
            "method": src.get("method"),
            "params": {k: v for k, v in assign.items() if k != "method" and k not in GROUPS},
            "seed": seed,
            "combo": combo_key(assign),
            "final": dict(final or {}),
            "value": (final or {}).get(metric),
            "run_dir": run_rel,
            "wandb_run_id": run.get("wandb_run_id") or wb.get("run_id"),
            "wandb_dir": run.get("wandb_dir") or wb.get("dir"),
            "error": run.get("error") or error,
            "failure_kind": (failure_kind or ("trial" if run.get("status") == "failed" else INFRA))
            if status == "failed" else None,
            "resumed_from_step": run.get("resumed_from_step"),
            "wall_s": run.get("wall_s") if run.get("wall_s") is not None else summary.get("wall_s"),
            "steps_done": steps,
            "started": run.get("started"),
            "ended": run.get("ended"),
            "overrides": overrides,
            "experiment": experiment,
            "order": order,
        }

    def update_trial(self, trial, experiment: str, order: int = 0) -> None:
        """Refresh the rows of one Tune trial (one row per seed)."""
        tune_id = str(trial.trial_id)
        config = dict(trial.config or {})
        if "trial" in config:
            spec = (self.ctx.get("specs") or {}).get(config["trial"])
            if spec is None:
                return
            assign, seeds = dict(spec["assign"]), [int(spec["seed"])]
        else:
            assign = active_assignment(config, self.ctx.get("conditions") or {})
            seeds = [int(s) for s in self.ctx["seeds"]]
        status = _TUNE_STATUS.get(str(trial.status), "pending")
        last = dict(trial.last_result or {})
        records = trial_runs(self.sweep_dir, tune_id)
        runs = {int(r["seed"]): r for r in records}
        own_failure = any(r.get("status") == "failed" for r in records)
        error = None
        if status == "failed":
            error = joined_error(records, len(seeds) > 1)
            if not error:
                try:
                    error = _last_line(trial.get_error())
                except Exception:  # noqa: BLE001
                    error = None
            error = error or "trial errored (see the Tune trial's error.txt)"
        elif status == "finished" and not last.get(COMPLETE_KEY) \
                and not all(runs.get(s, {}).get("status") == "finished" for s in seeds):
            status = "early_stopped"  # terminated by the scheduler before the trainer's end
        multi = len(seeds) > 1
        for i, seed in enumerate(seeds):
            run = runs.get(seed)
            rs = run.get("status") if run else None
            if status == "pending":  # seeds of an interrupted proposal that did finish show so
                row_status = rs if rs in ("finished", "failed") and multi else "pending"
            elif status == "running":  # a later seed of a running proposal is pending
                row_status = (rs if rs in ("running", "finished", "failed")
                              else "running" if rs == "stopped" else "pending")
            elif status == "finished":
                row_status = rs if rs in FINAL_STATUSES else "finished"
            elif status == "early_stopped":
                row_status = rs if rs in ("finished", "failed") else "early_stopped"
            else:  # failed: a run that never recorded its end (killed, OOM) failed with the trial
                row_status = rs if rs in FINAL_STATUSES else "failed"
            row_last = last if (not multi or last.get("seed") == seed) else {}
            rid = f"{tune_id}-s{seed}" if multi else tune_id
            if run is None and multi and row_status in FINAL_STATUSES:
                run = {"run_dir": None, "steps_done": 0}  # a later seed the proposal never ran
            row = self._row(trial_id=rid, tune_id=tune_id, status=row_status, assign=assign,
                            seed=seed, run=run, last=row_last,
                            error=error if row_status == "failed" else None,
                            order=order * 1000 + i, experiment=experiment,
                            failure_kind="trial" if own_failure else None)
            self.rows[rid] = row

    def recover(self) -> int:
        """Rows from the run store where the table lacks a final status: a trial whose runs all
        recorded their end (ablate.sweep.trial.run_record) is known to have ended, even when the
        driver died before it could say so."""
        n = 0
        for d in sorted(p for p in (self.sweep_dir / "trials").glob("*") if p.is_dir()):
            runs = {int(r["seed"]): r for r in trial_runs(self.sweep_dir, d.name)}
            first = next(iter(runs.values()), {})
            seeds = [int(s) for s in first.get("seeds") or []]
            if not seeds or not isinstance(first.get("assign"), dict) \
                    or not all(runs.get(s, {}).get("status") in ENDED for s in seeds):
                continue
            for i, seed in enumerate(seeds):
                rid = f"{d.name}-s{seed}" if len(seeds) > 1 else d.name
                old = self.rows.get(rid)
                if old is not None and old.get("status") in FINAL_STATUSES:
                    continue
                run = runs[seed]
                self.rows[rid] = self._row(
                    trial_id=rid, tune_id=d.name, status=run["status"],
                    assign=dict(first["assign"]), seed=seed, run=run, last={},
                    error=run.get("error") if run["status"] == "failed" else None,
                    order=(old or {}).get("order", 10**6 + i),
                    experiment=(old or {}).get("experiment") or "recovered",
                    failure_kind="trial")
                n += 1
        return n

    def add_pending(self, specs: list[dict], experiment: str) -> None:
        """Rows for planned grid/random runs that have no Tune trial yet (shown as pending)."""
        have = {r.get("key") for r in self.rows.values()}
        for i, s in enumerate(specs):
            if s["key"] in have:
                continue
            rid = f"pending-{i:05d}"
            self.rows[rid] = self._row(trial_id=rid, tune_id=rid, status="pending",
                                       assign=s["assign"], seed=int(s["seed"]), run={"run_dir": None},
                                       last={}, error=None, order=i, experiment=experiment)

    def drop_pending_placeholders(self) -> None:
        for rid in [k for k in self.rows if k.startswith("pending-")]:
            del self.rows[rid]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows.values():
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out


def rows_from_run_dirs(sweep_dir: str | Path, meta: Mapping[str, Any]) -> list[dict]:
    """Ledger rows of every ended trial, rebuilt from the run store alone (summary.json with its
    run record, config.yaml): what a report falls back on when a trials.jsonl line is torn."""
    ctx = {"metric": meta.get("metric") or "eval/pass@1", "seeds": list(meta.get("seeds") or []),
           "optuna": bool(meta.get("optuna_journal")), "base_overrides": []}
    led = Ledger(sweep_dir, ctx)
    led._loaded = True  # start from nothing: only the run directories speak
    led.recover()
    return list(led.rows.values())


def make_callback(ledger: Ledger, experiment: str, specs: list[dict] | None = None):
    """A ray.tune Callback that keeps trials.jsonl current (throttled on results)."""
    from ray.tune import Callback

    class LedgerCallback(Callback):
        def __init__(self):
            self._last_write = 0.0
            self._order: dict[str, int] = {}
            self._dirty = False

        def _sync(self, trials, force: bool = False):
            ledger.load()
            for t in trials:
                if t.trial_id not in self._order:
                    self._order[t.trial_id] = len(self._order)
            now = time.monotonic()
            if not force and not self._dirty and now - self._last_write < 2.0:
                return
            placeholder_keys = set()
            for t in trials:
                ledger.update_trial(t, experiment, self._order[t.trial_id])
            if specs is not None:
                placeholder_keys = {r["key"] for r in ledger.rows.values()
                                    if not r["trial_id"].startswith("pending-")}
                for rid in [k for k, r in ledger.rows.items()
                            if k.startswith("pending-") and r["key"] in placeholder_keys]:
                    del ledger.rows[rid]
            ledger.write()
            self._last_write, self._dirty = now, False

        def on_trial_start(self, iteration, trials, trial, **info):
            self._dirty = True
            self._sync(trials)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._sync(trials)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._dirty = True
            self._sync(trials, force=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._dirty = True
            self._sync(trials, force=True)

        def on_step_end(self, iteration, trials, **info):
            self._sync(trials)

        def on_experiment_end(self, trials, **info):
            self._sync(trials, force=True)

    return LedgerCallback()
