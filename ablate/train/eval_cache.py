"""Content-addressed cache of evaluations, shared by the runs of one sweep.

Arms that share a seed share the warm start, the eval prompts and the sampling stream, so their
step-0 evaluations are identical: computing them once per sweep instead of once per arm is what
this module is for (12 evals → 3 in the quickstart). An entry is keyed by a SHA-256 of every input
the eval's result depends on (``eval_inputs``): the model's weights and buffers, the tokenizer,
the eval prompts (ids, texts, answers), the sampling seeds, the generation and engine settings and
the task/verifier identity. Anything else (method, slots, optimizer) cannot change the result.

Safe for concurrent trials in different processes: an entry is written to a temporary file and
moved into place with ``os.replace`` (a reader never sees a partial entry), computing an entry
holds a per-key file lock (a second trial with the same key waits and then reads it instead of
computing it again), and an entry that does not parse or whose checksum or key disagrees is
recomputed, never trusted. The sweep trial points ``ABLATE_EVAL_CACHE_DIR`` at
``<sweep_dir>/eval_cache``; ``eval.cache=false`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

ENV = "ABLATE_EVAL_CACHE_DIR"
FORMAT = 1  # bump when the entry layout or the key's contents change
EvalResult = tuple[dict, list, dict]  # (metrics, samples, per-prompt counts): evaluate_prompts'


def weights_digest(model: Any) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of every tensor in the state dict."""
    import torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        t = t.to("cpu").contiguous().reshape(-1)  # 1-d: 0-d tensors cannot be viewed as bytes
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def tokenizer_identity(tok: Any) -> dict:
    """What of the tokenizer shapes prompts and decoded text (its config is keyed separately)."""
    return {"class": type(tok).__qualname__, "size": len(tok), "eos": tok.eos_token_id,
            "pad": tok.pad_token_id, "chat_template": tok.chat_template}


def digest(obj: Any) -> str:
    """SHA-256 of a canonical JSON rendering (sorted keys; non-JSON leaves by ``str``)."""
    text = json.dumps(obj, sort_keys=True, default=str, allow_nan=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class EvalCache:
    """Entries ``<root>/<key[:2]>/<key>.json`` of ``{"format", "key", "sha", "result"}``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Optional[EvalResult]:
        """The stored result, or None when absent, unreadable, or failing its checks."""
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
            result = entry["result"]
            if entry.get("format") != FORMAT or entry.get("key") != key or entry.get("sha") != digest(result):
                return None
            return dict(result["metrics"]), list(result["samples"]), dict(result["per_prompt"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, value: EvalResult) -> None:
        """Write the entry atomically (temp file in the same directory, then ``os.replace``)."""
        metrics, samples, per_prompt = value
        result = {"metrics": metrics, "samples": samples, "per_prompt": per_prompt}
        entry = {"format": FORMAT, "key": key, "sha": digest(result), "result": result}
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, allow_nan=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_or_compute(self, key: str, compute: Callable[[], EvalResult]) -> EvalResult:
        """The cached result, or ``compute()`` stored for the next caller; under a per-key lock, so
        concurrent trials with the same inputs compute it once."""
        from filelock import FileLock

        hit = self.get(key)
        if hit is None:
            lock = self._path(key).with_suffix(".lock")
            lock.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(lock)):
                hit = self.get(key)  # another trial may have written it while we waited
                if hit is None:
                    self.misses += 1
                    value = compute()
                    self.put(key, value)
                    return value
        self.hits += 1
        return hit


def cache_from_env(enabled: bool) -> Optional[EvalCache]:
    """The sweep's cache (``ABLATE_EVAL_CACHE_DIR``, set by the sweep trial), if on and set."""
    root = os.environ.get(ENV)
    return EvalCache(root) if enabled and root else None
