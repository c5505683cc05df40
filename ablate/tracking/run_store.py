"""The local run store: one directory per run, plain files, the source of truth for reports.

    <run_dir>/config.yaml     the resolved config (written once, at start)
    <run_dir>/metrics.jsonl   one JSON object per log call: {"step", "time", **metrics}
    <run_dir>/samples.jsonl   model generations: {"step", "prompt", "response", "reward", ...}
    <run_dir>/eval_prompts.jsonl  per-prompt eval counts, one line per eval step:
                              {"step", "prompt_id": [...], "n": [...], "c": [...]} (prompt ids are
                              ``Problem.uid()``, stable across seeds and arms; n samples, c correct),
                              the raw data of pass@k that ``ablate.stats.prompts`` models
    <run_dir>/summary.json    status (running → finished | failed | early_stopped), error and
                              traceback tail, final metrics (last value of each key), wall time,
                              W&B run id/dir/mode, slot choices, method, seed; a sweep's run
                              also ``sweep``: how the run ended for the sweep, merged in after
                              it closed (``merge_summary``, ablate.tracking.trials)

JSON lines are flushed one at a time, so a killed run keeps every line logged before it died
(``load_run`` skips a torn last line). ``time`` is Unix time in seconds. NaN and ±inf are written
as ``null`` (strict JSON). Strings (prompts, model output) are stored raw; escaping them is the
report's job. summary.json is rewritten atomically (temp file + rename); a run that was killed
still says ``"running"`` until a sweep marks it ``"interrupted"`` (``mark_interrupted``).

Resuming (a trial checkpoint): ``position()`` is what a checkpoint stores (line counts and byte
offsets of metrics.jsonl / samples.jsonl / eval_prompts.jsonl, the last value of each key);
``RunStore(run_dir, resume=position)`` truncates the files back to it, so the resumed run appends
without duplicates. One eval step is one line, so a torn write loses that step whole, never part
of its prompts (``read_eval_prompts`` skips it; a resume cuts it off).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any, Iterable, Mapping, Optional, Sequence

import yaml
from ablate.registry import plain
from ablate.spec.yaml import TRUSTED_LOADER

FINAL_STATUSES = ("finished", "failed", "early_stopped")
INTERRUPTED = "interrupted"  # killed mid-run; may be resumed from a checkpoint
RESERVED_KEYS = ("step", "time")
STREAMS = ("metrics", "samples", "eval_prompts")  # the append-only JSONL files a position covers
TRACEBACK_TAIL_CHARS = 4000


def to_jsonable(x: Any) -> Any:
    """Plain JSON values: numpy/torch scalars → Python numbers, NaN/±inf → None, tuples → lists,
    mappings with string keys; anything else → ``str(x)``."""
    if x is None or isinstance(x, (bool, str, int)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if getattr(x, "ndim", None) == 0 and callable(getattr(x, "item", None)):  # numpy/torch scalars
        return to_jsonable(x.item())
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in x]
    if callable(getattr(x, "tolist", None)):  # numpy / torch arrays
        return to_jsonable(x.tolist())
    return str(x)


class RunStore:
    """Writes the files of one run directory; see the module docstring for the layout."""

    def __init__(self, run_dir: Path, resume: Optional[Mapping[str, Any]] = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.start_time = time.time()
        self._t0 = time.perf_counter()
        self.final: dict[str, Any] = {}  # last value of each metric key
        self.last_step: Optional[int] = None
        self.lines = dict.fromkeys(STREAMS, 0)  # lines written to each stream's JSONL file
        if resume is not None:
            self._rewind(resume)
        (self.run_dir / "metrics.jsonl").touch()  # exists from the start; a stream's file is
        self._files: dict[str, IO[str]] = {}      # opened on its first write (none held before)
        self._summary: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ resuming
    def position(self) -> dict[str, Any]:
        """Where the files stand now (what a trial checkpoint records); every write is flushed."""
        pos: dict[str, Any] = {"final": dict(self.final), "last_step": self.last_step,
                               "start_time": self.start_time}
        for key in STREAMS:
            path = self.run_dir / f"{key}.jsonl"
            pos[f"{key}_lines"] = self.lines[key]
            pos[f"{key}_bytes"] = path.stat().st_size if path.exists() else 0
        return pos

    def _rewind(self, pos: Mapping[str, Any]) -> None:
        """Cut the JSONL files back to a recorded position (lines logged after the checkpoint by
        the interrupted attempt are dropped; the resumed run logs them again). A position from
        before a file existed (no ``<stream>_bytes`` key) leaves that file as it is."""
        for key in STREAMS:
            path = self.run_dir / f"{key}.jsonl"
            self.lines[key] = int(pos.get(f"{key}_lines") or 0)
            if f"{key}_bytes" not in pos:
                continue
            n = int(pos[f"{key}_bytes"])
            have = path.stat().st_size if path.exists() else 0
            if have < n:
                raise RuntimeError(f"cannot resume {path}: it has {have} bytes, the checkpoint "
                                   f"recorded {n}")
            if path.exists():
                os.truncate(path, n)
        self.final = dict(pos.get("final") or {})
        self.last_step = pos.get("last_step")
        if pos.get("start_time"):
            self.start_time = float(pos["start_time"])

    # ------------------------------------------------------------------------------ writing
    def write_config(self, config: Any) -> None:
        """Write the resolved config (dict or omegaconf container) to config.yaml."""
        data = to_jsonable(plain(config))
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
        atomic_write(self.run_dir / "config.yaml", text)

    def _append(self, key: str, recs: Iterable[Mapping[str, Any]]) -> int:
        """Append records as lines of ``<key>.jsonl`` and flush them; returns how many."""
        f = self._files.get(key)
        if f is None:
            f = self._files[key] = open(self.run_dir / f"{key}.jsonl", "a", encoding="utf-8")
        lines = [json.dumps(to_jsonable(r), ensure_ascii=False, allow_nan=False) + "\n" for r in recs]
        f.writelines(lines)
        f.flush()
        self.lines[key] += len(lines)
        return len(lines)

    def log(self, metrics: Mapping[str, Any], step: int, t: Optional[float] = None) -> None:
        """Append one line ``{"step": step, "time": t or now, **metrics}`` and flush it."""
        bad = [k for k in metrics if k in RESERVED_KEYS]
        if bad:
            raise ValueError(f"RunStore.log: metric names {bad} are reserved (the line's own step/time)")
        clean = {str(k): to_jsonable(v) for k, v in metrics.items()}
        self._append("metrics", [{"step": int(step), "time": float(time.time() if t is None else t),
                                  **clean}])
        self.final.update(clean)
        self.last_step = int(step)

    def log_samples(self, rows: Iterable[Mapping[str, Any]], step: int) -> int:
        """Append generation rows (each gets ``step`` unless it has one); returns how many."""
        return self._append("samples", ({"step": int(step), **{str(k): v for k, v in row.items()}}
                                        for row in rows))

    def log_eval_prompts(self, prompt_id: Sequence[str], n: Sequence[int], c: Sequence[int],
                         step: int) -> None:
        """Append one eval step's per-prompt counts as one line (flushed): ``prompt_id[j]`` had
        ``n[j]`` samples of which ``c[j]`` were correct."""
        ids, ns, cs = [str(x) for x in prompt_id], [int(x) for x in n], [int(x) for x in c]
        if not len(ids) == len(ns) == len(cs):
            raise ValueError(f"RunStore.log_eval_prompts: {len(ids)} ids, {len(ns)} n, {len(cs)} c")
        if any(not 0 <= ci <= ni for ni, ci in zip(ns, cs)):
            raise ValueError("RunStore.log_eval_prompts: need 0 <= c <= n for every prompt")
        self._append("eval_prompts", [{"step": int(step), "prompt_id": ids, "n": ns, "c": cs}])

    def write_summary(self, **fields: Any) -> dict:
        """Merge ``fields`` into the summary and rewrite summary.json atomically."""
        self._summary.update(fields)
        self._summary.setdefault("start_time", self.start_time)
        _write_summary(self.run_dir, self._summary)
        return dict(self._summary)

    def finish(self, status: str, summary: Optional[Mapping[str, Any]] = None,
               error: Optional[str | BaseException] = None) -> dict:
        """Write the final summary.json and close the files. ``summary`` entries win over the
        defaults (``final``: last logged value of each key; ``wall_s``). ``error`` may be a string
        or an exception; the traceback tail comes from the exception, or from the exception being
        handled when finish() is called inside an ``except`` block."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"RunStore.finish: status {status!r} not in {FINAL_STATUSES}")
        fields: dict[str, Any] = {
            "status": status,
            "final": dict(self.final),
            "wall_s": time.perf_counter() - self._t0,
            "end_time": time.time(),
            "last_step": self.last_step,
            "num_logs": self.lines["metrics"],
            "error": None,
        }
        if error is not None:
            fields.update(_error_fields(error))
        fields.update({str(k): v for k, v in (summary or {}).items()  # the status argument is authoritative
                       if k != "status" and not (k == "error" and v is None and fields.get("error"))})
        out = self.write_summary(**fields)
        self.close()
        return out

    def close(self) -> None:
        for f in self._files.values():  # closing a closed file again is a no-op
            with contextlib.suppress(OSError):
                f.close()


