"""Synthetic sweep directories in the exact format the sweep runner writes, with planted effects.

``make_sweep(root)`` writes sweep.json, search_space.yaml, trials/<id>/{config.yaml, metrics.jsonl,
summary.json with the run's record (ablate.tracking.trials), samples.jsonl} and optionally
optuna.journal. The target
``eval/pass@1`` of a trial is ``base + Σ_slot effects[slot][variant] + Σ_param effects + noise``,
so tests know the true ordering of slot effects.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import yaml

from ablate.spec.groups import GROUPS, SLOT_FAMILIES

DEFAULT_SLOTS = {
    "mask": ["none", "ppo_clip", "clip_higher"],
    "denominator": ["behaviour"],
    "advantage": ["group_zscore", "group_center", "rloo"],
    "likelihood": ["identity", "luffy"],
    "aggregation": ["seq_mean_token_mean"],
}
# planted: advantage >> mask > likelihood = 0
DEFAULT_EFFECTS = {
    "advantage": {"group_zscore": 0.0, "group_center": 0.10, "rloo": 0.20},
    "mask": {"none": 0.0, "ppo_clip": 0.03, "clip_higher": 0.05},
    "likelihood": {"identity": 0.0, "luffy": 0.0},
}
HOSTILE = "<script>alert(1)</script> & <b>bold</b> \"quoted\" 'single'"


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _dump(obj) -> str:
    return json.dumps(_clean(obj), sort_keys=True)


def make_sweep(
    root,
    *,
    name: str = "synth",
    slots: dict | None = None,
    effects: dict | None = None,
    params: dict | None = None,
    param_effects: dict | None = None,
    n_seeds: int = 3,
    n_steps: int = 20,
    eval_every: int = 5,
    base: float = 0.30,
    noise: float = 0.01,
    n_failed: int = 1,
    n_early_stopped: int = 1,
    scheduler: str | None = None,
    journal: bool = False,
    samples_per_trial: int = 3,
    hostile: bool = True,
    method_for: dict | None = None,
    seed: int = 0,
) -> Path:
    """Write a full-factorial (slots × params × seeds) synthetic sweep under ``root/name``.

    ``method_for`` maps a slot tuple (mask, denominator, advantage, likelihood, aggregation) to a
    method name recorded in the run's config choices. The last ``n_failed`` trials fail, the ``n_early_stopped``
    before them are stopped at half budget."""
    slots = slots or DEFAULT_SLOTS
    effects = DEFAULT_EFFECTS if effects is None else effects
    params = params if params is not None else {"train.lr": [1e-4], "train.epochs": [1]}
    param_effects = param_effects or {}
    method_for = method_for or {}
    rng = np.random.default_rng(seed)
    out = Path(root) / name
    (out / "trials").mkdir(parents=True, exist_ok=True)

    slot_names = list(slots)
    param_names = sorted(params)
    combos = list(
        itertools.product(*[slots[s] for s in slot_names], *[params[p] for p in param_names])
    )
    trial_list = []
    for combo in combos:
        for sd in range(n_seeds):
            trial_list.append((combo, sd))
    n = len(trial_list)
    failed = set(range(n - n_failed, n))
    stopped = set(range(n - n_failed - n_early_stopped, n - n_failed))

    ks = [1, 2, 4, 8]
    space = {
        "slots": {s: list(v) for s, v in slots.items()},
        "params": {p: list(v) for p, v in params.items()},
        "seeds": list(range(n_seeds)),
    }
    (out / "search_space.yaml").write_text(
        "# synthetic search space <not html> & co\n"
        + "\n".join(
            [f"{s}: [{', '.join(map(str, v))}]" for s, v in slots.items()]
            + [f"{p}: [{', '.join(map(str, v))}]" for p, v in params.items()]
            + [f"seeds: {n_seeds}"]
        )
        + "\n"
    )
    meta = {
        "name": name,
        "search_space_file": "search_spaces/synth.yaml",
        "metric": "eval/pass@1",
        "mode": "max",
        "algorithm": "grid",
        "scheduler": scheduler,
        "max_t": n_steps,
        "started": "2026-11-20T10:00:00",
        "finished": "2026-11-20T12:00:00",
        "ablate_version": "0.1.0",
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
    }
    (out / "sweep.json").write_text(_dump(meta))

    optuna_trials = []
    for i, (combo, sd) in enumerate(trial_list):
        tid = f"t{i:04d}"
        s_vals = dict(zip(slot_names, combo[: len(slot_names)]))
        p_vals = dict(zip(param_names, combo[len(slot_names) :]))
        p_final = base + sum(effects.get(s, {}).get(v, 0.0) for s, v in s_vals.items())
        p_final += sum(param_effects.get(p, {}).get(v, 0.0) for p, v in p_vals.items())
        p_final = float(np.clip(p_final + noise * rng.standard_normal(), 0.001, 0.999))
        status = "finished"
        steps_done = n_steps
        error = None
        if i in failed:
            status, steps_done = "failed", max(1, n_steps // 4)
            error = f"RuntimeError: loss is NaN at step {steps_done} <tensor> & friends\n  at trainer.py:42"
        elif i in stopped:
            status, steps_done = "early_stopped", max(1, n_steps // 2)
        run_dir = f"trials/{tid}"
        rd = out / run_dir
        rd.mkdir(parents=True, exist_ok=True)
        ent_rate = 1.0 + 2.0 * effects.get("advantage", {}).get(s_vals.get("advantage"), 0.0)
        p0 = 0.1
        recs = []
        last_eval = {}
        for step in range(1, steps_done + 1):
            f = step / n_steps
            prog = (1 - math.exp(-3 * f)) / (1 - math.exp(-3))
            p = p0 + (p_final - p0) * prog
            rec = {
                "step": step,
                "time": 1000.0 + step,
                "train/entropy": 1.5 * math.exp(-ent_rate * f) + 0.01 * rng.standard_normal(),
                "train/grad_var": 0.1 * (1 + 0.2 * rng.standard_normal()) ** 2,
                "train/grad_norm": 1.0 + 0.1 * rng.standard_normal(),
                "train/reward_mean": p + 0.02 * rng.standard_normal(),
                "train/response_len": 100 + 20 * f + rng.standard_normal(),
                "perf/step_s": 0.5,
            }
            if step == 3:
                rec["train/grad_var"] = float("nan")  # a NaN logged as null
            if step % eval_every == 0 or step == n_steps:
                pe = p if step < n_steps else p_final
                for k in ks:
                    rec[f"eval/pass@{k}"] = 1 - (1 - pe) ** k
                rec["eval/mean@8"] = pe
                last_eval = {key: rec[key] for key in rec if key.startswith("eval/")}
            recs.append(rec)
        (rd / "metrics.jsonl").write_text("".join(_dump(r) + "\n" for r in recs))
        final = {} if status == "failed" else dict(last_eval)
        wall = 60.0 * steps_done / n_steps + sd
        wandb = {"run_id": f"wb{tid}", "dir": f"wandb/offline-run-20261120_100000-wb{tid}", "mode": "offline"}
        key = tuple(s_vals.get(s) for s in SLOT_FAMILIES)
        method = method_for.get(key)
        record = {
            "trial_id": f"tune{combos.index(combo):04d}" if journal else tid,
            "key": f"{i}|seed={sd}",
            "status": status,
            "assign": {**s_vals, **p_vals},
            "seed": sd,
            "seeds": [sd],
            "combo": _dump({"slots": s_vals, "params": p_vals}),
            "final": final,
            "run_dir": run_dir,
            "wandb_run_id": wandb["run_id"],
            "wandb_dir": wandb["dir"],
            "error": error,
            "wall_s": wall,
            "steps_done": steps_done,
        }
        (rd / "summary.json").write_text(_dump({"status": status, "final": final, "wall_s": wall,
                                                "error": error, "wandb": wandb, "sweep": record}))
        choices = {**s_vals, "model": "tiny", "rollout": "hf",
                   **{k: v for k, v in p_vals.items() if k in GROUPS},
                   **({"method": method} if method is not None else {})}
        (rd / "config.yaml").write_text(yaml.safe_dump(
            {**{k: str(v) for k, v in p_vals.items()}, "seed": sd, "choices": choices}))
        samples = []
        for j in range(samples_per_trial):
            resp = f"The answer is {j + 2}."
            if hostile and j == 0:
                resp = f"{HOSTILE} answer {j}"
            samples.append(
                {"step": steps_done, "prompt": f"What is {j} + 2? <q>", "response": resp, "reward": float(j % 2)}
            )
        (rd / "samples.jsonl").write_text("".join(_dump(r) + "\n" for r in samples))
        optuna_trials.append((combos.index(combo), s_vals, p_vals, status, final.get("eval/pass@1")))

    if journal:
        _write_journal(out, name, slots, params, optuna_trials)
    return out


def _write_journal(out: Path, name: str, slots: dict, params: dict, trials: list) -> None:
    """Like the real runner's Optuna searches: one study trial per proposal (combination) whose
    value is the mean over its seeds; a proposal with a failed seed is FAIL; one with an
    early-stopped seed is COMPLETE with its truncated value (what ASHA + OptunaSearch record)."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(out / "optuna.journal")))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    dists = {s: CategoricalDistribution(list(v)) for s, v in slots.items() if len(v) > 1}
    dists.update({p: CategoricalDistribution(list(v)) for p, v in params.items() if len(v) > 1})
    by_combo: dict[int, list] = {}
    for ci, s_vals, p_vals, status, value in trials:
        by_combo.setdefault(ci, []).append((s_vals, p_vals, status, value))
    for ci in sorted(by_combo):
        rows = by_combo[ci]
        vals = {**rows[0][0], **rows[0][1]}
        ps = {k: vals[k] for k in dists}
        statuses = [r[2] for r in rows]
        if "failed" in statuses:
            t = optuna.trial.create_trial(params=ps, distributions=dists, state=optuna.trial.TrialState.FAIL)
        elif "early_stopped" in statuses:
            stopped = [r[3] for r in rows if r[2] == "early_stopped"]
            t = optuna.trial.create_trial(params=ps, distributions=dists, value=stopped[0])
        else:
            t = optuna.trial.create_trial(
                params=ps, distributions=dists, value=sum(r[3] for r in rows) / len(rows)
            )
        study.add_trial(t)


def edit_records(sweep_dir: Path, edit) -> None:
    """Apply ``edit(record)`` to the run record in every trial's summary.json."""
    for p in sorted(Path(sweep_dir).glob("trials/*/summary.json")):
        summary = json.loads(p.read_text())
        edit(summary["sweep"])
        p.write_text(_dump(summary))
