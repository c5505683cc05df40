"""``Tracker``: the run store plus an optional W&B run behind one interface (``build_tracker``).

The run store is written first and is authoritative; W&B is best effort (a W&B failure warns once
and is recorded under ``summary.json: wandb.error``). Config: ``conf/tracker/{wandb,none}.yaml``
(``ablate.schema.TrackerConfig``). The ``group``/``job_type`` arguments of ``build_tracker`` (a
sweep passes its id and "trial") win over the config's; tags are the config's plus the given ones
(or, when none are given, one ``<slot>:<choice>`` tag per slot choice under ``config["choices"]``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from ablate.registry import plain
from ablate.schema import TrackerConfig
from ablate.spec.translate import check
from ablate.spec.groups import SLOT_FAMILIES, TAG_GROUPS
from ablate.tracking.run_store import RunStore
from ablate.tracking.wandb_logger import WandbLogger, clean_tags, resolve_mode


class Tracker:
    """``log`` / ``log_samples`` / ``finish`` to the run store and, if enabled, to W&B."""

    def __init__(self, store: RunStore, wandb: Optional[WandbLogger] = None,
                 info: Optional[Mapping[str, Any]] = None):
        self.store = store
        self.wandb = wandb
        self.info = dict(info or {})
        self.final_summary: Optional[dict] = None  # set by the first finish()

    # ------------------------------------------------------------------------------ logging
    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.store.log(metrics, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step)

    def log_samples(self, rows: Iterable[Mapping[str, Any]], step: int) -> None:
        rows = [dict(r) for r in rows]
        if not rows:
            return
        self.store.log_samples(rows, step)
        if self.wandb is not None:
            self.wandb.log_samples(rows, step)

    def log_eval_prompts(self, prompt_id: list[str], n: list[int], c: list[int], step: int) -> None:
        """Per-prompt eval counts of one eval step: run store only (``eval_prompts.jsonl``)."""
        self.store.log_eval_prompts(prompt_id, n, c, step)

    def finish(self, status: str, summary: Optional[Mapping[str, Any]] = None,
               error: Optional[str | BaseException] = None) -> dict:
        """Close W&B (exit code 0 when finished, else 1) and write the final summary.json.
        Idempotent: a second call returns the first call's summary."""
        if self.final_summary is not None:
            return dict(self.final_summary)
        if self.wandb is not None:
            self.wandb.finish(exit_code=0 if status == "finished" else 1, summary={"status": status})
        summary = dict(summary or {})  # a given wandb mapping's set entries update the tracker's
        wb = summary.pop("wandb") if isinstance(summary.get("wandb"), Mapping) else {}
        fields = {**self.info, "wandb": {**self._wandb_info(), **{k: v for k, v in wb.items() if v is not None}},
                  **summary}
        self.final_summary = self.store.finish(status, fields, error=error)
        return dict(self.final_summary)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish("finished" if exc is None else "failed", error=exc)  # no-op once finished

    def position(self) -> dict:
        """The run store's position, for a trial checkpoint (see ``RunStore.position``)."""
        return self.store.position()

    # ------------------------------------------------------------------------------ identity
    def _wandb_info(self) -> dict:
        w = self.wandb
        return {"run_id": self.wandb_run_id, "dir": self.wandb_dir, "mode": self.wandb_mode,
                "error": None if w is None else w.error}

    @property
    def wandb_run_id(self) -> Optional[str]:
        return None if self.wandb is None else self.wandb.run_id

    @property
    def wandb_dir(self) -> Optional[str]:
        return None if self.wandb is None else self.wandb.run_dir

    @property
    def wandb_mode(self) -> str:
        return "disabled" if self.wandb is None else self.wandb.effective_mode


# ---------------------------------------------------------------------------------- building
def tracker_config(tracker_cfg: Any) -> TrackerConfig:
    """The typed ``tracker`` group: passed through when already validated (a RunConfig's), else
    checked once by the schema (one-line ConfigError)."""
    if isinstance(tracker_cfg, TrackerConfig):
        return tracker_cfg
    return check(TrackerConfig, plain(tracker_cfg) or {}, "tracker.")


def build_tracker(tracker_cfg: Any, run_dir: Path, config: Mapping[str, Any], name: str,
                  group: Optional[str] = None, job_type: Optional[str] = None,
                  tags: Optional[list[str]] = None,
                  resume: Optional[Mapping[str, Any]] = None,
                  wandb_name: Optional[str] = None,
                  wandb_config: Optional[Mapping[str, Any]] = None) -> Tracker:
    """Create the run directory's store (config.yaml + a "running" summary.json) and, when
    ``tracker.wandb.enabled`` and the resolved mode is not disabled, a W&B run under
    ``<run_dir>/wandb/``. Bad tracker config raises ``ConfigError``; W&B failures never raise.
    ``resume``: a run store position from a trial checkpoint (the files are cut back to it; a
    resumed run gets a new W&B run in the same group, logging from the resumed step on).
    ``wandb_name`` / ``wandb_config``: the W&B display name (default ``name``) and keys added to the
    W&B config (a sweep's ``sweep_identity``: sweep, factors, seed)."""
    wb = tracker_config(tracker_cfg).wandb
    config = plain(config) or {}
    choices = dict(config.get("choices") or {})
    method = choices.get("method")
    if method is None and isinstance(config.get("method"), Mapping):
        method = config["method"].get("name")
    group = group if group is not None else wb.group
    job_type = job_type if job_type is not None else (wb.job_type or "train")
    given = list(tags or [])
    derived = [] if given else [f"{k}:{choices[k]}" for k in TAG_GROUPS if choices.get(k)]
    all_tags = clean_tags(list(wb.tags) + given + derived)
    # validated before the run store exists (ConfigError on a bad mode)
    mode = resolve_mode(wb.mode) if wb.enabled else "disabled"

    store = RunStore(Path(run_dir), resume=resume)
    store.write_config(config)
    info = {"name": name, "run_dir": str(store.run_dir), "slots": choices or None, "method": method,
            "seed": config.get("seed"), "group": group, "job_type": job_type, "tags": all_tags,
            "host": socket.gethostname(), "pid": os.getpid()}
    logger = None
    if mode != "disabled":
        wconf = dict(config)
        if choices and "slots" not in wconf:  # dashboards filter by slots.mask etc.
            wconf["slots"] = {k: choices[k] for k in SLOT_FAMILIES if k in choices}
        wconf.update(wandb_config or {})
        logger = WandbLogger(project=wb.project, mode=mode, entity=wb.entity, group=group,
                             job_type=job_type, tags=all_tags, name=wandb_name or name,
                             config=wconf, dir=store.run_dir)
    tracker = Tracker(store, logger, info=info)
    store.write_summary(status="running", **info, wandb=tracker._wandb_info())
    return tracker
