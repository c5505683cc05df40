"""Run a validated search space with Ray Tune (+ Optuna): the driver side of `ablate sweep`.

Sweep directory ``<output_dir>/<name>/``: sweep.json, search_space.yaml (resolved), trials.jsonl,
trials/<trial_id>/ (run stores), optuna.journal (Optuna searches), tune*/ (Tune experiment dirs).

Seeds: grid and random searches make each (configuration, seed) its own Tune trial, so replicates
run in parallel. Optuna searches make each Optuna proposal one Tune trial that runs every seed in
turn (run dirs trials/<id>/seed_<s>/) and reports the mean over seeds as the objective, so Optuna
only ever sees seed-aggregated values; with ASHA, rungs judge a proposal on its first seed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import yaml

import ablate
from ablate.errors import ConfigError
from ablate.sweep.console import (RAY_LOG, Console, make_console_callback, redirect_output,
                                  use_console)
from ablate.sweep.ledger import Ledger, _read_json, is_done, make_callback
from ablate.sweep.ray_session import cleanup_leftovers, mark_shut_down, record_session
from ablate.sweep.space import (DEFAULT_TRAINABLE, OptunaSpace, SearchSpace, active_assignment,
                                combo_key, conditions, load_search_space, plan_trials)

REPO_ROOT = Path(ablate.__file__).resolve().parent.parent
EXIT_INTERRUPTED = 130
EXIT_ALL_FAILED = 1
# never sent to workers through runtime_env (Ray logs env_vars in plain text): local workers
# inherit the driver's environment; on a cluster, give the nodes their own credentials
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL", "AUTH")


def is_secret(name: str) -> bool:
    up = name.upper()
    return any(w in up for w in _SECRET_WORDS)


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)




def wandb_mode(space: SearchSpace) -> str:
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    mode = space.wandb.get("mode", "auto")
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if "api.wandb.ai" in (Path.home() / ".netrc").read_text():
            return "online"
    except OSError:
        pass
    return "offline"


def worker_env(space: SearchSpace, sweep_dir: Path) -> dict[str, str]:
    """Environment every trial process gets (absolute paths: Tune changes the trial cwd). No
    credential: it travels in runtime_env, which Ray writes to its logs (see is_secret)."""
    from ablate.registry import conf_dir

    env = {
        "WANDB_MODE": wandb_mode(space),
        "WANDB_DIR": str(Path(os.environ["WANDB_DIR"]).resolve()) if os.environ.get("WANDB_DIR")
        else str(sweep_dir),
        "WANDB_PROJECT": os.environ.get("WANDB_PROJECT") or str(space.wandb["project"]),
        "WANDB_SILENT": os.environ.get("WANDB_SILENT", "true"),
        "ABLATE_CONF_DIR": str(conf_dir()),
    }
    if space.wandb.get("entity") and not os.environ.get("WANDB_ENTITY"):
        env["WANDB_ENTITY"] = str(space.wandb["entity"])
    for k in ("ABLATE_CACHE", "ABLATE_PLUGINS", "HF_HOME", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM",
              "WANDB_ENTITY", "WANDB_BASE_URL"):
        if os.environ.get(k):
            env[k] = os.environ[k]
    if env.get("ABLATE_CACHE"):
        env["ABLATE_CACHE"] = str(Path(env["ABLATE_CACHE"]).resolve())
    paths = [str(REPO_ROOT), os.getcwd()] + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return {k: v for k, v in env.items() if not is_secret(k)}


def check_trainable(space: SearchSpace) -> Callable:
    from ablate.registry import import_target

    fn = import_target(space.trainable, "trainable")
    if not callable(fn):
        raise ConfigError(f"trainable: {space.trainable} is not callable")
    return fn


def preflight(space: SearchSpace, limit: int = 48) -> int:
    """Compose and fully validate every trial's config (ablate.sweep.preflight) before Ray starts."""
    from ablate.sweep.preflight import preflight as validate_trials

    return validate_trials(space)