def mark_interrupted(run_dir: Path, reason: str) -> bool:
    """A summary.json still saying "running" after its process is gone becomes "interrupted"
    (with ``reason``); returns whether it changed. A resumed run rewrites it as it goes."""
    summary = read_summary(run_dir)
    if summary.get("status") != "running":
        return False
    summary.update(status=INTERRUPTED, error=reason, end_time=time.time())
    _write_summary(run_dir, summary)
    return True


def read_json(path: Path) -> dict:
    """A JSON object file ({} when it is missing, unreadable or not an object)."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def read_config(run_dir: Path) -> Any:
    """A run's resolved config.yaml (written by ablate itself, so libyaml's safe loader), or None
    when it is missing or unreadable."""
    try:
        return yaml.load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"), TRUSTED_LOADER)
    except (OSError, yaml.YAMLError):
        return None


def read_summary(run_dir: Path) -> dict:
    """A run's summary.json ({} when it is missing or unreadable)."""
    return read_json(Path(run_dir) / "summary.json")


def merge_summary(run_dir: Path, **fields: Any) -> dict:
    """Merge ``fields`` into a closed run's summary.json (created when the run wrote none), for
    what a caller learns after the run's own store closed (a sweep's record of the run)."""
    summary = read_summary(run_dir)
    summary.update(fields)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    _write_summary(run_dir, summary)
    return summary


