"""The function Ray Tune runs for one trial: overrides in, the configured trainable called per seed.

Runs in a Ray worker. It never lets a trainer failure escape as anything but a recorded failure:
the end of every run (seed) is recorded in its own run store, as the ``sweep`` entry of the run
dir's summary.json (``run_record``), before the trial ends; then a failure is re-raised as
``TrialFailed`` so Tune marks the trial ERROR (and Optuna FAIL) while the sweep goes on. A trial
whose runs all ended already (a restored trial that had completed before the driver died) is
replayed from those records, not rerun; the finished seeds of an interrupted one are kept.

Checkpoints: with a trainable that takes ``resume``/``on_step_end`` (the default, run_training),
every ``train.checkpoint_every`` steps and at the last step the trial reports its result together
with a Ray Tune checkpoint (``state.pt``: Trainer.state_dict(), the run store's position, the
reporter's state). When Tune restarts the trial (an infrastructure failure retried under
``max_failures``, or ``--resume`` via Tuner.restore) ``tune.get_checkpoint()`` hands it back and the
run continues from that step, appending to its metrics.jsonl where the checkpoint left it.
Errors in the trial's own code are recorded as failed in the run's record; a Tune retry of such a
trial replays that failure without running anything again.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn

from ablate.spec.targets import import_path
from ablate.sweep.space import active_assignment, assignment_overrides, combo_key
from ablate.tracking import progress
from ablate.tracking.run_store import merge_summary
from ablate.tracking.trials import INFRA, SWEEP_RECORD, joined_error, run_key, trial_runs
from ablate.tracking.wandb_logger import sweep_identity
from ablate.train.distributed import TUNE_TRIAL_ENV
from ablate.train.eval_cache import ENV as EVAL_CACHE_ENV

ENDED = ("finished", "failed")  # a run record's final statuses ("running"/"stopped" are not)
CHECKPOINT_FILE = "state.pt"
OWN_ERROR_KEY = "sweep/own_error"  # in the last result of a trial failing in its own code
COMPLETE_KEY = "sweep/complete"  # present in the last result of a trial that ran to its end


class TrialFailed(RuntimeError):
    """A trial's run raised or produced no finite objective; the message is the recorded error."""


class MetricNotLogged(RuntimeError):
    """The sweep's metric is absent from a trial's results after its first training step."""


def make_no_retry_callback():
    """A Tune Callback: a trial that declares an error in its own code (``OWN_ERROR_KEY`` in its
    last result, sent just before it raises) gets no retries; FailureConfig.max_failures is
    then spent only on infrastructure failures (actor died, node lost)."""
    from ray.tune import Callback

    class NoRetryOnOwnError(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get(OWN_ERROR_KEY):
                trial.max_failures = 0

    return NoRetryOnOwnError()


def _fail(tr: Trial, runs: list[dict], values: list[float]) -> NoReturn:
    """Fail the trial with its runs' errors, first telling the driver (make_no_retry_callback)
    that the failure is the trial's own."""
    from ray import tune

    last = values[-1] if values else None
    # Optuna's searcher needs the metric in every result; without one, Tune's retry replays it
    if last is not None or not tr.ctx.get("optuna"):
        tune.report({**({tr.metric: last} if last is not None else {}), OWN_ERROR_KEY: 1})
    raise TrialFailed(joined_error(runs, len(tr.seeds) > 1) or "failed")


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics as flat plain scalars ({"a": {"b": x}} -> {"a/b": x}; None if not a scalar)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}/") if isinstance(v, Mapping) else {f"{prefix}{k}": _scalar(v)})
    return out


def _scalar(v: Any) -> Any:
    """A reported value as a plain scalar (numpy/torch 0-d values unwrapped), else None."""
    if getattr(v, "ndim", None) == 0 and callable(getattr(v, "item", None)):
        v = v.item()
    return v if v is None or isinstance(v, (bool, int, float, str)) else None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


