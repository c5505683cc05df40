"""Run a validated search space with Ray Tune (+ Optuna): the driver side of `ablate sweep`.

Sweep directory ``<output_dir>/<name>/``: sweep.json, search_space.yaml (resolved),
trials/<trial_id>/ (run stores, each run's record in its summary.json: ablate.tracking.trials),
optuna.journal (Optuna searches), tune*/ (Tune experiment dirs).

Resume: Tuner.restore of the last Tune experiment. Only when Tune's state is missing or damaged
(a driver killed before Tune's first save) does a new experiment run what the run records do not
show as done.

Seeds: grid and random searches make each (configuration, seed) its own Tune trial, so replicates
run in parallel. Optuna searches make each Optuna proposal one Tune trial that runs every seed in
turn (run dirs trials/<id>/seed_<s>/) and reports the mean over seeds as the objective, so Optuna
only ever sees seed-aggregated values; with ASHA, rungs judge a proposal on its first seed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

import ablate
from ablate.errors import ConfigError
from ablate.sweep import trainables
from ablate.sweep.console import (RAY_LOG, Console, make_console_callback, redirect_output,
                                  use_console)
from ablate.sweep.preflight import preflight
from ablate.sweep.ray_session import cleanup_leftovers, mark_shut_down, record_session
from ablate.sweep.records import settle
from ablate.sweep.space import (DEFAULT_TRAINABLE, OptunaSpace, SearchSpace, combo_key,
                                load_search_space, plan_trials)
from ablate.sweep.trial import Trial
from ablate.tracking.provenance import REPO_ROOT, git_commit
from ablate.tracking.run_store import FINAL_STATUSES, atomic_write, mark_interrupted, read_json
from ablate.tracking.trials import is_done, read_trials
from ablate.tracking.wandb_logger import resolve_mode, shared_service

EXIT_INTERRUPTED = 130
EXIT_ALL_FAILED = 1
# never sent to workers through runtime_env (Ray logs env_vars in plain text): local workers
# inherit the driver's environment; on a cluster, give the nodes their own credentials
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL", "AUTH")


def is_secret(name: str) -> bool:
    return any(w in name.upper() for w in _SECRET_WORDS)


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def wandb_mode(space: SearchSpace) -> str:
    """The sweep's W&B mode, decided once here by the rule `ablate train` uses (resolve_mode) and
    handed to every trial as WANDB_MODE."""
    return resolve_mode(space.wandb.mode, field="wandb.mode")


def worker_env(space: SearchSpace, sweep_dir: Path) -> dict[str, str]:
    """Environment every trial process gets (absolute paths: Tune changes the trial cwd). No
    credential: it travels in runtime_env, which Ray writes to its logs (see is_secret)."""
    from ablate.registry import conf_dir

    env = {
        "WANDB_MODE": wandb_mode(space),
        "WANDB_DIR": str(Path(os.environ["WANDB_DIR"]).resolve()) if os.environ.get("WANDB_DIR")
        else str(sweep_dir),
        "WANDB_PROJECT": os.environ.get("WANDB_PROJECT") or space.wandb.project,
        "WANDB_SILENT": os.environ.get("WANDB_SILENT", "true"),
        "ABLATE_CONF_DIR": str(conf_dir()),
        "WANDB_ENTITY": str(space.wandb.entity or ""),  # the environment's, when set, wins
    }
    env.update({k: os.environ[k] for k in ("ABLATE_CACHE", "ABLATE_PLUGINS", "HF_HOME", "HF_HUB_OFFLINE",
                                           "TOKENIZERS_PARALLELISM", "WANDB_ENTITY", "WANDB_BASE_URL")
                if os.environ.get(k)})
    if env.get("ABLATE_CACHE"):
        env["ABLATE_CACHE"] = str(Path(env["ABLATE_CACHE"]).resolve())
    # a trial's torch threads = its CPUs (Ray sets this only where the driver's environment has
    # none; an inherited larger value oversubscribes the cores when trials run side by side);
    # `threads=` in a run config still overrides it
    env["OMP_NUM_THREADS"] = str(max(1, int(space.resources.cpu)))
    paths = [str(REPO_ROOT), os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return {k: v for k, v in env.items() if v and not is_secret(k)}


def describe(space: SearchSpace, specs: list[dict] | None, sweep_dir: Path) -> str:
    lines = [f"sweep {space.name}: {space.search.algorithm}"
             + (f", scheduler {space.scheduler.type} (max_t={space.scheduler.max_t:g})"
                if space.scheduler else "")
             + f", metric {space.metric} ({space.mode}), seeds {space.seeds}",
             f"sweep dir: {sweep_dir}", f"trainable: {space.trainable}",
             f"base overrides: {' '.join(space.base_overrides) or '(none)'}"]
    if specs is not None:
        lines.append(f"{len(specs)} trials:")
        lines += [f"  [{i:>3}] seed={s['seed']:<3} {s['combo']}" for i, s in enumerate(specs)]
    else:
        lines.append(f"{space.search.num_samples} Optuna proposals x {len(space.seeds)} seed(s), run in "
                     f"one trial per proposal; axes:")
        lines += [f"  {a} in {o}" for a, o in space.categorical_axes()]
        lines += [f"  {k}: {p.to_dict()}" for k, p in space.params.items()]
    return "\n".join(lines)


LARGE_SWEEP = 100  # trials: more asks for --yes (or a "y" at a terminal)
ATTACH_TIMEOUT_S = 5.0


def check_num_cpus(num_cpus: float | None) -> None:
    if num_cpus is not None and not (isinstance(num_cpus, (int, float)) and 0 < num_cpus <= 4096):
        raise ConfigError(f"--num-cpus: got {num_cpus!r}; allowed: a number in (0, 4096], or "
                          "leave it out for all cores")


def _need(space: SearchSpace) -> dict[str, float]:
    """What one trial takes in all: its resources times its workers."""
    r = space.resources
    return {"CPU": float(r.cpu * r.workers), "GPU": float(r.gpu * r.workers)}


def _check_fits(space: SearchSpace, have: Mapping[str, float], where: str, hint: str) -> None:
    """One trial (its resources times its workers) fits what ``where`` has."""
    for k, need in _need(space).items():
        n = float(have.get(k, 0))
        if need > n:
            raise ConfigError(f"resources.{k.lower()}: each trial needs {need:g} {k}(s) but {where} "
                              f"has {n:g}; allowed: resources.{k.lower()} x workers <= {n:g} ({hint})")


def check_machine(space: SearchSpace, address: str | None, num_cpus: float | None) -> None:
    """A local Ray gets this machine: a trial must fit it (a cluster is checked once attached)."""
    if address:
        return
    have = {"CPU": float(num_cpus or os.cpu_count() or 1), "GPU": 0}
    if space.resources.gpu > 0:
        import torch

        have["GPU"] = torch.cuda.device_count()
    _check_fits(space, have, "the local Ray", "or --num-cpus N, or --address of a cluster")


def confirm_size(space: SearchSpace, specs: list[dict] | None, yes: bool,
                 log: Callable[[str], None]) -> None:
    """State a large sweep's size; without ``--yes`` ask at a terminal, refuse otherwise."""
    n = space.planned_runs(specs)
    if n <= LARGE_SWEEP:
        return
    log(f"sweep {space.name}: {n} trials")
    if yes:
        return
    if sys.stdin is not None and sys.stdin.isatty() and \
            input(f"start {n} trials? [y/N] ").strip().lower() in ("y", "yes"):
        return
    raise ConfigError(f"sweep: {n} trials (more than {LARGE_SWEEP}); allowed: pass --yes to start "
                      "it, or shrink seeds / num_samples / the axes")