def describe(space: SearchSpace, specs: list[dict] | None, sweep_dir: Path) -> str:
    lines = [f"sweep {space.name}: {space.algorithm}"
             + (f", scheduler {space.scheduler['type']} (max_t={space.scheduler['max_t']:g})"
                if space.scheduler else "")
             + f", metric {space.metric} ({space.mode}), seeds {space.seeds}",
             f"sweep dir: {sweep_dir}", f"trainable: {space.trainable}",
             f"base overrides: {' '.join(space.base_overrides) or '(none)'}"]
    if specs is not None:
        lines.append(f"{len(specs)} trials:")
        for i, s in enumerate(specs):
            lines.append(f"  [{i:>3}] seed={s['seed']:<3} {s['combo']}")
    else:
        axes = [f"{a} in {o}" for a, o in space.categorical_axes()]
        axes += [f"{k}: {p.to_dict()}" for k, p in space.params.items()]
        lines.append(f"{space.num_samples} Optuna proposals x {len(space.seeds)} seed(s), run in "
                     f"one trial per proposal; axes:")
        lines += [f"  {a}" for a in axes]
    return "\n".join(lines)


LARGE_SWEEP = 100  # trials: more asks for --yes (or a "y" at a terminal)
ATTACH_TIMEOUT_S = 5.0


def check_num_cpus(num_cpus: float | None) -> None:
    if num_cpus is not None and not (isinstance(num_cpus, (int, float)) and
                                     math.isfinite(num_cpus) and 0 < num_cpus <= 4096):
        raise ConfigError(f"--num-cpus: got {num_cpus!r}; allowed: a number in (0, 4096], or "
                          "leave it out for all cores")


def check_machine(space: SearchSpace, address: str | None, num_cpus: float | None) -> None:
    """A local Ray gets this machine: a trial must fit it (a cluster is checked once attached)."""
    if address:
        return
    w = int(space.resources.get("workers", 1))
    need_cpu = space.resources["cpu"] * w
    have = float(num_cpus) if num_cpus is not None else float(os.cpu_count() or 1)
    if need_cpu > have:
        raise ConfigError(f"resources.cpu: each trial needs {need_cpu:g} CPU(s) but the local Ray "
                          f"gets {have:g}; allowed: resources.cpu x workers <= {have:g} (or "
                          "--num-cpus N, or --address of a cluster)")
    if space.resources["gpu"] > 0:
        import torch

        n = torch.cuda.device_count()
        if space.resources["gpu"] * w > n:
            raise ConfigError(f"resources.gpu: each trial needs {space.resources['gpu'] * w:g} "
                              f"GPU(s) but this machine has {n}; allowed: <= {n} (or --address "
                              "of a cluster with GPUs)")


def confirm_size(space: SearchSpace, specs: list[dict] | None, yes: bool,
                 log: Callable[[str], None]) -> None:
    """State a large sweep's size; without ``--yes`` ask at a terminal, refuse otherwise."""
    n = len(specs) if specs is not None else int(space.num_samples or 0) * len(space.seeds)
    if n <= LARGE_SWEEP:
        return
    log(f"sweep {space.name}: {n} trials")
    if yes:
        return
    if sys.stdin is not None and sys.stdin.isatty():
        answer = input(f"start {n} trials? [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            return
    raise ConfigError(f"sweep: {n} trials (more than {LARGE_SWEEP}); allowed: pass --yes to start "
                      "it, or shrink seeds / num_samples / the axes")


def _address_host_port(address: str) -> tuple[str, int] | None:
    if address == "auto":
        found = os.environ.get("RAY_ADDRESS")
        if not found:
            try:
                found = Path("/tmp/ray/ray_current_cluster").read_text().strip()
            except OSError:
                raise ConfigError("--address: got 'auto' but no Ray cluster runs on this machine; "
                                  "allowed: auto after `ray start --head`, or HOST:PORT") from None
        address = found
    address = address.split("://", 1)[-1]
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        if address.startswith("ray://") or address in ("local",):
            return None
        raise ConfigError(f"--address: got {address!r}; allowed: auto or HOST:PORT")
    return host or "127.0.0.1", int(port)


def check_address(address: str) -> None:
    """Something answers at the cluster's address within ATTACH_TIMEOUT_S (Ray itself would
    retry for minutes without a word)."""
    import socket

    hp = _address_host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=ATTACH_TIMEOUT_S):
            pass
    except OSError as e:
        raise ConfigError(f"--address: nothing answers at {hp[0]}:{hp[1]} within "
                          f"{ATTACH_TIMEOUT_S:g} s ({e.strerror or e}); allowed: the address of a "
                          "running Ray head (`ray start --head`), or auto") from None


