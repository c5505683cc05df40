"""A sweep's trials table, read from its run store: one row per run (trial × seed).

Each run dir under ``<sweep_dir>/trials/`` (a grid/random trial's own dir, or an Optuna trial's
``seed_<s>`` dirs) holds the one record of how that run ended: the ``sweep`` entry of its
summary.json. The trial writes it when the run ends (ablate.sweep.trial); the driver adds what
only it knows (a scheduler's early stop, a worker that died: ablate.sweep.records). Nothing else
records a trial, so a killed driver leaves nothing to repair.

Row fields: trial_id (unique per row), tune_trial_id, key (combo|seed), combo, status
(finished|failed|early_stopped|running|interrupted), slots, choices (every config group, from the
run's config.yaml), method, params, seed, final, value (final[metric]), run_dir (relative to the
sweep dir; None for a seed its trial never ran), wandb_run_id, wandb_dir, wandb_mode, error, failure_kind
(failed rows: "trial" = the run's own code or config, "infrastructure" = its process died;
--resume reruns those), wall_s, steps_done, started, ended, overrides, experiment,
resumed_from_step. A run dir without a record (cut off mid-run) gives a row with its
summary.json status and what its config says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from ablate.spec.groups import GROUPS, SLOT_FAMILIES
from ablate.tracking.run_store import FINAL_STATUSES, read_config, read_json, read_summary

SWEEP_RECORD = "sweep"  # the sweep's record of a run: this entry of the run dir's summary.json
INFRA = "infrastructure"  # error_kind of a run whose process died (actor died, node lost)
_COPIED = ("key", "combo", "started", "ended", "overrides", "experiment", "resumed_from_step")


def sweep_metric(meta: Mapping[str, Any]) -> str:
    """The metric a sweep optimises: its sweep.json's ``metric`` (eval/pass@1 when it names none)."""
    return str(meta.get("metric") or "eval/pass@1")


def run_key(combo: str, seed: int) -> str:
    """The key of one run of a sweep: its combination and seed."""
    return f"{combo}|seed={seed}"


def run_record(run_dir: Path) -> dict:
    """The sweep's record of one run (seed): trial_id, assign, seeds, seed, key, combo, status
    (running | stopped | finished | failed | early_stopped), error, error_kind, final, steps_done,
    wall_s, overrides, run_dir, wandb_run_id/dir, resumed_from_step, started, ended, experiment.
    {} for a run that never recorded its end."""
    rec = read_summary(run_dir).get(SWEEP_RECORD)
    return rec if isinstance(rec, dict) and "seed" in rec else {}


def trial_runs(sweep_dir: Path, trial_id: str) -> list[dict]:
    """The run records of one Tune trial (its run dir, or its per-seed dirs), in seed order."""
    d = Path(sweep_dir) / "trials" / str(trial_id)
    recs = [run_record(p) for p in [d, *sorted(d.glob("seed_*"))]]
    return sorted((r for r in recs if r), key=lambda r: int(r["seed"]))


def joined_error(runs: list[dict], multi: bool) -> str | None:
    """One message for a trial's failed runs (seed-prefixed when the trial runs several)."""
    errs = [(f"seed {r['seed']}: " if multi else "") + str(r.get("error") or "failed")
            for r in runs if r.get("status") == "failed"]
    return "; ".join(errs)[:2000] or None


def is_done(row: Mapping[str, Any]) -> bool:
    """A row --resume keeps: final, except a run that failed for infrastructure reasons."""
    return row.get("status") in FINAL_STATUSES and row.get("failure_kind") != INFRA


def read_trials(sweep_dir: str | Path) -> list[dict]:
    """The trials table of ``sweep_dir``: a row per run dir under trials/, in directory order."""
    sweep_dir = Path(sweep_dir)
    metric = sweep_metric(read_json(sweep_dir / "sweep.json"))
    dirs = [rd for d in sorted(p for p in (sweep_dir / "trials").glob("*") if p.is_dir())
            for rd in sorted(p for p in d.glob("seed_*") if p.is_dir()) or [d]]
    return [_row(sweep_dir, rd, metric) for rd in dirs
            if (rd / "summary.json").is_file() or (rd / "config.yaml").is_file()]


def _row(sweep_dir: Path, rd: Path, metric: str) -> dict:
    summary = read_summary(rd)
    rec = summary.get(SWEEP_RECORD) if isinstance(summary.get(SWEEP_RECORD), dict) else {}
    seed_dir = rd.name.startswith("seed_")  # an Optuna trial runs each seed in its own dir
    tid = f"{rd.parent.name}-s{rd.name[5:]}" if seed_dir else rd.name
    owner = rd.parent if seed_dir else rd
    seed = rec.get("seed", int(rd.name[5:]) if seed_dir and rd.name[5:].isdigit() else None)
    choices = _read_choices(rd)
    src = choices or _choices_from_overrides(rec.get("overrides") or [])
    status = str(rec.get("status") or summary.get("status") or "running")
    status = {"stopped": "interrupted"}.get(status, status)
    final = rec.get("final") or summary.get("final") or {}
    wb = summary.get("wandb") if isinstance(summary.get("wandb"), dict) else {}
    return {
        **{k: rec.get(k) for k in _COPIED},
        "trial_id": tid, "tune_trial_id": str(rec.get("trial_id") or owner.name),
        "seed": seed, "status": status,
        "slots": {g: src[g] for g in SLOT_FAMILIES if src.get(g) is not None},
        "choices": choices, "method": src.get("method"),
        "params": {k: v for k, v in (rec.get("assign") or {}).items()
                   if k != "method" and k not in GROUPS},
        "final": dict(final), "value": final.get(metric),
        "run_dir": rec["run_dir"] if "run_dir" in rec else str(rd.relative_to(sweep_dir)),
        "wandb_run_id": rec.get("wandb_run_id") or wb.get("run_id"),
        "wandb_dir": rec.get("wandb_dir") or wb.get("dir"), "wandb_mode": wb.get("mode"),
        "error": rec.get("error") or summary.get("error") if status != "finished" else None,
        "failure_kind": (rec.get("error_kind") or "trial") if status == "failed" else None,
        "wall_s": rec.get("wall_s") if rec.get("wall_s") is not None else summary.get("wall_s"),
        "steps_done": rec.get("steps_done", summary.get("last_step")),
    }


def _read_choices(run_dir: Path) -> dict | None:
    cfg = read_config(run_dir)
    ch = cfg.get("choices") if isinstance(cfg, dict) else None
    return {str(k): v for k, v in ch.items()} if isinstance(ch, dict) else None


def _choices_from_overrides(overrides: Iterable[str]) -> dict:
    pairs = [str(o).lstrip("+").partition("=") for o in overrides]
    return {k: v for k, sep, v in pairs if sep and k in GROUPS}
