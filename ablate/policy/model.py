"""Build the policy: a tiny transformers causal LM from config (or a local HF checkpoint), plus a
short cached SFT warm start on the task's demonstrations so RL starts from a policy that is
sometimes right.

Warm-started weights are cached under ``$ABLATE_CACHE/warmstart/<hash>/`` (default
``~/.cache/ablate``) as a regular HF checkpoint (``save_pretrained`` + tokenizer), keyed by the
model config, warm-start config, task spec, seed, device type and torch/transformers versions.
Writes go to a temporary directory renamed into place under a per-entry file lock, with every
file's checksum recorded, so concurrent builders never see a partial checkpoint and an entry is
deleted only when verifiably corrupt (never on a transient load error).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from ablate.errors import ConfigError
from ablate.registry import plain
from ablate.tracking import progress
from ablate.policy.forward import encode_pairs, token_logprobs
from ablate.policy.tokenizer import build_tokenizer
from ablate.tasks.chat import apply_prompt_format

log = logging.getLogger(__name__)

WARMSTART_FORMAT = 1  # bump when the warm-start procedure changes (invalidates caches)

# Defaults, types and ranges of model.* and model.warm_start.*: ablate/schema.py (ModelConfig,
# WarmStartConfig), the one source that conf/model/tiny.yaml also extends.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Policy:
    """The trainable causal LM and its tokenizer (``padding_side='left'``)."""

    model: torch.nn.Module
    tokenizer: Any
    info: dict = field(default_factory=dict)  # num_params, source, warm_start {cache_hit, path, seconds, loss}
    task: Any = None  # the task with prompts in this tokenizer's format (task.prompt_format)


def _resolve_cfg(model_cfg: Any) -> dict:
    """``model_cfg`` checked against the schema, with its defaults filled in; ``warm_start`` is
    always a mapping (``null`` = no warm start: ``steps: 0``)."""
    from ablate.schema import ModelConfig, WarmStartConfig
    from ablate.spec.translate import check

    cfg = plain(model_cfg) or {}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"model: got {cfg!r}; allowed: a mapping")
    cfg = dict(cfg)
    cfg.pop("_target_", None)
    cfg.pop("name", None)
    out = check(ModelConfig, cfg, "model.").model_dump()
    out.pop("seed", None)  # read by the trainer (policy_seed), not part of the architecture
    if out["warm_start"] is None:
        out["warm_start"] = {**WarmStartConfig().model_dump(), "steps": 0}
    return out


def _hf_config(cfg: dict, tokenizer):
    common = dict(
        vocab_size=len(tokenizer), hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"],
        num_key_value_heads=cfg["num_kv_heads"] or cfg["num_heads"],
        max_position_embeddings=cfg["max_position_embeddings"],
        tie_word_embeddings=cfg["tie_word_embeddings"],
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, rms_norm_eps=1e-5, initializer_range=0.02,
        attention_dropout=0.0, use_cache=True,
    )
    if cfg["arch"] == "llama":
        from transformers import LlamaConfig
        c = LlamaConfig(**common)
    else:
        from transformers import Qwen2Config
        c = Qwen2Config(**common)
    try:  # rope parameters moved into a dict in transformers 5
        if getattr(c, "rope_parameters", None) is not None:
            c.rope_parameters["rope_theta"] = float(cfg["rope_theta"])
        else:
            c.rope_theta = float(cfg["rope_theta"])
    except Exception:  # pragma: no cover
        pass
    return c


def _new_tiny_model(cfg: dict, tokenizer, seed: int) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM
    hf_cfg = _hf_config(cfg, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(hf_cfg, attn_implementation=cfg["attn_implementation"])
    return model.to(DTYPES[cfg["dtype"]])


@contextlib.contextmanager
def _quiet_hf():
    """Silence transformers' per-load/save progress bars (one per trial is noise in sweep logs)."""
    from transformers.utils import logging as hf_logging
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _load_local(path: str | os.PathLike, dtype: torch.dtype, attn: Optional[str] = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(f"model.path: not a local directory: {p}")
    try:
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        kw = {"attn_implementation": attn} if attn else {}
        with _quiet_hf():
            model = AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True, dtype=dtype, **kw)
    except (OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"model.path: cannot load a causal LM from {p} ({msg})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return model, tok


def count_params(model: torch.nn.Module) -> int:
    """Distinct trainable parameters (tied embeddings counted once)."""
    seen, n = set(), 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def cache_root() -> Path:
    return Path(os.environ.get("ABLATE_CACHE") or "~/.cache/ablate").expanduser() / "warmstart"


def warm_start_key(cfg: dict, task, seed: int, device: torch.device) -> str:
    import transformers
    ws = {k: v for k, v in cfg["warm_start"].items() if k != "cache"}
    payload = {
        "format": WARMSTART_FORMAT,
        "model": {k: v for k, v in cfg.items() if k != "warm_start"},
        "warm_start": ws,
        "task": task.spec(),
        "alphabet": task.alphabet() if not cfg["path"] else None,
        "seed": int(seed),
        "device": torch.device(device).type,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _lr_at(step: int, ws: dict) -> float:
    steps, warm = ws["steps"], max(0, int(ws["warmup_steps"]))
    if warm and step < warm:
        return ws["lr"] * (step + 1) / warm
    frac = (step - warm) / max(1, steps - warm)
    lo = ws["min_lr_ratio"]
    return ws["lr"] * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


@torch.no_grad()
def expected_pass1(model: torch.nn.Module, batch: dict, temperature: float = 1.0) -> float:
    """Mean probability of sampling exactly the reference response (demo + EOS) at
    ``temperature``: the expected pass@1 of that sampler, up to other correct spellings.
    Exact (no sampling noise), one forward pass."""
    was_training = model.training
    model.eval()
    logp, _ = token_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["prompt_len"],
                             temperature)
    model.train(was_training)
    seq = (logp * batch["response_mask"]).sum(-1)
    return float(seq.exp().mean())


def sft_warm_start(model: torch.nn.Module, tokenizer, task, ws: dict, seed: int,
                   device: torch.device,
                   callback: Optional[Callable[[int, torch.nn.Module, float], None]] = None) -> dict:
    """Supervised fine-tuning on ``task`` demonstrations: loss on response tokens (demo + EOS).

    ``ws`` holds the warm-start fields (see ``ablate.schema.WarmStartConfig``). With ``target_pass1`` set, training
    stops at the first check (every ``check_every`` steps) where the expected pass@1 at temperature
    1 on a fixed probe of ``probe_size`` training problems reaches the target; ``steps`` is then a
    cap. This pins the RL starting point across seeds (the SFT curve of a tiny model on addition
    has a seed-dependent knee). ``callback(step, model, loss)`` runs after each optimizer step."""
    from ablate.schema import WarmStartConfig
    from ablate.spec.translate import check
    ws = check(WarmStartConfig, ws, "model.warm_start.").model_dump()
    steps, bs = int(ws["steps"]), int(ws["batch_size"])
    target = ws["target_pass1"]
    rng = np.random.default_rng([int(seed), 0x5F7])
    probe = None
    if target is not None:
        probe_probs = task.train_problems(int(ws["probe_size"]), np.random.default_rng([int(seed), 0x9B0]))
        probe = encode_pairs(tokenizer, [p.prompt for p in probe_probs], [p.demo or "" for p in probe_probs],
                             device=device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=ws["lr"], betas=(0.9, 0.98),
                            weight_decay=ws["weight_decay"])
    losses: list[float] = []
    est = None
    done = 0
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for step in range(steps):
            probs = task.train_problems(bs, rng)
            if any(p.demo is None for p in probs):
                raise ConfigError(f"model.warm_start: task {task.name!r} has problems without a "
                                  "demonstration; set model.warm_start.steps=0")
            b = encode_pairs(tokenizer, [p.prompt for p in probs], [p.demo for p in probs],
                             device=device)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, ws)
            logp, _ = token_logprobs(model, b["input_ids"], b["attention_mask"], b["prompt_len"], 1.0)
            m = b["response_mask"]
            loss = -(logp * m).sum() / m.sum().clamp_min(1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if ws["max_grad_norm"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), ws["max_grad_norm"])
            opt.step()
            losses.append(float(loss.detach()))
            done = step + 1
            if callback is not None:
                callback(done, model, losses[-1])
                model.train()
            if probe is not None and (done % int(ws["check_every"]) == 0 or done == steps):
                est = expected_pass1(model, probe)
                if est >= float(target):
                    break
    model.eval()
    tail = losses[-10:] if losses else [float("nan")]
    return {"steps": done, "max_steps": steps, "seconds": time.perf_counter() - t0,
            "loss": sum(tail) / len(tail), "first_loss": losses[0] if losses else float("nan"),
            "probe_pass1": est, "reached_target": None if target is None else bool(est is not None and est >= float(target))}


