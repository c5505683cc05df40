"""Shared helpers of the benchmarks: timing, statistics, machine description, the tiny policy.

Every section returns a list of result rows (see :func:`row`) plus free-form details; the entry
point (``bench/__main__.py``) prints them as one table and writes them to JSON.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------

@dataclass
class Section:
    """What one benchmark section returns: table rows and details for the JSON file."""

    name: str
    rows: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    seconds: float = 0.0
    error: Optional[str] = None
    load: Optional[float] = None  # cores other processes kept busy while the section ran


def row(metric: str, value: Optional[float], *, unit: str = "x", target: Optional[str] = None,
        met: Optional[bool] = None, note: str = "") -> dict:
    """One table row. ``target`` is a string like '<= 0.67'; ``met`` is evaluated from it when None."""
    if met is None and target is not None and value is not None:
        met = check_target(value, target)
    return {"metric": metric, "value": value, "unit": unit, "target": target, "met": met, "note": note}


def check_target(value: float, target: str) -> bool:
    op, _, num = target.strip().partition(" ")
    t = float(num)
    return {"<=": value <= t, ">=": value >= t, "<": value < t, ">": value > t}[op]


def median(xs: Iterable[float]) -> float:
    xs = [float(x) for x in xs]
    return statistics.median(xs) if xs else float("nan")


def iqr(xs: Sequence[float]) -> tuple[float, float]:
    xs = sorted(float(x) for x in xs)
    if not xs:
        return float("nan"), float("nan")
    if len(xs) < 4:
        return xs[0], xs[-1]
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def timeit(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time several variants round-robin (order reversed every other round) so that slow drift of
    the machine's speed (other processes, thermal) hits every variant alike. The cyclic garbage
    collector is off while timing, as in the standard library's ``timeit``: a collection inside
    one variant's call would be charged to it (one full collection per call instead would cost
    seconds in a process holding many objects, e.g. the test suite)."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out: dict[str, list[float]] = {n: [] for n in names}
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            order = names if r % 2 == 0 else names[::-1]
            for n in order:
                t0 = time.perf_counter()
                fns[n]()
                out[n].append(time.perf_counter() - t0)
    finally:
        if was_enabled:
            gc.enable()
    return out


@contextlib.contextmanager
def quiet(enabled: bool = True):
    """Silence stdout/stderr of chatty libraries (TRL, Ray, W&B) while a section runs."""
    if not enabled:
        yield
        return
    buf_o, buf_e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_o), contextlib.redirect_stderr(buf_e):
        yield


class CpuMeter:
    """How many cores *other* processes kept busy while a block ran: the machine's busy CPU time
    (/proc/stat) minus this process's own (and its reaped children's) CPU time, over the wall
    time. The 1-minute load average cannot tell, since it counts the benchmark itself. Ray
    workers of the sweep section are not children of this process and count as "other"."""

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy(), self._own()

    @staticmethod
    def _busy() -> Optional[float]:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
        return (sum(v[:8]) - idle) / hz

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def other_cores(self) -> Optional[float]:
        b1 = self._busy()
        if b1 is None or self.busy0 is None:
            return None
        wall = max(time.perf_counter() - self.t0, 1e-9)
        return max(0.0, ((b1 - self.busy0) - (self._own() - self.own0)) / wall)


def load_average() -> Optional[tuple[float, float, float]]:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover
        return None


# --------------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(mod: str) -> Optional[str]:
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:
        return None


def machine_info() -> dict:
    import torch
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": mem,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {m: _version(m) for m in ("torch", "transformers", "trl", "accelerate", "ray",
                                               "wandb", "hydra-core", "tokenizers", "ablate-upge")},
        "load_average_at_start": load_average(),
    }


# --------------------------------------------------------------------------------------------
# the tiny policy shared by ablate, TRL and the floor
# --------------------------------------------------------------------------------------------

# ablate's embedded setup: the tiny Llama of conf/model/tiny.yaml (char tokenizer over the task's
# alphabet), without the SFT warm start so that every framework starts from the same random
# weights (built with the same seed by the same function), and the default 2-digit addition task.
BASE_OVERRIDES = [
    "model.warm_start.steps=0",     # identical random init everywhere; no cached SFT
    "tracker=none",                 # local run store only (TRL: report_to=none)
    "regularizers=none",            # no KL (TRL beta=0)
    "eval.every=0",                 # ablate still evaluates before step 1 and after the last step;
    "eval.num_prompts=4", "eval.n=2",  # make those two evals tiny (they are outside the timed steps)
    "eval.num_samples_logged=0",
    "train.lr=1e-4", "train.weight_decay=0.0", "train.max_grad_norm=1.0",
    "rollout.temperature=1.0", "rollout.top_p=1.0", "rollout.top_k=0",
]


@dataclass
class StepSetup:
    """One workload: prompts × group size × completion length (+ ablate overrides)."""

    prompts: int = 32
    group: int = 8
    max_new_tokens: int = 8
    steps: int = 6
    microbatches: int = 2
    seed: int = 0
    extra: list[str] = field(default_factory=list)

    @property
    def batch(self) -> int:
        return self.prompts * self.group

    def overrides(self, method: str = "grpo") -> list[str]:
        return [f"method={method}", *BASE_OVERRIDES,
                f"train.steps={self.steps}", f"train.prompts_per_step={self.prompts}",
                f"train.group_size={self.group}", f"train.microbatches={self.microbatches}",
                f"rollout.max_new_tokens={self.max_new_tokens}", f"seed={self.seed}", *self.extra]

    def label(self) -> str:
        return f"B={self.batch} ({self.prompts}x{self.group}), T={self.max_new_tokens}"


def compose(overrides: Sequence[str]):
    from ablate.config import compose_config
    return compose_config(list(overrides))


def build_tiny(setup: StepSetup, method: str = "grpo"):
    """(model, tokenizer, task, cfg) exactly as ablate's trainer builds them for ``setup`` (the task
    with its prompts in the tokenizer's format, e.g. a chat template's)."""
    import torch
    from ablate.policy import build_policy
    from ablate.tasks import build_task

    cfg = compose(setup.overrides(method))
    torch.manual_seed(int(cfg.seed))
    task = build_task(cfg.task)
    pol = build_policy(cfg.model, task, int(cfg.seed), "cpu")
    return pol.model, pol.tokenizer, pol.task, cfg


class GenerateMeter:
    """Seconds inside HF ``generate`` and the tokens it sampled (each row up to and including its
    first end id, else the whole budget), for whichever framework calls it: ablate's HF engine,
    TRL's trainer (its CPU rollout is the same ``model.generate``) and the floor. Patches
    ``GenerationMixin.generate`` while the block runs (bench only). With ``rows``, only calls that
    sample that many rows count (a training batch, not ablate's small evals)."""

    def __init__(self, rows: Optional[int] = None):
        self.rows = rows
        self.seconds, self.tokens, self.calls = 0.0, 0, 0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    def _count(self, model, out, kwargs: dict) -> int:
        import torch
        from ablate.rollout.common import cut_at_eos
        ids = out if isinstance(out, torch.Tensor) else out.sequences
        new = ids[:, kwargs["input_ids"].shape[1]:]
        eos = getattr(kwargs.get("generation_config") or model.generation_config, "eos_token_id", None)
        return int(cut_at_eos(new, [] if eos is None else eos, 0)[1].sum())  # mask incl. the end id

    @contextlib.contextmanager
    def measure(self):
        from transformers.generation.utils import GenerationMixin
        original = GenerationMixin.generate
        meter = self

        def timed(model, *args, **kwargs):
            t0 = time.perf_counter()
            out = original(model, *args, **kwargs)
            dt = time.perf_counter() - t0
            if meter.rows in (None, kwargs["input_ids"].shape[0]):
                meter.seconds += dt
                meter.tokens += meter._count(model, out, kwargs)
                meter.calls += 1
            return out

        GenerationMixin.generate = timed
        try:
            yield self
        finally:
            GenerationMixin.generate = original


def state_digest(model) -> str:
    """A short hash of the weights (to show that the frameworks start from the same policy)."""
    import hashlib
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def set_threads(n: Optional[int]) -> None:
    import torch
    if n:
        torch.set_num_threads(int(n))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