def _write_summary(run_dir: Path, summary: Mapping[str, Any]) -> None:
    atomic_write(Path(run_dir) / "summary.json", json.dumps(
        to_jsonable(summary), ensure_ascii=False, indent=2, allow_nan=False) + "\n")


def mark_failed_in_place(run_dir: Path, error: str) -> bool:
    """Last resort when the final summary cannot be written (disk full): overwrite summary.json in
    place with a small "failed" record (reusing its blocks, no temp file), so no run stays
    "running" forever. Returns whether it was written."""
    path = Path(run_dir) / "summary.json"
    text = json.dumps({"status": "failed", "error": error[:200], "end_time": time.time()}) + "\n"
    try:
        with open(path, "r+", encoding="utf-8") as f:
            f.write(text)
            f.truncate()
        return True
    except OSError:
        return False


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temp file and rename it over ``path``: a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
    os.replace(tmp, path)


def _error_fields(error: str | BaseException) -> dict[str, str]:
    """``error`` as a message, and the traceback tail of the exception (or of the one being
    handled when ``error`` is a string)."""
    is_exc = isinstance(error, BaseException)
    out = {"error": f"{type(error).__name__}: {error}" if is_exc else str(error)}
    exc = error if is_exc else sys.exc_info()[1]
    if exc is not None:
        out["traceback"] = "".join(traceback.format_exception(exc))[-TRACEBACK_TAIL_CHARS:]
    return out


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """Records of a JSONL file and the number of unreadable lines (e.g. a torn last line)."""
    if not path.exists():
        return [], 0
    recs: list = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in filter(str.strip, f):
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                recs.append(None)
    out = [r for r in recs if isinstance(r, dict)]
    return out, len(recs) - len(out)


def read_eval_prompts(run_dir: Path) -> list[dict]:
    """The per-prompt eval counts of a run in long form: ``{"step", "prompt_id", "n", "c"}`` per
    prompt and eval step, in logged order. A torn or malformed line (one whole eval step) is
    skipped; a run without the file gives []."""
    recs, _ = read_jsonl(Path(run_dir) / "eval_prompts.jsonl")
    out: list[dict] = []
    for rec in recs:
        ids, ns, cs = rec.get("prompt_id"), rec.get("n"), rec.get("c")
        if not (isinstance(ids, list) and isinstance(ns, list) and isinstance(cs, list)
                and len(ids) == len(ns) == len(cs) and isinstance(rec.get("step"), int)):
            continue
        out.extend({"step": rec["step"], "prompt_id": str(i), "n": int(n), "c": int(c)}
                   for i, n, c in zip(ids, ns, cs))
    return out


def load_run(run_dir: Path) -> dict:
    """Read a run directory back: ``{"run_dir", "config", "metrics", "samples", "summary",
    "bad_lines"}``; missing files give None / []. Metric values logged as NaN/inf come back as
    None. Unparseable lines are skipped and counted in ``bad_lines``."""
    rd = Path(run_dir)
    if not rd.is_dir():
        raise FileNotFoundError(f"load_run: {rd} is not a directory")
    config = read_config(rd)
    summary = read_summary(rd) or None
    metrics, bad_m = read_jsonl(rd / "metrics.jsonl")
    samples, bad_s = read_jsonl(rd / "samples.jsonl")
    return {"run_dir": str(rd), "config": config, "metrics": metrics, "samples": samples,
            "summary": summary, "bad_lines": {"metrics": bad_m, "samples": bad_s}}
