"""Test helper: read an offline W&B run back (history rows, config, summary, run metadata) without
the network. Production never reads W&B files (the run store is the record); tests use this to
check what a user would `wandb sync`.

Pinned to wandb 0.31.0 (the version in pyproject). ``wandb.Api()`` needs an API key and cannot
read local files, and ``wandb.sdk.internal.datastore`` is gone in 0.31, so there are two readers:

``python`` (default) — a small reader of the ``.wandb`` transaction log:
  * file header, 7 bytes: magic ``b":W&B"``, u16 little-endian 0xBEE1, u8 version 0;
  * then LevelDB-log framing: 32 KiB blocks; each physical record has a 7-byte header
    (u32 CRC-32 (zlib.crc32 of the type byte then the payload, unmasked), u16 length, u8 type:
    1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST); a block tail shorter than 7 bytes is zero padding;
  * each logical record is a serialized ``wandb.proto.wandb_internal_pb2.Record``; history,
    summary and config values are JSON strings in ``value_json`` keyed by ``key`` or by the
    ``nested_key`` path (joined with "." here, as ``wandb leet`` and the W&B UI do).
  Reading stops at the first torn or corrupt record (a run killed mid-write keeps everything
  before it).

``leet`` — the supported CLI ``wandb leet inspect --json <path>`` (one JSON object per record),
  used as a fallback when the python reader cannot parse the file (format change) and selectable
  explicitly. It prints non-finite numbers as the strings "NaN"/"Infinity"/"-Infinity"; they are
  turned back into floats here.

History rows are dicts of the logged keys plus wandb's ``_step``, ``_runtime``, ``_timestamp``;
NaN comes back as ``float('nan')``; a logged ``wandb.Table`` appears as flattened
``<key>._type``, ``<key>.path``, ... entries.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import zlib
from collections import deque
from pathlib import Path
from typing import Any, Iterator, Optional

MAGIC = b":W&B"
FILE_HEADER_LEN = 7
BLOCK = 32 * 1024
REC_HEADER_LEN = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
BACKENDS = ("auto", "python", "leet")


class WandbFormatError(ValueError):
    """The file is not a .wandb transaction log this reader understands."""


# ---------------------------------------------------------------------------------- locating
def find_wandb_file(path: Path | str) -> Path:
    """The ``run-<id>.wandb`` file for ``path``: the file itself, a W&B run directory, a ``wandb/``
    directory or a directory containing one (an ablate run dir); with several runs, the latest
    (``latest-run`` link, else the newest by name)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(f"no W&B run at {p}")
    files = sorted(p.glob("*.wandb"))
    if files:
        return files[-1]
    for root in (p / "wandb", p):
        latest = root / "latest-run"
        if latest.exists():
            files = sorted(latest.resolve().glob("*.wandb"))
            if files:
                return files[-1]
        runs = sorted(list(root.glob("offline-run-*")) + list(root.glob("run-*")), key=lambda x: x.name)
        for rd in reversed(runs):
            if rd.is_dir():
                files = sorted(rd.glob("*.wandb"))
                if files:
                    return files[-1]
    raise FileNotFoundError(f"no .wandb file in {p} (looked in it, its wandb/ and their run dirs)")


# ---------------------------------------------------------------------------------- python reader
def iter_record_payloads(path: Path | str) -> Iterator[bytes]:
    """Serialized ``Record`` payloads of a .wandb file, in order (stops at a torn/corrupt record)."""
    data = Path(path).read_bytes()
    if len(data) < FILE_HEADER_LEN or data[:4] != MAGIC:
        raise WandbFormatError(f"{path}: not a .wandb log (bad magic {data[:4]!r})")
    ident, version = struct.unpack("<HB", data[4:7])
    if ident != 0xBEE1 or version != 0:
        raise WandbFormatError(f"{path}: unsupported .wandb header (ident {ident:#x}, version {version})")
    pos = FILE_HEADER_LEN
    pending: Optional[bytearray] = None
    n = len(data)
    while pos < n:
        left = BLOCK - (pos % BLOCK)
        if left < REC_HEADER_LEN:  # block trailer padding
            pos += left
            continue
        if pos + REC_HEADER_LEN > n:
            return
        crc, length, rtype = struct.unpack("<IHB", data[pos:pos + REC_HEADER_LEN])
        if rtype == 0 and length == 0:  # zero padding (preallocated / end of block)
            pos += left
            continue
        start = pos + REC_HEADER_LEN
        end = start + length
        if end > n or length > left - REC_HEADER_LEN:
            return  # torn write
        payload = data[start:end]
        if zlib.crc32(payload, zlib.crc32(bytes([rtype]))) & 0xFFFFFFFF != crc:
            return  # corrupt: stop rather than guess
        pos = end
        if rtype == FULL:
            pending = None
            yield bytes(payload)
        elif rtype == FIRST:
            pending = bytearray(payload)
        elif rtype == MIDDLE:
            if pending is None:
                return
            pending += payload
        elif rtype == LAST:
            if pending is None:
                return
            pending += payload
            yield bytes(pending)
            pending = None
        else:
            return


def iter_records(path: Path | str) -> Iterator[Any]:
    """Parsed ``wandb_internal_pb2.Record`` messages of a .wandb file."""
    from wandb.proto import wandb_internal_pb2 as pb

    for payload in iter_record_payloads(path):
        rec = pb.Record()
        rec.ParseFromString(payload)
        yield rec


def _item_key(item: Any) -> str:
    return item.key if item.key else ".".join(item.nested_key)


def _item_value(item: Any) -> Any:
    if item.value_json:
        return json.loads(item.value_json)  # accepts NaN / Infinity
    return None