class _Reporter:
    """Forwards the trainer's metrics to ``ray.tune.report``: flat, scalar, with step, seed and the
    objective carried forward between evals (Tune's schedulers/searchers need it in every result).

    A result is held until the trainer's step ends (``flush``), so a checkpoint taken then goes to
    Tune with that step's result. The metric must appear by the first training step's result
    (evals run before step 1): otherwise the trial fails at once, naming what it does log."""

    def __init__(self, metric: str, seed: int, seed_index: int, require_metric: bool,
                 report: Callable[..., None]):
        self.metric, self.seed, self.seed_index = metric, seed, seed_index
        self.require_metric = require_metric
        self._report = report
        self.last_value: Any = None
        self.last: dict[str, Any] = {}
        self.steps_done = 0
        self.n = 0
        self.pending: dict | None = None
        self.last_out: dict | None = None
        self.metric_checked = False

    _STATE = ("last_value", "last", "steps_done", "n", "metric_checked")  # what a checkpoint keeps

    def state(self) -> dict:
        return {k: getattr(self, k) for k in self._STATE}

    def load_state(self, d: Mapping[str, Any]) -> None:
        self.__dict__.update({k: d[k] for k in self._STATE if k in d})

    def __call__(self, metrics: Mapping[str, Any]) -> None:
        flat = {k: v for k, v in _flat(metrics).items() if v is not None}
        self.n += 1
        step = flat.get("step")
        if not _finite(step):
            step = self.n
            flat["step"] = step
        self.steps_done = max(self.steps_done, int(step))
        if self.metric in flat:
            self.last_value = flat[self.metric]
        elif self.last_value is not None:
            flat[self.metric] = self.last_value
        self.last.update(flat)
        if not self.metric_checked and int(step) >= 1:
            self.metric_checked = True
            if self.last_value is None:
                logged = sorted(k for k in self.last if k not in ("step",))
                raise MetricNotLogged(
                    f"metric {self.metric!r} is not logged by this trial (after step {int(step)} "
                    f"it logs: {', '.join(logged[:30]) or 'nothing'}"
                    f"{', ...' if len(logged) > 30 else ''}); fix `metric:` in the search space")
        if self.require_metric and self.metric not in flat:
            return  # an Optuna searcher needs the objective in every result it sees
        # the metric and step first: Tune's progress table shows the first few reported keys
        out = {k: flat.pop(k) for k in (self.metric, "step") if k in flat}
        out.update(flat, seed=self.seed, **{"sweep/seed_index": self.seed_index})
        self.flush()
        self.pending = out

    def flush(self, checkpoint: Any = None) -> None:
        """Send the held result (with ``checkpoint`` when given) to Tune."""
        out = self.pending if self.pending is not None else self.last_out
        self.pending = None
        if out is not None and (checkpoint is not None or out is not self.last_out):
            self._report(out, checkpoint=checkpoint)
            self.last_out = out