@contextlib.contextmanager
def _cache_lock(entry: Path):
    """An exclusive lock on one warm-start cache entry (``<root>.locks/<key>.lock``), so
    concurrent trials never delete or replace an entry another one is reading; no lock on a
    read-only cache."""
    import fcntl

    locks = entry.parent.with_name(entry.parent.name + ".locks")
    try:
        locks.mkdir(parents=True, exist_ok=True)
        f = open(locks / f"{entry.name}.lock", "a")
    except OSError:
        yield
        return
    try:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(d: Path) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(d.iterdir())
            if p.is_file() and p.name != "ablate_warmstart.json"}


def cache_corruption(d: Path) -> Optional[str]:
    """Why the cache entry ``d`` is corrupt (a missing file, a checksum that differs from the one
    recorded at save time), or None when it is intact: only then may it be deleted."""
    try:
        meta = json.loads((d / "ablate_warmstart.json").read_text())
    except (OSError, ValueError) as e:
        return f"ablate_warmstart.json unreadable ({type(e).__name__})"
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, dict) or not files:
        return None  # written before checksums: nothing to verify against
    for name, digest in files.items():
        p = d / str(name)
        if not p.is_file():
            return f"{name} is missing"
        if _sha256(p) != digest:
            return f"{name} does not match its checksum"
    return None


