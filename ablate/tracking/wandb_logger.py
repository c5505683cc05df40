"""Weights & Biases logging through the real ``wandb`` library, never fatal to a run.

Files go under ``<dir>/wandb/`` (``offline-run-<date>-<id>/run-<id>.wandb`` offline), so a user can
``wandb sync <run_dir>/wandb/offline-run-*`` later. Every wandb call is wrapped: the first
failure (import, init, log, finish) logs one warning and disables W&B for the rest of the run;
the local run store carries on. Modes: ``offline``, ``online``, ``disabled`` (wandb is not even
imported) and ``auto`` (see :func:`resolve_mode`). ``ABLATE_WANDB_MODE`` overrides the configured
mode (tests and CI set it to ``offline`` or ``disabled``).

``finish`` closes the run with ``run.finish()`` and then, when no other run of this process is open,
``wandb.teardown()``, W&B's public "wait for all data" call: wandb 0.31's ``run.finish()`` alone can
return a few milliseconds before wandb-core has written the last records, and a reader or
``wandb sync`` started right away would see a truncated run.

A sweep shares one W&B service (wandb-core) among its trials (``shared_service``) instead of one
service started and stopped per trial; a trial's ``wandb.teardown()`` then only closes its connection.

Charts: ``train/step`` is declared the step metric of ``train/*``, ``eval/*`` and ``perf/*`` and is
added to every ``log`` call, so eval points logged at the same step as training points line up.
"""

from __future__ import annotations

import hashlib
import logging
import netrc
import os
import weakref
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence
from urllib.parse import urlparse

from ablate.errors import choice_error
from ablate.tracking.run_store import to_jsonable

log = logging.getLogger("ablate.tracking")
_OPEN: "weakref.WeakSet[WandbLogger]" = weakref.WeakSet()  # this process's open W&B runs

MODES = ("offline", "online", "disabled", "auto")
STEP_METRIC = "train/step"
METRIC_PREFIXES = ("train", "eval", "perf")
MAX_TAG_LEN = 64  # W&B rejects longer tags
SERVICE_ENV = "WANDB_SERVICE"  # a running wandb-core's address (W&B docs: `wandb beta core`)