def _accepts_checkpoints(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "resume" in params and "on_step_end" in params


def _checkpoint_hook(rep: _Reporter, seed: int, seed_index: int) -> Callable:
    """The trainer's ``on_step_end``: a Tune checkpoint every ``train.checkpoint_every`` steps and
    at the last one, reported with that step's result; other steps just flush the result."""
    from ray import tune
    import torch

    def on_step_end(trainer, step: int) -> None:
        every = trainer.spec.train.checkpoint_every
        if step != trainer.state.total_steps and not (every > 0 and step % every == 0):
            rep.flush()
            return
        tracker = trainer.tracker
        state = {"seed": seed, "seed_index": seed_index, "step": int(step),
                 "trainer": trainer.state_dict(),
                 "store": tracker.position() if tracker is not None else None,
                 "reporter": rep.state()}
        with tempfile.TemporaryDirectory(prefix="ablate-ckpt-") as d:
            torch.save(state, Path(d) / CHECKPOINT_FILE)
            rep.flush(checkpoint=tune.Checkpoint.from_directory(d))

    return on_step_end


def _progress(state: Mapping[str, Any]) -> tuple[int, int]:
    return int(state.get("seed_index", 0)), int(state.get("step", 0))


def _load_checkpoint(sweep_dir: Path, trial_id: str) -> tuple[dict | None, str | None]:
    """The trial's latest checkpoint: Tune's (a retried or restored trial), or a newer one in the
    trial's own storage dir (Tune's saved experiment state lags behind when the driver is killed
    with -9, so a restored trial may be handed an older checkpoint than it wrote, or none).
    Returns it with a note saying which checkpoint was taken and why (None: nothing to resume)."""
    from ray import tune

    import torch

    skipped: list[str] = []

    def load(d: Path) -> dict | None:
        p = Path(d) / CHECKPOINT_FILE
        if not p.is_file():
            return None
        try:  # our own file, written by _checkpoint_hook (numpy RNG states need full unpickling)
            return torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - a checkpoint cut short by a kill: use an older one
            skipped.append(f"{Path(d).name} unreadable ({type(e).__name__})")
            return None

    best, source = None, None
    ck = tune.get_checkpoint()
    if ck is not None:
        with ck.as_directory() as d:
            best, source = load(Path(d)), "Tune's checkpoint"
    # the trial's storage dirs: <sweep_dir>/<experiment>/<trial_id> (see runner._trial_dirname)
    for d in sorted(sweep_dir.glob(f"*/{trial_id}/checkpoint_*"), key=lambda p: p.name,
                    reverse=True):
        state = load(d)
        if state is not None:
            if best is None or _progress(state) > _progress(best):
                best, source = state, f"{d.name} (the newest readable in the trial's dir)"
            break
    if best is None:
        return None, ("no readable checkpoint (" + "; ".join(skipped) + "): starting over"
                      if skipped else None)
    seed_index, step = _progress(best)
    note = f"resumed from {source} at seed #{seed_index}, step {step}"
    if skipped:
        note += "; skipped " + "; ".join(skipped)
    return best, note


def run_trial(config: dict, ctx: dict) -> None:
    try:
        _run_trial(config, ctx)
    finally:  # stop this process's W&B service now (Ray ends the actor right after the trial,
        # and a service killed first makes wandb's atexit hook print a traceback)
        if "wandb" in sys.modules:  # pinned wandb (pyproject) has teardown
            with contextlib.suppress(Exception):  # cosmetic
                sys.modules["wandb"].teardown()


@dataclass
class Trial:
    """One Tune trial of a sweep: its configuration, seeds, files and the runs done so far."""

    ctx: Mapping[str, Any]
    assign: dict
    seeds: list[int]
    per_seed_dirs: bool  # Optuna: every seed in its own dir under the trial's
    trial_id: str
    sweep_dir: Path
    experiment: str | None = None
    runs: list[dict] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    finals: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, config: Mapping[str, Any], ctx: Mapping[str, Any], trial_id: str,
           sweep_dir: Path, experiment: str | None) -> "Trial":
        """The trial a Tune config stands for: ``{"trial": <spec key>}`` (grid/random: a planned
        spec, one seed) or an Optuna proposal (every seed of ``ctx["seeds"]``, one after another)."""
        if "trial" in config:
            spec = ctx["specs"][config["trial"]]
            return cls(ctx, dict(spec["assign"]), [int(spec["seed"])], False, trial_id, sweep_dir,
                       experiment)
        return cls(ctx, active_assignment(config, ctx.get("conditions") or {}),
                   [int(s) for s in ctx["seeds"]], True, trial_id, sweep_dir, experiment)

    @property
    def metric(self) -> str:
        return self.ctx["metric"]

    @property
    def dir(self) -> Path:
        return self.sweep_dir / "trials" / self.trial_id

    def run_dir(self, seed: int) -> Path:
        return self.dir / f"seed_{seed}" if self.per_seed_dirs else self.dir

    def overrides(self, seed: int) -> list[str]:
        return [*self.ctx["base_overrides"], *assignment_overrides(self.assign), f"seed={seed}"]

    def record(self, run: dict) -> None:
        """Write the run's record, the ``sweep`` entry of its run store's summary.json (created
        when it has none), with the run's place in the sweep (ablate.tracking.trials)."""
        seed, combo = int(run["seed"]), combo_key(self.assign)
        merge_summary(self.run_dir(seed), **{SWEEP_RECORD: {
            **run, "trial_id": self.trial_id, "assign": self.assign, "seeds": self.seeds,
            "seed": seed, "combo": combo, "key": run_key(combo, seed),
            "experiment": run.get("experiment") or self.experiment}})