def _save_atomic(model, tokenizer, final: Path, meta: dict) -> None:
    """Write into a temporary directory, record every file's checksum, rename into place (under
    the entry's lock; an entry another process finished first is kept)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        with _quiet_hf():
            model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        meta = {**meta, "files": _manifest(tmp)}
        (tmp / "ablate_warmstart.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        with _cache_lock(final):
            try:
                os.rename(tmp, final)  # atomic; fails if another process finished first
            except OSError:
                if not (final / "ablate_warmstart.json").is_file():
                    raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load_cached(cache_dir: Path, dtype, attn: Optional[str], device) -> Optional[tuple]:
    """(model, tokenizer, meta) from an intact cache entry, or None to rebuild. The entry is
    deleted only when it is verifiably corrupt; any other load error (memory, threads, a
    transient I/O error) leaves it for the trials that share it."""
    with _cache_lock(cache_dir):
        if not (cache_dir / "ablate_warmstart.json").is_file():
            return None
        try:
            model, tok = _load_local(cache_dir, dtype, attn)
            meta = json.loads((cache_dir / "ablate_warmstart.json").read_text())
            return model.to(device).eval(), tok, meta
        except Exception as e:  # noqa: BLE001 - any loader error; deleted only when verified corrupt
            why = cache_corruption(cache_dir)
            if why is None:
                log.warning("warm-start cache %s could not be loaded (%s); it is intact, so it is "
                            "kept and this run warm-starts without it", cache_dir, e)
                return None
            log.warning("warm-start cache %s is corrupt (%s); rebuilding it", cache_dir, why)
            shutil.rmtree(cache_dir, ignore_errors=True)
            return None


def build_policy(model_cfg: Any, task, seed: int, device: torch.device | str = "cpu") -> Policy:
    """The policy for ``task``: a tiny LM (char tokenizer over ``task.alphabet()``) or the local
    checkpoint at ``model_cfg.path``, optionally SFT-warm-started on the task's demonstrations."""
    cfg = _resolve_cfg(model_cfg)
    # applied after the (cached) warm start, so not part of its cache key
    lora_cfg, grad_ckpt = cfg.pop("lora"), bool(cfg.pop("gradient_checkpointing"))
    if lora_cfg is not None:
        from ablate.policy.lora import lora_config
        lora_config(lora_cfg)  # validate before anything is built
    device = torch.device(device)
    dtype = DTYPES[cfg["dtype"]]
    ws = cfg["warm_start"]
    do_warm = int(ws["steps"]) > 0 and (not cfg["path"] or ws["on_checkpoint"])
    info: dict[str, Any] = {"source": cfg["path"] or f"tiny-{cfg['arch']}", "warm_start": None}

    cache_dir: Optional[Path] = None
    if do_warm and ws["cache"]:
        cache_dir = cache_root() / warm_start_key(cfg, task, seed, device)
        t0 = time.perf_counter()
        loaded = _load_cached(cache_dir, dtype, cfg["attn_implementation"], device)
        if loaded is not None:
            progress.note("warm_start", cache="hit", force=True)
            model, tok, meta = loaded
            info["warm_start"] = {**meta.get("result", {}), "cache_hit": True, "path": str(cache_dir),
                                  "load_seconds": time.perf_counter() - t0}
            return _finish(model, tok, info, apply_prompt_format(task, tok), lora_cfg, grad_ckpt)

    if cfg["path"]:
        progress.note("loading_model", force=True, path=str(cfg["path"]))
        model, tok = _load_local(cfg["path"], dtype, cfg["attn_implementation"])
    else:
        tok = build_tokenizer(task.alphabet(), model_max_length=max(4096, cfg["max_position_embeddings"]))
        model = _new_tiny_model(cfg, tok, seed)
    task = apply_prompt_format(task, tok)
    model.to(device)
    if do_warm:
        cache = "miss" if cache_dir is not None else "off"

        def tick(step: int, _model, _loss: float) -> None:
            progress.note("warm_start", cache=cache, step=step, target=int(ws["steps"]))

        progress.note("warm_start", cache=cache, step=0, target=int(ws["steps"]), force=True)
        result = sft_warm_start(model, tok, task, ws, seed, device, callback=tick)
        progress.note("warm_start", cache=cache, step=result["steps"], target=int(ws["steps"]),
                      done=True, force=True)
        info["warm_start"] = {**result, "cache_hit": False, "path": str(cache_dir) if cache_dir else None}
        if cache_dir is not None:
            meta = {"result": result, "model": {k: v for k, v in cfg.items() if k != "warm_start"},
                    "warm_start": ws, "task": task.spec(), "seed": seed}
            try:
                _save_atomic(model, tok, cache_dir, meta)
            except OSError as e:  # a read-only cache must not stop training
                log.warning("could not write warm-start cache %s: %s", cache_dir, e)
    return _finish(model, tok, info, task, lora_cfg, grad_ckpt)