def _read_python(path: Path) -> dict:
    run: dict[str, Any] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict] = []
    exit_code: Optional[int] = None
    version: Optional[str] = None
    for rec in iter_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({_item_key(it): _item_value(it) for it in rec.history.item})
        elif kind == "run":
            r = rec.run
            run = {"id": r.run_id, "project": r.project, "entity": r.entity or None,
                   "name": r.display_name or None, "group": r.run_group or None,
                   "job_type": r.job_type or None, "tags": list(r.tags), "notes": r.notes or None}
            for it in r.config.update:
                _set_config(config, it)
        elif kind == "config":
            for it in rec.config.update:
                _set_config(config, it)
            for it in rec.config.remove:
                config.pop(_item_key(it), None)
        elif kind == "summary":
            for it in rec.summary.update:
                summary[_item_key(it)] = _item_value(it)
            for it in rec.summary.remove:
                summary.pop(_item_key(it), None)
        elif kind == "exit":
            exit_code = int(rec.exit.exit_code)
        elif kind == "header":
            version = rec.header.version_info.producer or None
    return _assemble(path, run, config, summary, history, exit_code, version)


def _set_config(config: dict, item: Any) -> None:
    if item.key:
        config[item.key] = _item_value(item)
    elif item.nested_key:
        d = config
        for k in item.nested_key[:-1]:
            d = d.setdefault(k, {})
        d[item.nested_key[-1]] = _item_value(item)


def wait_until_complete(path: Path | str, timeout: float = 20.0, poll: float = 0.05) -> bool:
    """Wait until the run's .wandb log ends with its ``exit`` record; True if it does in time.

    wandb 0.31's ``run.finish()`` can return before wandb-core has written the last records of
    an offline run (observed under CPU contention: 125 of 150 history rows on disk right after
    finish, all 150 a moment later), so anything that reads or syncs the file right away must
    wait for the exit record first."""
    import time

    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + timeout
    while True:
        try:
            tail = deque(iter_record_payloads(find_wandb_file(path)), maxlen=1)
            if tail:
                rec = pb.Record()
                rec.ParseFromString(tail[0])
                if rec.WhichOneof("record_type") == "exit":
                    return True
        except (OSError, WandbFormatError, FileNotFoundError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


# ---------------------------------------------------------------------------------- leet reader
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _fix_nonfinite(v: Any) -> Any:
    return _NONFINITE.get(v, v) if isinstance(v, str) else v


def leet_available() -> bool:
    return _run_leet(["--help"], check=False).returncode == 0


def _run_leet(args: list[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", *args]
    env = dict(os.environ, WANDB_SILENT="true")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check, env=env)


def _read_leet(path: Path) -> dict:
    out = _run_leet(["--json", str(path)])
    run: dict[str, Any] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict] = []
    exit_code: Optional[int] = None
    version: Optional[str] = None
    for line in out.stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        kind = rec.get("type")
        body = rec.get(kind) if isinstance(rec.get(kind), dict) else {}
        if kind == "history":
            history.append({k: _fix_nonfinite(v) for k, v in (body.get("item") or {}).items()})
        elif kind == "run":
            run = {"id": body.get("run_id"), "project": body.get("project"), "entity": body.get("entity"),
                   "name": body.get("display_name"), "group": body.get("run_group"),
                   "job_type": body.get("job_type"), "tags": list(body.get("tags") or []),
                   "notes": body.get("notes")}
            config.update((body.get("config") or {}).get("update") or {})
        elif kind == "config":
            config.update(body.get("update") or {})
        elif kind == "summary":
            summary.update({k: _fix_nonfinite(v) for k, v in (body.get("update") or {}).items()})
        elif kind == "exit":
            exit_code = int(body.get("exit_code") or 0)
        elif kind == "header":
            version = ((body.get("version_info") or {}).get("producer")) or version
    return _assemble(path, run, config, summary, history, exit_code, version)


# ---------------------------------------------------------------------------------- public API
def _assemble(path: Path, run: dict, config: dict, summary: dict, history: list[dict],
              exit_code: Optional[int], version: Optional[str]) -> dict:
    config = {k: v for k, v in config.items() if k != "_wandb"}
    summary = {k: v for k, v in summary.items() if not k.startswith("_wandb")}
    out = {"id": None, "project": None, "entity": None, "name": None, "group": None,
           "job_type": None, "tags": [], "notes": None}
    out.update({k: v for k, v in run.items() if v is not None})
    out.update({"config": config, "summary": summary, "history": history,
                "exit_code": exit_code, "wandb_version": version, "path": str(path)})
    return out


def read_offline_run(path: Path | str, backend: str = "auto") -> dict:
    """Metadata and data of an offline run: ``{"id", "project", "entity", "name", "group",
    "job_type", "tags", "notes", "config", "summary", "history", "exit_code", "wandb_version",
    "path"}``. ``path``: see :func:`find_wandb_file`. ``backend``: ``python``, ``leet``, or
    ``auto`` (python, falling back to leet when the file format is not understood)."""
    if backend not in BACKENDS:
        raise ValueError(f"read_offline_run: backend {backend!r} not in {BACKENDS}")
    f = find_wandb_file(path)
    if backend == "leet":
        return _read_leet(f)
    try:
        return _read_python(f)
    except Exception:  # noqa: BLE001 - format drift: let the supported CLI try
        if backend == "python":
            raise
        return _read_leet(f)


def read_offline_history(path: Path | str, backend: str = "auto") -> list[dict]:
    """The logged history rows of an offline run, in order (see :func:`read_offline_run`)."""
    return read_offline_run(path, backend=backend)["history"]