def _run_trial(config: dict, ctx: dict) -> None:
    """Tune function trainable: the trial ``config`` stands for (``Trial.of``), seed by seed."""
    from ray import tune

    os.environ.update({k: str(v) for k, v in (ctx.get("env") or {}).items()})
    if ctx.get("cwd") and os.path.isdir(ctx["cwd"]):
        os.chdir(ctx["cwd"])  # relative paths in overrides resolve where the sweep was launched
    tc = tune.get_context()
    tr = Trial.of(config, ctx, tc.get_trial_id() or "trial", Path(ctx["sweep_dir"]),
                   tc.get_experiment_name())
    os.environ[EVAL_CACHE_ENV] = str(tr.sweep_dir / "eval_cache")  # evals shared across the arms
    os.environ[TUNE_TRIAL_ENV] = "1"  # a multi-worker run reports through this trial
    tr.dir.mkdir(parents=True, exist_ok=True)
    reuse = _replay_or_reuse(tr)
    if reuse is None:
        return
    trainable = import_path(ctx["trainable"], "trainable")
    ckpt, resume_note = (_load_checkpoint(tr.sweep_dir, tr.trial_id)
                         if _accepts_checkpoints(trainable) else (None, None))
    if resume_note:
        print(f"[ablate] trial {tr.trial_id}: {resume_note}", flush=True)
    for i, seed in enumerate(tr.seeds):
        if seed in reuse:
            _report_reused(tr, reuse[seed], i)
        else:
            _run_seed(tr, trainable, seed, i, ckpt)
    if any(r["status"] == "failed" for r in tr.runs):
        _fail(tr, tr.runs, tr.values)
    tune.report(_final_report(tr))


def _replay_or_reuse(tr: Trial) -> dict[int, dict] | None:
    """A trial whose runs all ended (restored after the driver died) is replayed from their
    records: None. Else the finished seeds of an interrupted multi-seed attempt, kept, not rerun."""
    from ray import tune

    prev = {int(r["seed"]): r for r in trial_runs(tr.sweep_dir, tr.trial_id)
            if r.get("assign") == tr.assign and int(r["seed"]) in tr.seeds
            and r.get("error_kind") != INFRA}  # a process that died: run it again
    ok = {s: r for s, r in prev.items() if r.get("status") == "finished"
          and isinstance(r.get("final"), Mapping) and _finite(r["final"].get(tr.metric))}
    if all(prev.get(s, {}).get("status") in ENDED for s in tr.seeds):
        runs = [prev[s] for s in tr.seeds]
        if len(ok) == len(tr.seeds):
            tr.runs, tr.finals = runs, [dict(r["final"]) for r in runs]
            tr.values = [float(f[tr.metric]) for f in tr.finals]
            tune.report(_final_report(tr))
            return None
        _fail(tr, runs, [float(ok[s]["final"][tr.metric]) for s in tr.seeds if s in ok])
    return ok if tr.per_seed_dirs else {}


def _report_reused(tr: Trial, prev_run: dict, i: int) -> None:
    from ray import tune

    run = dict(prev_run, reused=True)
    tr.runs.append(run)
    final = dict(run["final"])
    rep = _Reporter(tr.metric, run["seed"], i, require_metric=False, report=tune.report)
    rep({**final, "step": int(run.get("steps_done") or 0)})
    rep.flush()
    tr.values.append(float(final[tr.metric]))
    tr.finals.append(final)