def _address_host_port(address: str) -> tuple[str, int] | None:
    if address == "auto":
        try:
            address = (os.environ.get("RAY_ADDRESS")
                       or Path("/tmp/ray/ray_current_cluster").read_text().strip())
        except OSError:
            raise ConfigError("--address: got 'auto' but no Ray cluster runs on this machine; "
                              "allowed: auto after `ray start --head`, or HOST:PORT") from None
    address = address.split("://", 1)[-1]
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        if address == "local":
            return None
        raise ConfigError(f"--address: got {address!r}; allowed: auto or HOST:PORT")
    return host or "127.0.0.1", int(port)


def check_address(address: str) -> None:
    """Something answers at the cluster's address within ATTACH_TIMEOUT_S (Ray itself would
    retry for minutes without a word)."""
    hp = _address_host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=ATTACH_TIMEOUT_S).close()
    except OSError as e:
        raise ConfigError(f"--address: nothing answers at {hp[0]}:{hp[1]} within "
                          f"{ATTACH_TIMEOUT_S:g} s ({e.strerror or e}); allowed: the address of a "
                          "running Ray head (`ray start --head`), or auto") from None


def _budget(space: SearchSpace) -> float | None:
    """The full budget in steps: the scheduler's max_t, else train.steps from base_overrides."""
    if space.max_t is not None:
        return space.max_t
    steps = [v for k, _, v in (o.lstrip("+").partition("=") for o in space.base_overrides)
             if k == "train.steps"]
    return int(steps[-1]) if steps and steps[-1].strip().isdigit() else None