def _finish(model, tok, info: dict, task, lora_cfg, grad_ckpt: bool) -> Policy:
    """LoRA adapters and gradient checkpointing go on after the warm start."""
    from ablate.policy.lora import apply_lora
    if grad_ckpt:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model = apply_lora(model, lora_cfg)
    model.eval()
    info["num_params"] = count_params(model)
    info["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info.update(describe_model(model, lora=lora_cfg is not None))
    return Policy(model=model, tokenizer=tok, info=info, task=task)


def describe_model(model: torch.nn.Module, lora: bool = False) -> dict:
    """What the start-of-run line and summary.json say about the policy (as TRL and verl print):
    architecture, dtype, total distinct parameters (tied counted once) and trainable ones."""
    hf_cfg = getattr(model, "config", None)
    archs = list(getattr(hf_cfg, "architectures", None) or [])
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    first = next(model.parameters(), None)
    return {"architecture": archs[0] if archs else type(model).__name__,
            "dtype": str(first.dtype).removeprefix("torch.") if first is not None else None,
            "total_params": total, "lora": bool(lora)}


def model_line(info: dict) -> str:
    """One line: checkpoint, architecture, dtype, parameters (and trainable with LoRA)."""
    def n(x: Any) -> str:
        x = int(x or 0)
        return f"{x / 1e9:.2f}B" if x >= 1e9 else f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x:,}"

    ws = info.get("warm_start") or {}
    warm = ("" if not ws else f"; warm start: {'cache hit' if ws.get('cache_hit') else 'trained'}"
            f" ({ws.get('steps', '?')} steps)")
    total, trainable = info.get("total_params"), info.get("trainable_params")
    share = f" ({100 * trainable / total:.2f}%)" if total and trainable is not None else ""
    return (f"model {info.get('source')}: {info.get('architecture')}, {info.get('dtype')}, "
            f"{n(total)} parameters, {n(trainable)} trainable{share}"
            + (" (LoRA)" if info.get("lora") else "") + warm)