def _run_seed(tr: Trial, trainable: Callable, seed: int, i: int, ckpt: dict | None) -> None:
    """Train one seed of the trial (from its checkpoint when there is one) and record it."""
    from ray import tune

    ctx = tr.ctx
    run_dir = tr.run_dir(seed)
    resume = ckpt if ckpt is not None and int(ckpt.get("seed", -1)) == seed else None
    if resume is None:  # a fresh start: drop what an interrupted attempt left in the run dir
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_name = f"{ctx['name']}-{tr.trial_id}" + (f"-s{seed}" if tr.per_seed_dirs else "")
    overrides = tr.overrides(seed) + [f"name={run_name}"]
    # W&B: group = sweep, job_type/tags/name = every swept factor (ablate.tracking.wandb_logger),
    # project = the search space's wandb.project
    wandb = {**sweep_identity(ctx["name"], tr.assign, seed, tr.trial_id),
             "project": os.environ.get("WANDB_PROJECT")}
    rep = _Reporter(tr.metric, seed, i, require_metric=bool(ctx.get("optuna")), report=tune.report)
    run: dict[str, Any] = {"seed": seed, "run_dir": str(run_dir.relative_to(tr.sweep_dir)),
                           "overrides": overrides, "status": "running", "error": None,
                           "started": time.time()}
    kwargs: dict[str, Any] = {}
    if _accepts_checkpoints(trainable):
        kwargs["on_step_end"] = _checkpoint_hook(rep, seed, i)
        if resume is not None:
            rep.load_state(resume["reporter"])
            kwargs["resume"] = resume
            run["resumed_from_step"] = int(resume["step"])
    tr.runs.append(run)
    t0 = time.perf_counter()
    summary: dict | None = None
    try:
        # loading and warm-start progress for the sweep console (steps come as Tune results)
        with progress.to_file(tr.dir / progress.PROGRESS_FILE):
            progress.note("starting", force=True, seed=seed)
            summary = trainable(overrides, str(run_dir), rep, wandb, **kwargs) or {}
        rep.flush()
    except SystemExit:  # Tune stopped the trial inside tune.report: a scheduler decision or
        # an interrupted sweep; only the driver knows which ("stopped" is not a final status)
        if summary is not None:  # stopped as the last result went out: the run itself ended
            _settle(tr, run, summary, rep, t0)
            raise
        run.update(status="stopped", steps_done=rep.steps_done,
                   wall_s=time.perf_counter() - t0, final=rep.last, ended=time.time())
        tr.record(run)
        raise
    except Exception as e:  # noqa: BLE001 - every trainer failure is recorded, not fatal
        run.update(status="failed", error=one_line(e)[:2000], error_kind="trial")
    _settle(tr, run, summary or {}, rep, t0)


def _settle(tr: Trial, run: dict, summary: dict, rep: _Reporter, t0: float) -> None:
    """Record a seed's end: its final metrics, and finished or failed (no or non-finite metric)."""
    metric, steps = tr.metric, summary.get("steps_done")
    final = _flat(summary["final"]) if isinstance(summary.get("final"), Mapping) else {}
    final = final or {k: v for k, v in rep.last.items() if k not in ("seed", "sweep/seed_index")}
    wb = summary.get("wandb") if isinstance(summary.get("wandb"), Mapping) else {}
    run.update(wall_s=float(summary.get("wall_s") or (time.perf_counter() - t0)), ended=time.time(),
               steps_done=int(steps) if _finite(steps) else rep.steps_done,
               wandb_run_id=wb.get("run_id"), wandb_dir=wb.get("dir"), final=final)
    if run["status"] != "failed":
        value = final.get(metric, rep.last_value)
        if value is None:
            run.update(status="failed", error=f"metric {metric!r} was never reported "
                       f"(reported: {', '.join(sorted(rep.last)[:12]) or 'nothing'})")
        elif not _finite(value):
            run.update(status="failed", error=f"metric {metric!r} is {value} (non-finite)")
        else:
            run["status"] = "finished"
            tr.values.append(float(value))
            tr.finals.append(final)
    tr.record(run)


def _final_report(tr: Trial) -> dict[str, Any]:
    """The trial's result: the single run's final metrics, or (several seeds) the mean over seeds."""
    metric, finals, values = tr.metric, tr.finals, tr.values
    report: dict[str, Any] = {metric: None, "step": 0}  # shown first in Tune's table
    for k in sorted(set().union(*(f.keys() for f in finals))):
        vals = [f[k] for f in finals if _finite(f.get(k))]
        if len(vals) == len(finals) and vals:
            report[k] = sum(vals) / len(vals)
    return {**report, metric: sum(values) / len(values), COMPLETE_KEY: 1, "sweep/num_seeds": len(values),
            "step": max(r.get("steps_done") or 0 for r in tr.runs)}