def space_changes(sweep_dir: Path, space: SearchSpace) -> list[str] | None:
    """The fields in which ``space`` differs from the search space the sweep at ``sweep_dir``
    started with (its search_space.yaml); None when that file is absent or unreadable."""
    try:
        stored = yaml.safe_load((sweep_dir / "search_space.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(stored, dict):
        return None
    now = json.loads(json.dumps(space.to_dict(), default=str))
    keys = (set(stored) | set(now)) - {"output_dir", "description", "max_failures"}
    return sorted(k for k in keys if stored.get(k) != now.get(k))


def _trial_dirname(trial) -> str:
    return str(trial.trial_id)


def _make_search(space: SearchSpace, sweep_dir: Path):
    if not space.is_optuna:
        return None
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from ablate.sweep.study import JOURNAL, make_linked_search

    seed, algorithm = space.search.seed, space.search.algorithm
    if algorithm == "optuna_tpe":
        sampler = optuna.samplers.TPESampler(seed=seed)
    elif algorithm == "optuna_random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / JOURNAL)))
    # study trials carry user attributes linking them to their runs (ablate.sweep.study)
    return make_linked_search(storage=storage, study_name=space.name, sweep_dir=sweep_dir,
                              space=OptunaSpace(space), metric=space.metric, mode=space.mode,
                              sampler=sampler)


def _make_scheduler(space: SearchSpace):
    if not space.scheduler:
        return None
    from ray.tune.schedulers import ASHAScheduler

    s = space.scheduler
    # Rungs strictly below max_t and no stop *at* max_t: a trial that survives its rungs ends by
    # itself, so its run store (summary.json, final eval) is complete.
    return ASHAScheduler(time_attr=s.time_attr, max_t=float(s.max_t) * (1 - 1e-9),
                         grace_period=s.grace_period, reduction_factor=s.reduction_factor,
                         brackets=s.brackets, stop_last_trials=False)


def _token_auth_for_attach(log: Callable[[str], None]) -> None:
    """Attaching to a cluster: use token auth when a Ray token is on this machine (what `ray start`
    does for the head; a driver connecting by address does not do it by itself in Ray 2.60). Ray
    reads RAY_AUTH_MODE once, at import, so it must be set before Ray is imported."""
    if "RAY_AUTH_MODE" in os.environ or not (
            os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        return
    if "ray" in sys.modules:
        log("note: a Ray token is on this machine but Ray was imported before ablate could turn on "
            "token auth; if the cluster needs it, set RAY_AUTH_MODE=token before starting")
        return
    os.environ["RAY_AUTH_MODE"] = "token"


def _init_ray(run: SweepRun) -> bool:
    """Start or attach to Ray; returns True when this call started it (and must shut it down). A
    local start is recorded in the sweep dir (ablate/sweep/ray_session.py)."""
    import ray

    if ray.is_initialized():
        run.log("using the Ray instance already initialised in this process")
        return False
    kw = {"runtime_env": {"env_vars": run.trial_ctx["env"]}, "log_to_driver": run.verbose}
    if run.address:
        run.log(f"attaching to Ray cluster at {run.address}")
        ray.init(address=run.address, **kw)
    else:
        cpus = run.num_cpus or max(os.cpu_count() or 1, math.ceil(_need(run.space)["CPU"]))
        ctx = ray.init(address="local", num_cpus=int(math.ceil(cpus)), include_dashboard=False,
                       **kw)
        record_session(run.sweep_dir, str(ctx.address_info["session_dir"]))
    return True


DRIVER_CPU = 0.01  # what a multi-worker trial's own process reserves (Tune needs a non-empty bundle)


def _saved_trials(experiment_dir: Path) -> list:
    """Tune's trials as saved on disk. After an interrupt the live Trial objects read TERMINATED
    (Tune stops them on cleanup); the saved state keeps them RUNNING/PENDING, i.e. resumable."""
    from ray.tune import ExperimentAnalysis

    lg = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = lg.level
    lg.setLevel(logging.ERROR)  # "Failed to fetch metrics" for trials that never reported
    try:
        return list(ExperimentAnalysis(str(experiment_dir)).trials)
    except Exception:  # noqa: BLE001 - the callback's table stands
        return []
    finally:
        lg.setLevel(level)


def generate_report_safely(sweep_dir: Path, name: str, log: Callable[[str], None]) -> Path | None:
    from ablate.report import generate_report  # lazy: pandas/matplotlib only when reporting

    try:
        return generate_report(sweep_dir, out_dir=Path("reports") / name, log=log)
    except Exception as e:  # noqa: BLE001 - the trials table is written; the report is extra
        log(f"report: failed ({type(e).__name__}: {' '.join(str(e).split())[:500]})")
        return None


@dataclass
class SweepRun:
    """One execution of a validated sweep: what the Tune phase needs (built by run_sweep)."""

    space: SearchSpace
    specs: list[dict] | None  # planned trials (grid/random); None for Optuna
    sweep_dir: Path
    meta: dict  # sweep.json, kept current
    trial_ctx: dict  # what every trial gets (ablate.sweep.trial), its environment included
    log: Callable[[str], None]
    resume: bool = False
    address: str | None = None
    num_cpus: float | None = None
    verbose: bool = False

    def save_meta(self) -> None:
        atomic_write(self.sweep_dir / "sweep.json", json.dumps(self.meta, indent=2, default=str) + "\n")

    @property
    def experiments(self) -> list[str]:
        return self.meta.setdefault("tune_experiments", [])


def run_sweep(space_file: str | Path, overrides: list[str] | tuple = (), *,
              address: str | None = None, resume: bool = False, output_dir: str | None = None,
              name: str | None = None, dry_run: bool = False, num_cpus: float | None = None,
              report: bool = True, log: Callable[[str], None] | None = None,
              verbose: bool = False, allow_outside: bool = True, yes: bool = True) -> int:
    """Validate, then run (or resume) a sweep. Returns a process exit code: 0; 1 when every trial
    failed; 130 when the sweep was interrupted and can be resumed. Raises ConfigError for bad
    input, before Ray starts. Ray's own output goes to <sweep_dir>/ray.log unless ``verbose``.
    ``allow_outside``/``yes`` are the CLI's ``--allow-outside`` (a sweep dir outside the working
    directory) and ``--yes`` (start a large sweep without asking); callers in code decide."""
    from ablate.config import check_output_dir

    log = console = Console(log)
    check_num_cpus(num_cpus)
    space = load_search_space(space_file, extra_overrides=overrides, name=name,
                              output_dir=output_dir)
    specs = plan_trials(space)
    sweep_dir = check_output_dir(Path(space.output_dir) / space.name, "output_dir", allow_outside)
    check_machine(space, address, num_cpus)
    preflight(space)  # every trial's config composed and validated before Ray starts
    if dry_run:
        log(describe(space, specs, sweep_dir))
        if space.trainable == DEFAULT_TRAINABLE and space.resources.workers == 1:
            from ablate.sweep.estimate import estimate_line

            log("calibrating (a 2-step run of the first trial, nothing kept) ...")
            log(estimate_line(space, specs, num_cpus))
        else:
            log("estimated wall time: not calibrated (only single-worker runs of the default "
                "trainable are)")
        return 0
    confirm_size(space, specs, yes, log)
    if address:
        check_address(address)
        _token_auth_for_attach(log)  # before anything imports Ray
    _check_sweep_dir(space, sweep_dir, resume)
    trainables.load(space.trainable)  # importable and callable, before Ray starts
    _open_sweep_dir(sweep_dir, resume, address, log)
    meta = _sweep_meta(space, specs, sweep_dir, resume)
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # evals are not every step
    trial_ctx = {"metric": space.metric, "seeds": space.seeds, "optuna": space.is_optuna,
                 "base_overrides": space.run_overrides(),
                 "specs": {s["key"]: s for s in specs} if specs is not None else None,
                 "conditions": {k: p.when for k, p in space.params.items() if p.when},
                 "name": space.name, "sweep_dir": str(sweep_dir),
                 "trainable": space.trainable, "env": worker_env(space, sweep_dir),
                 "cwd": os.getcwd()}
    run = SweepRun(space, specs, sweep_dir, meta, trial_ctx, log, resume=resume,
                   address=address, num_cpus=num_cpus, verbose=verbose)
    # one W&B service for all trials: the local Ray's workers inherit its address (a cluster's
    # workers could not reach it, so they start their own)
    wb = trial_ctx["env"]["WANDB_MODE"] if address is None else "disabled"
    with use_console(console), (nullcontext() if verbose else
                                redirect_output(sweep_dir / RAY_LOG, console)), shared_service(wb):
        if not verbose:
            log(f"Ray's output: {sweep_dir / RAY_LOG} (--verbose shows it here)")
        t0 = _run_tune(run)
    return _finish(run, t0, report=report, output_dir=output_dir, name=name)


def _check_sweep_dir(space: SearchSpace, sweep_dir: Path, resume: bool) -> None:
    """--resume needs the sweep and the same search space; a new sweep needs an empty dir."""
    if resume:
        if not (sweep_dir / "sweep.json").is_file():
            raise ConfigError(f"--resume: no sweep to resume at {sweep_dir} (no sweep.json); "
                              f"run without --resume to start it")
        diff = space_changes(sweep_dir, space)
        if diff:
            raise ConfigError(f"--resume: the search space differs from the one the sweep "
                              f"started with (fields: {', '.join(diff)}); resume it unchanged "
                              f"or start a new sweep with --name")
    elif any((sweep_dir / f).exists() for f in ("sweep.json", "tune")):
        raise ConfigError(f"sweep dir {sweep_dir} already holds a sweep; pass --resume to continue "
                          f"it, or --name/--output-dir for a new one")


def _open_sweep_dir(sweep_dir: Path, resume: bool, address: str | None,
                    log: Callable[[str], None]) -> None:
    """Create the dir; on resume, stop what a killed driver's Ray left and mark cut-off runs."""
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "trials").mkdir(exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output_dir: cannot create {sweep_dir} ({e.strerror or e}); allowed: "
                          "a writable directory") from None
    if not resume:
        return
    if not address:
        cleanup_leftovers(sweep_dir, log)
    n = mark_interrupted_runs(sweep_dir)
    if n:
        log(f"{n} run(s) of the earlier attempt were cut off mid-run (summary: interrupted)")


def _sweep_meta(space: SearchSpace, specs: list[dict] | None, sweep_dir: Path, resume: bool) -> dict:
    """sweep.json's content (kept from the earlier attempt on resume); a new sweep also writes its
    resolved search space."""
    meta = read_json(sweep_dir / "sweep.json") if resume else {}
    meta.update({
        "name": space.name, "description": space.description,
        "search_space_file": str(Path(space.source).resolve()) if space.source else None,
        "metric": space.metric, "mode": space.mode, "algorithm": space.search.algorithm,
        "scheduler": space.scheduler.type if space.scheduler else None,
        "scheduler_config": space.scheduler.model_dump() if space.scheduler else None,
        "max_t": _budget(space), "seeds": space.seeds, "num_samples": space.search.num_samples,
        "num_planned_trials": len(specs) if specs is not None else None,
        "started": meta.get("started") or _now(), "finished": None, "status": "running",
        "ablate_version": ablate.__version__, "git_commit": git_commit(),
        "trainable": space.trainable, "optuna_journal": "optuna.journal" if space.is_optuna else None,
        "resumed": (meta.get("resumed") or 0) + (1 if resume else 0),
        "tune_experiments": list(meta.get("tune_experiments") or []),
    })
    if not resume:
        header = (f"# resolved search space of sweep {space.name}"
                  + (f" (from {space.source})" if space.source else "") + "\n")
        (sweep_dir / "search_space.yaml").write_text(
            header + yaml.safe_dump(space.to_dict(), sort_keys=False), encoding="utf-8")
    return meta


def mark_interrupted_runs(sweep_dir: Path) -> int:
    """Run dirs whose summary.json still says "running" (their process is gone) → "interrupted"."""
    why = "the run's process ended before it did (sweep killed or interrupted); --resume continues it"
    return sum(mark_interrupted(p.parent, why) for p in (sweep_dir / "trials").glob("**/summary.json"))


def _trial_label(ctx: dict) -> Callable:
    def label(trial) -> str:
        tr = Trial.of(dict(trial.config or {}), ctx, str(trial.trial_id), Path(), None)
        combo = combo_key(tr.assign)
        return combo if tr.per_seed_dirs else f"{combo} seed={tr.seeds[0]}"
    return label


def _run_tune(run: SweepRun) -> float:
    """Start (or attach to) Ray, restore or create the Tuner, fit, and record how trials ended;
    returns when it started."""
    import ray

    started_ray = _init_ray(run)
    t0 = time.time()
    try:
        _check_fits(run.space, ray.cluster_resources(), "the Ray cluster", "or a larger cluster")
        trainable = _trainable(run)
        tuner, experiment = _restore_tuner(run, trainable)
        if tuner is None:
            tuner, experiment = _new_tuner(run, trainable)
        run.save_meta()
        run.log(f"sweep {run.space.name}: {run.sweep_dir}")
        if tuner is not None:
            tuner.fit()  # trial failures are recorded, never raised
            settle(run.sweep_dir, _saved_trials(run.sweep_dir / experiment), run.trial_ctx,
                   experiment)
    finally:
        if started_ray:
            ray.shutdown()
            mark_shut_down(run.sweep_dir)
        mark_interrupted_runs(run.sweep_dir)
    return t0


def _trainable(run: SweepRun):
    """run_trial with the trial context and the per-trial resources (a multi-worker trial only
    drives its Ray Train workers, which reserve their own)."""
    from ray import tune

    from ablate.sweep.trial import run_trial

    res = run.space.resources
    multi = res.workers > 1
    return tune.with_resources(tune.with_parameters(run_trial, ctx=run.trial_ctx),
                               {"cpu": DRIVER_CPU if multi else float(res.cpu),
                                "gpu": 0.0 if multi else float(res.gpu)})


def _restore_tuner(run: SweepRun, trainable) -> tuple[Any, str | None]:
    """On --resume, Tune's own state of the last experiment (Tuner.restore), when it saved one."""
    from ray import tune

    if not (run.resume and run.experiments):
        return None, None
    last = run.sweep_dir / run.experiments[-1]
    if not tune.Tuner.can_restore(str(last)):
        run.log(f"no saved Tune state at {last} (the driver died before Tune saved it); "
                f"resuming from the run records")
        return None, None
    try:
        # errored trials restart from their last checkpoint: an infrastructure failure
        # continues; one that failed in its own code replays that failure
        tuner = tune.Tuner.restore(str(last), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, restart_errored=False)
    except Exception as e:  # noqa: BLE001 - Ray's error for a damaged state: the run records stand
        run.log(f"Tune state at {last} unusable ({type(e).__name__}: {e}); resuming from the "
                f"run records")
        return None, None
    run.log(f"resuming Tune experiment {last}")
    return tuner, run.experiments[-1]


def _left_to_run(run: SweepRun) -> tuple[list[dict] | None, int]:
    """(grid/random trials still to run, Optuna proposals still to make) of a sweep whose Tune
    state is missing: trials whose runs are not all done (their records) are removed and rerun
    (without Tune's state they have no checkpoint to continue from)."""
    rows = read_trials(run.sweep_dir)
    undone = sorted({r["tune_trial_id"] for r in rows if not is_done(r)})
    for tid in undone:
        shutil.rmtree(run.sweep_dir / "trials" / tid, ignore_errors=True)
    if undone:
        run.log(f"{len(undone)} trial(s) of the earlier attempt did not end; they run again")
    done = [r for r in rows if r["tune_trial_id"] not in undone]
    specs, space = run.specs, run.space
    if specs is not None:
        keys = {r["key"] for r in done}
        todo = [s for s in specs if s["key"] not in keys]
        run.log(f"{len(specs) - len(todo)} of {len(specs)} trials already measured; "
                f"{len(todo)} to run")
        return todo, 1
    n_done = len({r["tune_trial_id"] for r in done})
    num_samples = max(0, int(space.search.num_samples or 0) - n_done)
    run.log(f"{n_done} of {space.search.num_samples} Optuna proposals already measured; "
            f"{num_samples} to run")
    return None, num_samples


def _new_tuner(run: SweepRun, trainable) -> tuple[Any, str | None]:
    """A Tuner for what is left (everything on a fresh sweep), in a new experiment dir."""
    todo, num_samples = (_left_to_run(run) if run.resume
                         else (run.specs, int(run.space.search.num_samples or 0)))
    if not (todo if todo is not None else num_samples):
        run.log("nothing left to run")
        return None, None
    experiment = f"tune-{len(run.experiments) + 1}" if run.experiments else "tune"
    while (run.sweep_dir / experiment).exists():
        experiment += "x"
    run.experiments.append(experiment)
    return _tuner(run, trainable, experiment, todo, num_samples), experiment


def _tuner(run: SweepRun, trainable, experiment: str, todo: list[dict] | None, num_samples: int):
    from ray import tune

    from ablate.sweep.trial import make_no_retry_callback

    space, sweep_dir = run.space, run.sweep_dir
    callbacks = [make_no_retry_callback(),
                 make_console_callback(metric=space.metric, mode=space.mode,
                                       label=_trial_label(run.trial_ctx),
                                       total=len(todo) if todo is not None else num_samples,
                                       sweep_dir=str(sweep_dir), steps=_budget(space))]
    return tune.Tuner(
        trainable,
        # grid/random: one Tune grid axis over the planned (configuration, seed) keys; each trial
        # reads its spec (assignment + seed) from its key
        param_space=({"trial": tune.grid_search([s["key"] for s in todo])}
                     if todo is not None else None),
        tune_config=tune.TuneConfig(
            metric=space.metric, mode=space.mode, search_alg=_make_search(space, sweep_dir),
            scheduler=_make_scheduler(space),
            num_samples=num_samples if run.specs is None else 1,
            max_concurrent_trials=space.max_concurrent, reuse_actors=True,
            trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=experiment, storage_path=str(sweep_dir),
            failure_config=tune.FailureConfig(max_failures=space.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=1,  # Tune's own status table: ray.log, or the console with --verbose
            callbacks=callbacks))


def _finish(run: SweepRun, t0: float, *, report: bool, output_dir: str | None,
            name: str | None) -> int:
    """Runs by status (the run store's rows; planned runs without a run dir yet are pending) into
    sweep.json, a summary with the commonest errors, and the exit code."""
    space, log, meta = run.space, run.log, run.meta
    rows = read_trials(run.sweep_dir)
    counts = dict(Counter(r["status"] if r["status"] in FINAL_STATUSES else "running"
                          for r in rows))
    if space.planned_runs(run.specs) > len(rows):
        counts["pending"] = space.planned_runs(run.specs) - len(rows)
    unfinished = counts.get("running", 0) + counts.get("pending", 0)
    total = sum(counts.values())
    failed = counts.get("failed", 0)
    all_failed = total > 0 and failed == total
    meta.update(status="interrupted" if unfinished else ("failed" if all_failed else "finished"),
                finished=None if unfinished else _now(), counts=counts, num_trials=total,
                num_failed=failed, wall_s=round(time.time() - t0, 1))
    run.save_meta()
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    log(f"sweep {space.name}: {summary} of {total} trial(s) ({meta['wall_s']:.0f} s)"
        + (f"; {failed} of {total} failed" if failed else ""))
    errors = Counter(str(r.get("error") or "unknown error")[:200] for r in rows
                     if r["status"] == "failed")
    for e, n in errors.most_common(5):
        log(f"  {n} x {e}")
    log(f"run records: {run.sweep_dir / 'trials'} (each run's summary.json)")
    if all_failed:
        log(f"every trial failed: no result to report (exit code {EXIT_ALL_FAILED})")
        return EXIT_ALL_FAILED
    if unfinished:
        log(f"sweep interrupted with {unfinished} unfinished trial(s); continue with: "
            f"ablate sweep {space.source or '<file>'} --resume"
            + (f" --output-dir {space.output_dir}" if output_dir else "")
            + (f" --name {space.name}" if name else ""))
        return EXIT_INTERRUPTED
    if report:
        path = generate_report_safely(run.sweep_dir, space.name, log)
        if path is not None:
            meta["report"] = str(path)
            run.save_meta()
            log(f"report: {path}")
    return 0
