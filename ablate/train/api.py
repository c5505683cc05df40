"""Entry point shared by `ablate train` and sweep trials: overrides in, run store + summary out."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
from omegaconf import DictConfig

from ablate.component import inert_note
from ablate.config import compose_config, to_plain
from ablate.schema import RunConfig
from ablate.spec.groups import TAG_GROUPS
from ablate.train.validate import validate_config



def default_name(cfg: DictConfig) -> str:
    ch = cfg.choices
    return f"{ch.get('method') or 'custom'}-{ch.get('task')}-s{cfg.seed}"


def default_run_dir(cfg: DictConfig, name: str) -> Path:
    root = Path(os.environ.get("ABLATE_RUNS", "runs"))
    return root / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def slot_tags(cfg: DictConfig) -> list[str]:
    ch = cfg.choices
    return [f"{k}:{ch.get(k)}" for k in TAG_GROUPS if ch.get(k)]


BEST_METRIC = "eval/pass@1"  # what train.save_model=best maximises (measured at every eval)
MODEL_DIR = "model"


def save_model(trainer, run_dir: Path, step: int, metrics: Optional[dict] = None) -> Path:
    """An HF-format checkpoint (``model.save_pretrained`` + tokenizer) that ``model.path`` loads,
    written next to the old one and swapped in (a kill mid-save leaves the previous one intact)."""
    import json
    import tempfile

    out = Path(run_dir) / MODEL_DIR
    tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_DIR}.", dir=run_dir))
    try:
        trainer.model.save_pretrained(str(tmp), safe_serialization=True)
        trainer.tok.save_pretrained(str(tmp))
        meta = {"step": int(step), "metrics": dict(metrics or {}), "seed": int(trainer.seed)}
        (tmp / "ablate_model.json").write_text(json.dumps(meta, indent=1, default=str))
        old = out.with_name(f".{MODEL_DIR}.old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class _BestModel:
    """``train.save_model=best``: rewrite <run_dir>/model at every eval that beats the best so far
    (the best value lives in model/ablate_model.json, so a resumed run keeps comparing to it)."""

    def __init__(self, run_dir: Path):
        import json

        self.run_dir = run_dir
        self.best = float("-inf")
        try:
            meta = json.loads((run_dir / MODEL_DIR / "ablate_model.json").read_text())
            self.best = float(meta["metrics"][BEST_METRIC])
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def __call__(self, trainer, step: int) -> None:
        m = trainer.state.last_metrics
        v = m.get(BEST_METRIC)
        if v is not None and "eval/step" in m and float(v) > self.best:
            self.best = float(v)
            save_model(trainer, self.run_dir, step, {BEST_METRIC: float(v)})


def announce(msg: str) -> None:
    """A run's own console line (``[ablate] ...``), written around a progress bar (tqdm.write);
    in a sweep trial it goes to the sweep's ray.log."""
    from tqdm import tqdm

    tqdm.write(f"[ablate] {msg}")


ZERO_ADV = "train/frac_zero_adv_groups"


class _ZeroAdvantageNotice:
    """Say when a step's groups all have zero advantage (every group's rewards equal: no policy
    gradient from that step): one line at the first such step, one line when the pattern changes
    (the steps in between had signal again), and a count at the end; never a line per step."""

    def __init__(self, say: Callable[[str], None] = announce):
        self.say = say
        self.steps: list[int] = []
        self.in_run = False

    def __call__(self, trainer, step: int) -> None:
        v = trainer.state.last_metrics.get(ZERO_ADV)
        zero = v is not None and float(v) >= 1.0
        if zero and not self.in_run:
            self.say(f"step {step}: every group has zero advantage (all rewards equal within "
                     f"each group), so this step has no policy gradient"
                     + ("" if not self.steps else f" (again; {len(self.steps)} such step(s) "
                        f"so far)"))
        if zero:
            self.steps.append(int(step))
        self.in_run = zero

    def close(self, steps_done: int) -> None:
        if len(self.steps) > 1:
            self.say(f"{len(self.steps)} of {steps_done} steps had zero advantage in every group "
                     f"(train/{ZERO_ADV.split('/')[1]})")


@contextlib.contextmanager
def quiet_third_party(enabled: bool = True) -> Iterator[None]:
    """Keep third-party warnings and library logs (transformers, peft, torch, ...) off the console
    (``--verbose`` lets them through); warnings raised from ablate's own modules still show."""
    if not enabled:
        yield
        return
    import logging
    import warnings

    names = ("transformers", "peft", "torch", "accelerate", "datasets", "urllib3", "filelock")
    levels = {n: logging.getLogger(n).level for n in names}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=r"ablate(\.|$)")
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for n, lv in levels.items():
                logging.getLogger(n).setLevel(lv)


