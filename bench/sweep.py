"""Section 4: per-trial overhead of ``ablate sweep`` and the speed-up of concurrent trials.

The same N tiny training runs (GRPO, seeds 0..N-1, 1 torch thread each) are run
  (a) directly: ``Trainer(cfg).run()`` in this process, configs composed beforehand, no tracker;
  (b) as ``ablate sweep`` (``sweep_main``: Ray Tune + Hydra compose per trial + W&B offline + run
      store with each run's record) with ``max_concurrent: 1``;
  (c) the same sweep with ``max_concurrent: 2`` on the 2 cores.
Overhead per trial = (wall(b) − Σ wall(a)) / N, split into the fixed part (Ray start/stop and
the driver before the first / after the last trial, from the trials' own timestamps) and the
marginal per-trial part (the rest). Speed-up = wall(c) / wall(b).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import psutil

from bench.common import Section, log, row

BASE = ["model.warm_start.steps=0", "regularizers=none", "threads=1",
        "train.steps=6", "train.prompts_per_step=16", "train.group_size=8",
        "eval.every=0", "eval.num_prompts=4", "eval.n=2", "eval.num_samples_logged=0"]


def _space(path: Path, name: str, seeds: list[int], concurrent: int, out: Path) -> Path:
    import yaml
    data = {"name": name, "base_overrides": BASE, "methods": ["grpo"], "seeds": seeds,
            "metric": "eval/pass@1", "mode": "max", "max_concurrent": concurrent,
            "resources": {"cpu": 1}, "output_dir": str(out),
            "wandb": {"project": "ablate-bench", "mode": "offline"}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def direct(seeds: list[int]) -> dict:
    from ablate.config import compose_config
    from ablate.train.trainer import Trainer

    cfgs = [compose_config(BASE + ["method=grpo", f"seed={s}"]) for s in seeds]
    walls, runs = [], []
    for cfg in cfgs:
        t0 = time.perf_counter()
        tr = Trainer(cfg)
        t1 = time.perf_counter()
        tr.run(progress=False)
        t2 = time.perf_counter()
        walls.append(t2 - t0)
        runs.append(t2 - t1)
    return {"trial_s": walls, "trainer_run_s": runs, "total_s": sum(walls)}


FRESH_PROCESS = r"""
import json, os, sys, tempfile, time
os.environ.setdefault("WANDB_MODE", "offline"); os.environ.setdefault("WANDB_SILENT", "true")
base = json.loads(sys.argv[1])
t = {}
t0 = time.perf_counter(); import torch; t["import torch"] = time.perf_counter() - t0
t0 = time.perf_counter(); import ablate.train.trainer, ablate.train.api
t["import ablate trainer"] = time.perf_counter() - t0
from ablate.config import compose_config, to_plain
t0 = time.perf_counter(); cfg = compose_config(base + ["method=grpo", "seed=0"])
t["hydra compose"] = time.perf_counter() - t0
d = tempfile.mkdtemp()
from ablate.tracking import build_tracker
t0 = time.perf_counter()
tr = build_tracker(cfg.tracker, run_dir=d, config=to_plain(cfg), name="b", group=None,
                   job_type=None, tags=[])