def api_key_configured() -> bool:
    """True when a W&B API key is available without asking anyone: ``WANDB_API_KEY`` is set, or
    the netrc file (``NETRC`` or ~/.netrc) has an entry for the W&B host (``WANDB_BASE_URL``,
    default api.wandb.ai), which is where ``wandb login`` stores it. No network access."""
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        auth = netrc.netrc(path).authenticators(host) if os.path.isfile(path) else None
    except (netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def resolve_mode(mode: Optional[str], field: str = "tracker.wandb.mode") -> str:
    """The effective mode: ``offline`` | ``online`` | ``disabled``.

    ``ABLATE_WANDB_MODE`` (if set) replaces ``mode``. ``auto`` resolves to: ``WANDB_MODE`` if set
    (``dryrun`` = offline, ``run`` = online), ``disabled`` if ``WANDB_DISABLED`` is true, ``online`` if
    an API key is configured (:func:`api_key_configured`), else ``offline``."""
    env = os.environ.get("ABLATE_WANDB_MODE", "").strip().lower()
    if env:
        if env not in MODES:
            raise choice_error("ABLATE_WANDB_MODE", env, MODES)
        mode = env
    mode = "auto" if mode is None else str(mode).strip().lower()
    if mode not in MODES:
        raise choice_error(field, mode, MODES)
    if mode != "auto":
        return mode
    wm = os.environ.get("WANDB_MODE", "").strip().lower()
    wm = {"dryrun": "offline", "run": "online"}.get(wm, wm)
    if wm in ("offline", "online", "disabled"):
        return wm
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return "disabled"
    return "online" if api_key_configured() else "offline"


@contextmanager
def shared_service(mode: str) -> Iterator[bool]:
    """One W&B service for this process and the processes it starts inside the block (a sweep's
    local Ray and its trial workers): W&B's public ``wandb.setup()``, which puts the service's
    address in ``os.environ`` for child processes, and ``wandb.teardown()`` at the end, which waits
    until the service has written every run. Yields whether a service is shared; never fatal
    (without it each trial starts its own service, as ``ablate train`` does). A service this
    process already has (``WANDB_SERVICE``: the user's ``wandb beta core start``, or a notebook's
    own W&B session) is used as it is and left running: tearing it down would end their runs."""
    if mode == "disabled" or os.environ.get(SERVICE_ENV):
        yield bool(mode != "disabled" and os.environ.get(SERVICE_ENV))
        return
    try:
        import wandb

        wandb.setup()
    except Exception as e:  # noqa: BLE001 - W&B must never stop a sweep
        log.warning("wandb.setup failed (%s: %s); every trial starts its own W&B service",
                    type(e).__name__, e)
        yield False
        return
    try:
        yield True
    finally:
        try:
            wandb.teardown()
        except Exception as e:  # noqa: BLE001
            log.warning("wandb.teardown failed: %s: %s", type(e).__name__, e)


def clean_tags(tags: Iterable[Any]) -> list[str]:
    """Non-empty, de-duplicated (order kept), at most 64 characters each."""
    return [s for s in dict.fromkeys(str(t).strip()[:MAX_TAG_LEN] for t in tags or ()) if s]


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """``train.epochs`` → ``epochs`` where the last part is unambiguous among ``keys``."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _fit(text: str, limit: int = MAX_TAG_LEN) -> str:
    """``text`` within W&B's 64-character limit; a cut one ends in a hash so it stays unique."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{text[:limit - 9]}~{digest}"


def sweep_identity(sweep: str, factors: Mapping[str, Any], seed: int,
                   trial_id: Optional[str] = None) -> dict:
    """How a sweep trial appears in W&B: ``group`` = the sweep, ``job_type`` = the combination of
    every swept factor (seed excluded, so "Group by job_type" pools a condition's seeds), one
    ``<factor>:<value>`` tag per factor plus ``seed:<s>``, a ``name`` that reads as the combination
    and seed, and ``config`` additions (``sweep``, ``factors``, ``seed``) to filter on."""
    short = _short_keys(list(factors))
    combo = ",".join(f"{short[k]}={_fmt_value(v)}" for k, v in factors.items()) or "base"
    tags = [f"{k}:{_fmt_value(v)}" for k, v in factors.items()] + [f"seed:{int(seed)}"]
    return {"group": _fit(sweep, 128), "job_type": _fit(combo), "tags": clean_tags(tags),
            "name": _fit(f"{combo} s{int(seed)}", 128),
            "config": {"sweep": {"name": sweep, "trial_id": trial_id},
                       "factors": dict(factors),
                       "seed": int(seed)}}


def _fmt_value(v: Any) -> Any:
    return f"{v:.4g}" if isinstance(v, float) else v


class WandbLogger:
    """One W&B run. Construct it, ``log``/``log_samples`` any number of times, ``finish`` once.

    Never raises after construction-time validation of ``mode``: ``failed`` tells whether W&B was
    disabled by an error (message in ``error``)."""

    def __init__(self, project: str = "ablate", mode: str = "offline", entity: Optional[str] = None,
                 group: Optional[str] = None, job_type: Optional[str] = None, tags: Sequence[str] = (),
                 name: Optional[str] = None, config: Optional[Mapping[str, Any]] = None,
                 dir: Optional[Path | str] = None):
        self.mode = resolve_mode(mode)
        self.run = None
        self.failed = False
        self.error: Optional[str] = None
        self.finished = False
        self._wandb = None
        self.tags = clean_tags(tags)
        if self.mode == "disabled":
            return
        self._guard("init", self._init, dir, project=project, entity=entity, group=group,
                    job_type=job_type, name=name, config=dict(config) if config is not None else None)

    # ------------------------------------------------------------------------------ guard
    def _guard(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.failed:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - W&B must never kill a run
            self.failed = True
            self.error = f"wandb {what} failed: {type(e).__name__}: {e}"
            log.warning("%s; W&B is disabled for the rest of this run (the local run store keeps "
                        "everything)", self.error)
            if what not in ("init", "finish") and self.run is not None:
                try:  # close the partial run so its files stay syncable; no second warning
                    self._finish_run(1)
                except Exception:  # noqa: BLE001
                    pass
            return None

    @property
    def active(self) -> bool:
        return self.run is not None and not self.failed and not self.finished

    # ------------------------------------------------------------------------------ wandb calls
    def _init(self, dir: Optional[Path | str], **init_args: Any) -> None:
        """``wandb.init`` with ``init_args`` (project, entity, group, job_type, name, config)."""
        import wandb

        self._wandb = wandb
        root = (Path(dir) if dir is not None else Path.cwd()).resolve()
        root.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(**init_args, tags=self.tags or None, dir=str(root), mode=self.mode,
                              reinit="create_new")
        _OPEN.add(self)
        self.run.define_metric(STEP_METRIC)
        for prefix in METRIC_PREFIXES:
            self.run.define_metric(f"{prefix}/*", step_metric=STEP_METRIC)

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log one row; ``train/step`` = ``step`` is added. None values are dropped."""
        if not self.active:
            return
        row = {str(k): x for k, v in metrics.items() if (x := _scalar(v)) is not None}
        row[STEP_METRIC] = int(step)
        self._guard("log", self.run.log, row)

    def log_samples(self, rows: Sequence[Mapping[str, Any]], step: int, key: str = "eval/samples") -> None:
        """Log generations as a ``wandb.Table`` (columns: the union of the rows' keys, in order)."""
        if not self.active or not rows:
            return
        self._guard("log_samples", self._log_table, list(rows), int(step), key)

    def _log_table(self, rows: list[Mapping[str, Any]], step: int, key: str) -> None:
        cols = list(dict.fromkeys(["step"] + [str(k) for r in rows for k in r]))
        data = [[_cell(step if (c == "step" and "step" not in r) else r.get(c)) for c in cols]
                for r in rows]
        table = self._wandb.Table(columns=cols, data=data, allow_mixed_types=True)
        self.run.log({key: table, STEP_METRIC: step})

    def finish(self, exit_code: int = 0, summary: Optional[Mapping[str, Any]] = None) -> None:
        """Write ``summary`` scalars into the run summary and close the run (idempotent)."""
        if self.finished:
            return
        if self.active:
            if summary:
                self._guard("summary", self.run.summary.update,
                            {str(k): _scalar(v) for k, v in summary.items() if _scalar(v) is not None})
            if self.active:
                self._guard("finish", self._finish_run, int(exit_code))
        self.finished = True

    def _finish_run(self, exit_code: int) -> None:
        """``run.finish()``, then wait for W&B to write everything (``wandb.teardown()``) unless
        another run of this process is still open (teardown would finish it too)."""
        _OPEN.discard(self)
        self.run.finish(exit_code=exit_code)
        if not _OPEN:
            self._wandb.teardown()

    # ------------------------------------------------------------------------------ identity
    @property
    def run_id(self) -> Optional[str]:
        return None if self.run is None else self.run.id

    @property
    def run_dir(self) -> Optional[str]:
        """The W&B run directory (``.../wandb/offline-run-<date>-<id>``), the argument of ``wandb sync``."""
        return None if self.run is None else str(self.run.settings.sync_dir)

    @property
    def effective_mode(self) -> str:
        """``offline`` / ``online`` / ``disabled``, or ``failed`` when init failed."""
        if self.mode != "disabled" and self.run is None and self.failed:
            return "failed"
        return self.mode


def _scalar(v: Any) -> Any:
    """Python scalar for wandb (numpy/torch 0-d → number); other values pass through."""
    return v.item() if getattr(v, "ndim", None) == 0 and callable(getattr(v, "item", None)) else v


def _cell(v: Any) -> Any:
    """A table cell: a JSON scalar (NaN/±inf → None), anything else its text."""
    v = to_jsonable(v)
    return v if v is None or isinstance(v, (bool, int, float, str)) else str(v)