def _budget(space: SearchSpace) -> float | None:
    """The full budget in steps: the scheduler's max_t, else train.steps from base_overrides."""
    if space.max_t is not None:
        return space.max_t
    steps = None
    for o in space.base_overrides:
        k, _, v = o.lstrip("+").partition("=")
        if k == "train.steps":
            try:
                steps = int(v)
            except ValueError:
                steps = None
    return steps


def _stored_space(sweep_dir: Path) -> dict | None:
    try:
        return yaml.safe_load((sweep_dir / "search_space.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def _space_diff(a: dict, b: dict) -> list[str]:
    ignore = {"output_dir", "description", "max_failures"}
    keys = (set(a) | set(b)) - ignore
    return sorted(k for k in keys if a.get(k) != b.get(k))


def _trial_dirname(trial) -> str:
    return str(trial.trial_id)


def _grid_param_space(space: SearchSpace, todo: list[dict]) -> dict:
    """One Tune grid axis over the planned (configuration, seed) keys: Tune's own grid search runs
    them; each trial reads its spec (assignment + seed) from the key."""
    from ray import tune

    return {"trial": tune.grid_search([s["key"] for s in todo])}


def _progress_reporter(space: SearchSpace, verbose: bool):
    """Tune's status table: on the console with --verbose, else into ray.log (fd 2 is there)."""
    from ray.tune import CLIReporter

    class SafeCLIReporter(CLIReporter):
        """A progress table that can never take the sweep down."""

        def report(self, *args, **kwargs):
            try:
                super().report(*args, **kwargs)
            except Exception as e:  # noqa: BLE001
                print(f"(progress table unavailable: {type(e).__name__}: {e})", flush=True)

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the new output engine ignores custom reporters
    params = {"trial": "trial"} if not space.is_optuna else {a: a for a in space.swept_keys()}
    metrics = {space.metric: space.metric, "step": "step", "training_iteration": "iter",
               "time_total_s": "time (s)"}
    return SafeCLIReporter(parameter_columns=params, metric_columns=metrics, max_column_length=28,
                           max_report_frequency=10 if verbose else 60, max_progress_rows=40)


def _make_search(space: SearchSpace, sweep_dir: Path):
    if not space.is_optuna:
        return None
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from ray.tune.search.optuna import OptunaSearch

    seed = space.search_seed
    if space.algorithm == "optuna_tpe":
        sampler = optuna.samplers.TPESampler(seed=seed)
    elif space.algorithm == "optuna_random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    storage = JournalStorage(JournalFileBackend(str(sweep_dir / "optuna.journal")))
    return OptunaSearch(space=OptunaSpace(space), metric=space.metric, mode=space.mode,
                        sampler=sampler, study_name=space.name, storage=storage)


def _make_scheduler(space: SearchSpace):
    if not space.scheduler:
        return None
    from ray.tune.schedulers import ASHAScheduler

    s = space.scheduler
    # Rungs strictly below max_t and no stop *at* max_t: a trial that survives its rungs ends by
    # itself, so its run store (summary.json, final eval) is complete.
    return ASHAScheduler(time_attr=s["time_attr"], max_t=float(s["max_t"]) * (1 - 1e-9),
                         grace_period=s["grace_period"], reduction_factor=s["reduction_factor"],
                         brackets=int(s["brackets"]), stop_last_trials=False)


def _token_auth_for_attach() -> None:
    """Attaching to a cluster: use token auth when a Ray token is on this machine (what `ray start`
    does for the head; a driver connecting by address does not do it by itself in Ray 2.60)."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    if "ray" in sys.modules:  # Ray caches its config at import: refresh it
        try:
            from ray._private.authentication.authentication_token_setup import _enable_token_auth
            _enable_token_auth()
        except Exception:  # noqa: BLE001 - best effort; Ray then reports the auth error itself
            pass


def _init_ray(address: str | None, num_cpus: float | None, env: dict, space: SearchSpace,
              log: Callable[[str], None], verbose: bool = False) -> bool:
    """Start or attach to Ray; returns True when this call started it (and must shut it down)."""
    import ray

    if ray.is_initialized():
        log("using the Ray instance already initialised in this process")
        return False
    runtime_env = {"env_vars": env}
    if address:
        log(f"attaching to Ray cluster at {address}")

        ray.init(address=address, runtime_env=runtime_env, log_to_driver=verbose)
    else:
        cpus = num_cpus or max(os.cpu_count() or 1, math.ceil(
            space.resources["cpu"] * int(space.resources.get("workers", 1))))
        ray.init(address="local", num_cpus=int(math.ceil(cpus)), include_dashboard=False,
                 runtime_env=runtime_env, log_to_driver=verbose)
    return True


DRIVER_CPU = 0.01  # what a multi-worker trial's own process reserves (Tune needs a non-empty bundle)


def _check_cluster(space: SearchSpace) -> None:
    import ray

    res = ray.cluster_resources()
    w = int(space.resources.get("workers", 1))
    for k, need in (("CPU", space.resources["cpu"] * w), ("GPU", space.resources["gpu"] * w)):
        have = float(res.get(k, 0))
        if need > 0 and have < need:
            raise ConfigError(f"resources.{k.lower()}: each trial needs {need:g} but the Ray "
                              f"cluster has {have:g} {k}(s)")


def _saved_trials(experiment_dir: Path) -> list:
    """Tune's trials as saved on disk. After an interrupt the live Trial objects read TERMINATED
    (Tune stops them on cleanup); the saved state keeps them RUNNING/PENDING, i.e. resumable."""
    import logging

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
    try:
        from ablate.report import generate_report  # built in parallel; optional here
    except Exception as e:  # noqa: BLE001
        log(f"report: skipped (ablate.report.generate_report not importable: {e})")
        return None
    out = Path("reports") / name
    try:
        res = generate_report(sweep_dir, out_dir=out, log=log)
    except Exception as e:  # noqa: BLE001 - the trials table is written; the report is extra
        log(f"report: failed ({type(e).__name__}: {' '.join(str(e).split())[:500]})")
        return None
    if isinstance(res, (str, Path)):
        return Path(res)
    return out


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

    console = Console(log)
    log = console
    check_num_cpus(num_cpus)
    space = load_search_space(space_file, extra_overrides=overrides, name=name,
                              output_dir=output_dir)
    specs = plan_trials(space)
    sweep_dir = check_output_dir(Path(space.output_dir) / space.name, "output_dir", allow_outside)
    check_machine(space, address, num_cpus)
    if space.trainable == DEFAULT_TRAINABLE:
        preflight(space)

    if dry_run:
        log(describe(space, specs, sweep_dir))
        return 0
    confirm_size(space, specs, yes, log)
    if address:
        check_address(address)

    # ---- the sweep directory: fresh, or the one being resumed
    resolved = space.to_dict()
    meta_path = sweep_dir / "sweep.json"
    if resume:
        if not meta_path.is_file():
            raise ConfigError(f"--resume: no sweep to resume at {sweep_dir} (no sweep.json); "
                              f"run without --resume to start it")
        stored = _stored_space(sweep_dir)
        if isinstance(stored, dict):
            diff = _space_diff(stored, json.loads(json.dumps(resolved, default=str)))
            if diff:
                raise ConfigError(f"--resume: the search space differs from the one the sweep "
                                  f"started with (fields: {', '.join(diff)}); resume it unchanged "
                                  f"or start a new sweep with --name")
    elif sweep_dir.exists() and any((sweep_dir / f).exists()
                                    for f in ("sweep.json", "trials.jsonl", "tune")):
        raise ConfigError(f"sweep dir {sweep_dir} already holds a sweep; pass --resume to continue "
                          f"it, or --name/--output-dir for a new one")
    check_trainable(space)
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "trials").mkdir(exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output_dir: cannot create {sweep_dir} ({e.strerror or e}); allowed: "
                          "a writable directory") from None
    if resume:
        if not address:
            cleanup_leftovers(sweep_dir, log)
        n = mark_interrupted_runs(sweep_dir)
        if n:
            log(f"{n} run(s) of the earlier attempt were cut off mid-run (summary: interrupted)")

    meta = _read_json(meta_path) if resume else {}
    experiments: list[str] = list(meta.get("tune_experiments") or [])
    meta.update({
        "name": space.name, "description": space.description,
        "search_space_file": str(Path(space.source).resolve()) if space.source else None,
        "metric": space.metric, "mode": space.mode, "algorithm": space.algorithm,
        "scheduler": space.scheduler["type"] if space.scheduler else None,
        "scheduler_config": space.scheduler, "max_t": _budget(space),
        "seeds": space.seeds, "num_samples": space.num_samples,
        "num_planned_trials": len(specs) if specs is not None else None,
        "started": meta.get("started") or _now(), "finished": None, "status": "running",
        "ablate_version": ablate.__version__, "git_commit": _git_commit(),
        "trainable": space.trainable, "optuna_journal": "optuna.journal" if space.is_optuna else None,
        "resumed": (meta.get("resumed") or 0) + (1 if resume else 0),
    })
    if not resume:
        header = (f"# resolved search space of sweep {space.name}"
                  + (f" (from {space.source})" if space.source else "") + "\n")
        (sweep_dir / "search_space.yaml").write_text(
            header + yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")

    env = worker_env(space, sweep_dir)
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # evals are not every step
    ledger_ctx = {"metric": space.metric, "seeds": space.seeds, "optuna": space.is_optuna,
                  "base_overrides": space.run_overrides(),
                  "specs": {s["key"]: s for s in specs} if specs is not None else None,
                  "conditions": conditions(space)}
    trial_ctx = {**ledger_ctx, "name": space.name, "sweep_dir": str(sweep_dir),
                 "trainable": space.trainable, "env": env, "cwd": os.getcwd()}

    if address:
        _token_auth_for_attach()
    import ray
    from ray import tune

    with use_console(console), redirect_output(sweep_dir / RAY_LOG, console, enabled=not verbose):
        if not verbose:
            log(f"Ray's output: {sweep_dir / RAY_LOG} (--verbose shows it here)")
        result = _run_tune(space, specs, sweep_dir, meta, meta_path, experiments, ledger_ctx,
                           trial_ctx, env, resume=resume, address=address, num_cpus=num_cpus,
                           log=log, verbose=verbose, ray=ray, tune=tune)
    ledger, t0 = result
    return _finish(space, sweep_dir, meta, meta_path, ledger, t0, log=log, report=report,
                   output_dir=output_dir, name=name)


def mark_interrupted_runs(sweep_dir: Path) -> int:
    """Run dirs whose summary.json still says "running" (their process is gone) → "interrupted"."""
    from ablate.tracking.run_store import mark_interrupted

    n = 0
    for p in sorted((sweep_dir / "trials").glob("**/summary.json")):
        n += mark_interrupted(p.parent, "the run's process ended before it did (sweep killed or "
                                        "interrupted); --resume continues it")
    return n


def _trial_label(ctx: dict) -> Callable:
    specs = ctx.get("specs")

    def label(trial) -> str:
        cfg = dict(trial.config or {})
        if specs is not None and "trial" in cfg:
            s = specs.get(cfg["trial"]) or {}
            return f"{s.get('combo') or '(base)'} seed={s.get('seed')}"
        a = active_assignment(cfg, ctx.get("conditions") or {})
        return combo_key(a) or "(base)"
    return label


def _run_tune(space, specs, sweep_dir, meta, meta_path, experiments, ledger_ctx, trial_ctx, env, *,
              resume, address, num_cpus, log, verbose, ray, tune):
    started_ray = _init_ray(address, num_cpus, env, space, log, verbose=verbose)
    if started_ray and not address:
        record_session(sweep_dir)
    t0 = time.time()
    try:
        _check_cluster(space)
        from ablate.sweep.trial import make_no_retry_callback, run_trial

        # a multi-worker trial only drives its Ray Train workers, which reserve their own resources
        multi = int(space.resources.get("workers", 1)) > 1
        trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=trial_ctx),
                                        {"cpu": DRIVER_CPU if multi else space.resources["cpu"],
                                         "gpu": 0.0 if multi else space.resources["gpu"]})
        tuner = None
        experiment = None
        if resume and experiments:
            last = sweep_dir / experiments[-1]
            if tune.Tuner.can_restore(str(last)):
                try:
                    # errored trials restart from their last checkpoint: an infrastructure
                    # failure continues; one that failed in its own code replays that failure
                    tuner = tune.Tuner.restore(str(last), trainable=trainable,
                                               resume_unfinished=True, resume_errored=True,
                                               restart_errored=False)
                    experiment = experiments[-1]
                    log(f"resuming Tune experiment {last}")
                except Exception as e:  # noqa: BLE001 - fall back to the trials.jsonl ledger
                    log(f"Tune state at {last} unusable ({type(e).__name__}: {e}); resuming from "
                        f"trials.jsonl instead")
                    tuner = None
            else:
                log(f"no restorable Tune state at {last}; resuming from trials.jsonl")

        todo = specs
        if tuner is None:
            ledger = Ledger(sweep_dir, ledger_ctx).load()
            num_samples = 1
            if resume:
                ledger.drop_pending_placeholders()
                recovered = ledger.recover()
                if recovered:
                    log(f"recovered {recovered} ended run(s) from the trials' outcome files")
                # an attempt that did not end (every seed of a proposal) reruns below under a new
                # trial id; its rows go (its directory stays on disk)
                by_trial: dict[str, list] = {}
                for k, r in ledger.rows.items():
                    by_trial.setdefault(str(r.get("tune_trial_id") or k), []).append(k)
                done_trials = set()
                for tid, keys in by_trial.items():
                    if all(is_done(ledger.rows[k]) for k in keys):
                        done_trials.add(tid)
                    else:
                        for k in keys:
                            del ledger.rows[k]
                ledger.write()
                if specs is not None:
                    done = ledger.finished_keys()
                    todo = [s for s in specs if s["key"] not in done]
                    log(f"{len(specs) - len(todo)} of {len(specs)} trials already measured; "
                        f"{len(todo)} to run")
                else:
                    num_samples = max(0, int(space.num_samples or 0) - len(done_trials))
                    log(f"{len(done_trials)} of {space.num_samples} Optuna proposals already "
                        f"measured; {num_samples} to run")
            elif specs is None:
                num_samples = int(space.num_samples or 0)
            experiment = "tune" if not experiments else f"tune-{len(experiments) + 1}"
            while (sweep_dir / experiment).exists():
                experiment += "x"
            experiments.append(experiment)
            if (todo is not None and todo) or (specs is None and num_samples > 0):
                if todo is not None:
                    ledger.add_pending(todo, experiment)
                    ledger.write()
                tuner = tune.Tuner(
                    trainable,
                    param_space=(_grid_param_space(space, todo) if todo is not None else None),
                    tune_config=tune.TuneConfig(
                        metric=space.metric, mode=space.mode,
                        search_alg=_make_search(space, sweep_dir),
                        scheduler=_make_scheduler(space),
                        num_samples=num_samples if specs is None else 1,
                        max_concurrent_trials=space.max_concurrent,
                        reuse_actors=True, trial_dirname_creator=_trial_dirname),
                    run_config=tune.RunConfig(
                        name=experiment, storage_path=str(sweep_dir),
                        failure_config=tune.FailureConfig(max_failures=space.max_failures),
                        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                        verbose=1, progress_reporter=_progress_reporter(space, verbose),
                        callbacks=[make_no_retry_callback(),
                                   make_callback(Ledger(sweep_dir, ledger_ctx), experiment, todo),
                                   make_console_callback(
                                       metric=space.metric, mode=space.mode,
                                       label=_trial_label(ledger_ctx),
                                       total=len(todo) if todo is not None else num_samples,
                                       sweep_dir=str(sweep_dir))]),
                )
            else:
                log("nothing left to run")
                experiments.pop()
        meta["tune_experiments"] = experiments
        _write_json(meta_path, meta)

        log(f"sweep {space.name}: {sweep_dir}")
        trials = []
        if tuner is not None:
            tuner.fit()  # trial failures are recorded, never raised
            trials = _saved_trials(sweep_dir / (experiment or "tune"))
        # final rewrite of the table from Tune's view of every trial + the trials' outcome files
        ledger = Ledger(sweep_dir, ledger_ctx).load()
        for i, t in enumerate(trials):
            ledger.update_trial(t, experiment or "tune", i)
        ledger.recover()
        if trials and specs is not None:
            have = {r["key"] for r in ledger.rows.values() if not r["trial_id"].startswith("pending-")}
            for rid in [k for k, r in ledger.rows.items()
                        if k.startswith("pending-") and r["key"] in have]:
                del ledger.rows[rid]
        ledger.write()
    finally:
        if started_ray:
            ray.shutdown()
            mark_shut_down(sweep_dir)
        mark_interrupted_runs(sweep_dir)
    return ledger, t0


def _finish(space, sweep_dir, meta, meta_path, ledger, t0, *, log, report, output_dir, name) -> int:
    counts = ledger.counts()
    unfinished = counts.get("running", 0) + counts.get("pending", 0)
    total = sum(counts.values())
    failed = counts.get("failed", 0)
    all_failed = total > 0 and failed == total
    meta.update(status="interrupted" if unfinished else ("failed" if all_failed else "finished"),
                finished=None if unfinished else _now(), counts=counts, num_trials=total,
                num_failed=failed, wall_s=round(time.time() - t0, 1))
    _write_json(meta_path, meta)
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    log(f"sweep {space.name}: {summary} of {total} trial(s) ({meta['wall_s']:.0f} s)"
        + (f"; {failed} of {total} failed" if failed else ""))
    if failed:
        errs: dict[str, int] = {}
        for r in ledger.rows.values():
            if r.get("status") == "failed":
                e = str(r.get("error") or "unknown error")[:200]
                errs[e] = errs.get(e, 0) + 1
        for e, n in sorted(errs.items(), key=lambda kv: -kv[1])[:5]:
            log(f"  {n} x {e}")
    log(f"trials table: {sweep_dir / 'trials.jsonl'}")
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
        path = generate_report_safely(sweep_dir, space.name, log)
        if path is not None:
            meta["report"] = str(path)
            _write_json(meta_path, meta)
            log(f"report: {path}")
    return 0