def _chain(hooks: list) -> Optional[Callable]:
    hooks = [h for h in hooks if h is not None]
    if not hooks:
        return None

    def on_step_end(trainer, step: int) -> None:
        for h in hooks:
            h(trainer, step)
    return on_step_end


def _make_run_dir(rd: Path) -> None:
    from ablate.errors import ConfigError

    try:
        rd.mkdir(parents=True, exist_ok=True)
        probe = rd / ".ablate_write_probe"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"run_dir: cannot write {rd} ({e.strerror or e}); allowed: a writable "
                          "directory with free space") from None


def run_config(cfg: DictConfig, run_dir: Optional[str | Path] = None,
               reporter: Optional[Callable[[dict], None]] = None,
               extra_tracker: Optional[dict] = None, progress: bool = False,
               resume: Optional[dict] = None,
               on_step_end: Optional[Callable] = None, dist=None) -> dict:
    """Train one run of a composed config; always writes summary.json, re-raises on failure.

    The config is validated first (schema, components, task data): a ConfigError leaves nothing
    behind (no run dir, no W&B run, no warm start). With ``resources.workers > 1`` the run is a
    Ray Train TorchTrainer of that many workers (ablate/train/distributed.py); rank 0 writes the
    run store and the W&B run. ``resume``: a trial checkpoint ({"trainer": Trainer.state_dict(),
    "store": run store position}) to continue from; ``on_step_end(trainer, step)``: called after
    each logged step (the sweep's trial checkpoints)."""
    from ablate.tracking import build_tracker
    from ablate.train.eval_cache import cache_from_env
    from ablate.train.trainer import Trainer

    extra = dict(extra_tracker or {})
    if extra.get("project") and cfg.get("tracker") and "wandb" in cfg.tracker:
        cfg.tracker.wandb.project = str(extra["project"])
    built = validate_config(cfg)  # the typed spec (and the built components) flow down from here
    spec = built.run
    save = spec.train.save_model
    name = spec.name or default_name(cfg)
    rd = Path(run_dir or spec.run_dir or default_run_dir(cfg, name)).resolve()
    if dist is None and spec.resources.workers > 1:
        return _run_multiworker(cfg, spec, rd, name, extra_tracker)
    _make_run_dir(rd)
    plain = to_plain(cfg)
    tracker = build_tracker(spec.tracker, run_dir=rd, config=plain, name=name,
                            group=extra.get("group"), job_type=extra.get("job_type"),
                            tags=list(extra.get("tags") or slot_tags(cfg)),
                            resume=(resume or {}).get("store"), wandb_name=extra.get("name"),
                            wandb_config=extra.get("config"))
    t0 = time.perf_counter()
    threads = torch.get_num_threads()  # cfg.threads is process-wide: restore it (reused Ray actors)
    try:
        if resume is None and save != "none":
            shutil.rmtree(rd / MODEL_DIR, ignore_errors=True)  # a fresh run's model, never an old one
        zero_adv = _ZeroAdvantageNotice()
        trainer = Trainer(cfg, built=built, tracker=tracker, reporter=reporter, dist=dist,
                          on_step_end=_chain([_BestModel(rd) if save == "best" else None, zero_adv,
                                              on_step_end]),
                          eval_cache=cache_from_env(spec.eval.cache))
        from ablate.policy.model import model_line

        announce(model_line(trainer.policy.info))
        announce(trainer.budget.describe())
        if note := inert_note(trainer.algo, trainer.schedule):
            announce(note)
        if resume is not None:
            trainer.load_state_dict(resume["trainer"])
        result = trainer.run(progress=progress)
        zero_adv.close(int(result.get("steps_done") or 0))
        result["generation_budget"] = {"tokens": trainer.budget.tokens, "source": trainer.budget.source}
        if save == "final":
            save_model(trainer, rd, trainer.state.step, trainer.last_eval)
        if save != "none":
            result["model_dir"] = str(rd / MODEL_DIR)
    except SystemExit:  # Ray Tune stops a trial (ASHA) by raising SystemExit in the reporter
        tracker.finish(status="early_stopped", summary={"wall_s": time.perf_counter() - t0,
                                                        "slots": dict(cfg.choices), "seed": spec.seed})
        raise
    except BaseException as e:  # record, then let the caller (CLI, sweep) decide
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:]
        try:
            tracker.finish(status="failed", summary={"wall_s": time.perf_counter() - t0,
                                                     "slots": dict(cfg.choices),
                                                     "seed": spec.seed, "traceback": tb},
                           error=f"{type(e).__name__}: {e}")
        except OSError:  # the disk is full or gone: at least never leave "running" behind
            from ablate.tracking.run_store import mark_failed_in_place
            mark_failed_in_place(rd, f"{type(e).__name__}: {e}")
        raise
    finally:
        torch.set_num_threads(threads)
    info = trainer.policy.info
    model = {k: info.get(k) for k in ("source", "architecture", "dtype", "total_params",
                                      "trainable_params", "lora")}
    model["warm_start"] = (info.get("warm_start") or {}).get("path")
    summary = {"status": "finished", "run_dir": str(rd), "name": name, "slots": dict(cfg.choices),
               "method": cfg.choices.get("method"), "seed": spec.seed, "model": model,
               **result,
               "wandb": {"run_id": tracker.wandb_run_id, "dir": tracker.wandb_dir,
                         "mode": tracker.wandb_mode}}
    tracker.finish(status="finished", summary=summary)
    return summary