t["tracker init (run store + W&B offline)"] = time.perf_counter() - t0
from ablate.train.trainer import Trainer
t0 = time.perf_counter(); trainer = Trainer(cfg, tracker=tr)
t["Trainer() (first model build: lazy transformers imports)"] = time.perf_counter() - t0
t0 = time.perf_counter(); trainer.run(progress=False); t["Trainer.run"] = time.perf_counter() - t0
t0 = time.perf_counter(); tr.finish(status="finished", summary={})
t["tracker finish"] = time.perf_counter() - t0
print(json.dumps(t))
"""


def fresh_process_breakdown() -> dict:
    """What one trial pays in a new worker process (Tune runs each trial in a fresh one)."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS, json.dumps(BASE)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode != 0:
        return {"error": out.stderr[-1000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


class TreeCPU:
    """CPU seconds (user + system) of this process and of every process below it (Ray's processes,
    the trial workers, wandb-core), by process name: psutil's descendants sampled every ``period`` s
    (a process's last ``period`` before it exits is missed). Wall times of a loaded machine are
    noise; these are not."""

    def __init__(self, period: float = 0.2):
        self.period, self.seen = period, {}
        self._stop = threading.Event()
        self._me = psutil.Process()

    def _tree(self) -> dict:
        """{process (pid and start time): (CPU s so far, name)} of every process below this one."""
        out = {}
        for p in self._me.children(recursive=True):
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    out[p] = (t.user + t.system, p.name())
            except psutil.Error:  # it exited meanwhile
                pass
        return out

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.seen.update(self._tree())
            self._stop.wait(self.period)

    def _own(self) -> float:
        t = self._me.cpu_times()
        return t.user + t.system

    def __enter__(self) -> "TreeCPU":
        self._self0 = self._own()
        # what processes already running (a Ray head this process started) had used before
        self._base = {p: cpu for p, (cpu, _) in self._tree().items()}
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        by: dict[str, float] = {"driver (this process)": self._own() - self._self0}
        for p, (cpu, name) in self.seen.items():
            by[name] = by.get(name, 0.0) + cpu - self._base.get(p, 0.0)
        self.by_process = {k: round(v, 2) for k, v in sorted(by.items(), key=lambda kv: -kv[1])}
        self.total = round(sum(by.values()), 2)


def _trial_windows(rows: list[dict]) -> list[tuple[float, float, float]]:
    """(started, ended, Trainer.run wall) of each run, from its record in the run store."""
    return sorted((float(r["started"]), float(r["ended"]), float(r.get("wall_s") or 0.0))
                  for r in rows if r.get("started") and r.get("ended"))


@contextlib.contextmanager
def ray_head(root: Path) -> Iterator[str]:
    """A Ray head started once for sweeps that attach to it (``--address``): ``ray start --head
    --block`` with 2 CPUs, no dashboard, its own temp dir; SIGTERM stops it and its processes."""
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    ray_cli = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen([str(ray_cli), "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={root / 'ray'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("bench: `ray start --head` did not come up")
                time.sleep(0.2)
        time.sleep(2.0)  # the raylet registers after the GCS answers
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def sweep(seeds: list[int], concurrent: int, root: Path, tag: str,
          address: str | None = None) -> dict:
    from ablate.sweep.cli import sweep_main
    from ablate.tracking.trials import read_trials

    name = f"bench-{tag}"
    f = _space(root / f"{name}.yaml", name, seeds, concurrent, root / "runs")
    t_start = time.time()
    t0 = time.perf_counter()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), TreeCPU() as cpu:
        # the bench writes under a temporary directory, outside the working tree
        rc = sweep_main([str(f), "--no-report", "--allow-outside",
                         *(["--address", address] if address else ["--num-cpus", "2"])])
    wall = time.perf_counter() - t0
    t_end = time.time()
    if rc != 0:
        raise RuntimeError(f"ablate sweep exited {rc}: {buf.getvalue()[-1500:]}")
    sd = root / "runs" / name
    rows = read_trials(sd)
    win = _trial_windows(rows)
    first = min((a for a, _, _ in win), default=t_start)
    last = max((b for _, b, _ in win), default=t_end)
    return {"rc": rc, "wall_s": wall, "statuses": [r.get("status") for r in rows],
            "fixed_s": (first - t_start) + (t_end - last), "trials_window_s": last - first,
            # inside run_trial (compose, W&B offline init, run store, Trainer.run, finish)
            "in_trial_s": [b - a for a, b, _ in win],
            # Trainer.run alone (as recorded by run_config)
            "trainer_run_s": [t for _, _, t in win],
            # between one trial's end and the next one's start (Tune scheduling, worker
            # process start, imports) -- meaningful for the sequential sweep
            "gaps_s": [b[0] - a[1] for a, b in zip(win, win[1:])],
            "time_to_first_trial_s": first - t_start, "after_last_trial_s": t_end - last,
            # CPU seconds of the driver and every process it started, by name (bench/README.md,
            # "Sweep packing")
            "cpu_s": cpu.total, "cpu_by_process_s": cpu.by_process}


def run(quick: bool = False) -> Section:
    sec = Section("sweep")
    t0 = time.perf_counter()
    seeds = [0, 1] if quick else [0, 1, 2, 3]
    N = len(seeds)
    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as d:
        root = Path(d)
        os.environ.setdefault("ABLATE_RUNS", str(root / "direct"))
        log(f"[bench] sweep: {N} trials direct")
        dr = direct(seeds)
        log(f"[bench] sweep: {N} trials, ablate sweep, 1 at a time")
        s1 = sweep(seeds, 1, root, "seq")
        res = {"direct": dr, "sequential": s1}
        if not quick:
            log(f"[bench] sweep: {N} trials, ablate sweep, 2 at a time")
            s2 = sweep(seeds, 2, root, "conc")
            res["concurrent"] = s2
            log("[bench] sweep: the same two sweeps attached to a running Ray (`ray start --head`)")
            with ray_head(root) as address:
                res["attached_sequential"] = sweep(seeds, 1, root, "att-seq", address)
                res["attached_concurrent"] = sweep(seeds, 2, root, "att-conc", address)
        os.chdir(old_cwd)
    log("[bench] sweep: cost breakdown of one trial in a fresh process")
    res["fresh_process_trial_s"] = fresh_process_breakdown()
    over = (s1["wall_s"] - dr["total_s"]) / N
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    gap = mean(s1["gaps_s"])
    in_trial = mean(s1["in_trial_s"])
    marginal = in_trial + gap - mean(dr["trial_s"])
    sec.rows.append(row(f"sweep overhead per trial (marginal, {N} trials)", marginal, unit="s",
                        target="<= 2",
                        note=f"between trials {gap:.2f} s (Tune + worker start); in trial "
                             f"{in_trial:.2f} s of which Trainer.run {mean(s1['trainer_run_s']):.2f} s; "
                             f"direct {mean(dr['trial_s']):.2f} s (run {mean(dr['trainer_run_s']):.2f} s)"))
    sec.rows.append(row("sweep fixed cost per sweep (Ray start/stop, driver)", s1["fixed_s"], unit="s",
                        target="<= 5", note="wall before the first trial starts plus after the last ends"))
    sec.rows.append(row(f"sweep overhead per trial (incl. Ray start/stop / {N})", over, unit="s",
                        note=f"fixed {s1['fixed_s']:.1f} s per sweep; wall {s1['wall_s']:.1f} s "
                             f"vs direct {dr['total_s']:.1f} s"))
    for how, seq, conc in (("", "sequential", "concurrent"),
                           (", attached", "attached_sequential", "attached_concurrent")):
        if conc in res:
            s1, s2 = res[seq], res[conc]
            if how:
                sec.rows.append(row("sweep fixed cost per sweep, attached to a running Ray",
                                    s1["fixed_s"], unit="s", target="<= 5",
                                    note="`ray start --head` once, then `ablate sweep --address`: "
                                         "no Ray start/stop in the sweep"))
            sec.rows.append(row(f"sweep 2 concurrent / sequential wall{how}",
                                s2["wall_s"] / s1["wall_s"], target="<= 0.6",
                                note=f"{s2['wall_s']:.1f} s vs {s1['wall_s']:.1f} s (trials only: "
                                     f"{s2['trials_window_s'] / s1['trials_window_s']:.2f}x); "
                                     f"CPU {s2['cpu_s']:.1f} vs {s1['cpu_s']:.1f} s"))
    sec.details = res
    sec.details["overhead_per_trial_s"] = over
    sec.details["marginal_overhead_per_trial_s"] = marginal
    sec.seconds = time.perf_counter() - t0
    return sec