WORKER_CHECKPOINT = "worker_state.pt"


def _run_multiworker(cfg: DictConfig, spec: RunConfig, rd: Path, name: str,
                     extra_tracker: Optional[dict]) -> dict:
    from ablate.tracking.run_store import read_summary
    from ablate.train.distributed import run_workers
    rd.mkdir(parents=True, exist_ok=True)
    run_workers(spec.resources, _worker_main, {"cfg": to_plain(cfg), "run_dir": str(rd), "name": name,
                                    "extra": dict(extra_tracker or {})}, storage_path=str(rd / "ray_train"))
    summary = read_summary(rd)
    if summary.get("status") != "finished":
        raise RuntimeError(f"multi-worker run ended with status {summary.get('status')!r}: {summary.get('error')}")
    return summary


def _worker_main(config: dict) -> None:
    """One Ray Train worker: the same Trainer, told its rank; only rank 0 tracks. Every
    ``train.checkpoint_every`` steps and at the end, rank 0's state goes into a Ray Train checkpoint;
    a restarted run (a retried or resumed trial: same run name and storage) continues from the
    latest one on every worker."""
    import tempfile

    import ray.train
    import ray.train.torch
    from omegaconf import OmegaConf

    from ablate.train.distributed import worker_dist
    from ablate.train.trainer import Trainer

    cfg = OmegaConf.create(config["cfg"])
    dist = worker_dist()
    cfg.device = str(ray.train.torch.get_device())
    resume = None
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume = torch.load(Path(d) / WORKER_CHECKPOINT, weights_only=False)
    last: dict = {}

    def stash(m: dict) -> None:  # reported once per step, with the checkpoint when there is one
        last.clear()
        last.update({k: float(v) for k, v in m.items() if isinstance(v, (int, float))})

    def on_step_end(trainer, step: int) -> None:
        every = trainer.spec.train.checkpoint_every
        if step != trainer.state.total_steps and not (every > 0 and step % every == 0):
            ray.train.report(dict(last))
            return
        with tempfile.TemporaryDirectory(prefix="ablate-wckpt-") as d:
            if dist.is_main:
                tracker = trainer.tracker
                torch.save({"trainer": trainer.state_dict(),
                            "store": tracker.position() if tracker is not None else None},
                           Path(d) / WORKER_CHECKPOINT)
            ray.train.report(dict(last), checkpoint=ray.train.Checkpoint.from_directory(d)
                             if dist.is_main else None)

    if dist.is_main:
        run_config(cfg, run_dir=config["run_dir"], reporter=stash, extra_tracker=config["extra"],
                   dist=dist, resume=resume, on_step_end=on_step_end)
    else:
        tr = Trainer(cfg, tracker=None, reporter=stash, dist=dist, on_step_end=on_step_end)
        if resume is not None:
            tr.load_state_dict(resume["trainer"])
        tr.run(progress=False)


def run_training(overrides: Sequence[str], run_dir: str | Path | None = None,
                 reporter: Optional[Callable[[dict], None]] = None,
                 extra_tracker: Optional[dict] = None, progress: bool = False,
                 resume: Optional[dict] = None, on_step_end: Optional[Callable] = None) -> dict:
    """Compose ``overrides`` into a config and train it (the sweep's default trainable; it takes
    ``resume``/``on_step_end``, so its trials checkpoint and resume mid-run)."""
    cfg = compose_config(list(overrides))
    return run_config(cfg, run_dir=run_dir, reporter=reporter, extra_tracker=extra_tracker,
                      progress=progress, resume=resume, on_step_end=on_step_end)
