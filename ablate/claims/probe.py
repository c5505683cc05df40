"""Probe claims (``kind: probe``): claims about an estimator tested at a fixed policy with the
counterfactual estimator probe (``ablate.probe``), not over diverging training runs.

Both arms' gradients are computed on the same B rollout batches at the same checkpoint (the base
overrides' model: the warm start, or ``model.path``). The replicate is the batch: per batch, the
probe's leave-one-out squared deviation ``sq_dev`` (its mean is the arm's ``trace_cov``; divided by
the arm's ‖E g‖² for ``rel_var``), so a − b is a paired t over the B batches
(``ablate.stats.compare(paired=True)``). The LOO terms of one arm share ḡ_{−b} and are therefore
weakly correlated (O(1/B)); with B ≳ 16 the paired t is the stated approximation.

A probe's result is stored as ``<output_dir>/<file name>/<claim id>.json`` with the claim's probe
spec; ``ablate claims`` reuses a stored result whose spec matches and re-runs the probe otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from ablate.errors import ConfigError
from ablate.stats import ALPHA, compare

from .evaluate import ClaimResult
from .spec import Claim, ProbeFile, is_probe_file, parse_probe_file


def load_probe_file(path: Path) -> ProbeFile | None:
    """The probe claim file at ``path`` (validated, arms composed), or None for a search space."""
    from ablate.spec.yaml import load_file  # bounded, duplicate keys rejected

    data = load_file(path, f"claims {path}")
    if not is_probe_file(data):
        return None
    pf = parse_probe_file(data, source=f"claims {path}")
    from ablate.probe.estimators import compose_arms

    for c in pf.claims:  # every override resolves and the arms share the data, before any run
        try:
            compose_arms(list(c.base), arms_of(c))
        except ConfigError as e:
            raise ConfigError(f"claims {path}: claims.{c.id}: {e}") from None
    return pf


def labels(c: Claim) -> tuple[str, str]:
    return " ".join(c.overrides("a")), " ".join(c.overrides("b"))


def arms_of(c: Claim) -> dict[str, list[str]]:
    """Probe arms: b first (its rollouts are sampled by b's trainer; b is the bias reference)."""
    la, lb = labels(c)
    return {lb: c.overrides("b"), la: c.overrides("a")}


def spec_of(c: Claim) -> dict:
    """What determines a probe's result (a stored result is reused only when this matches)."""
    return {"base": list(c.base), "a": c.overrides("a"), "b": c.overrides("b"), "batches": c.batches}


def result_path(output_dir: Path, pf: ProbeFile, c: Claim) -> Path:
    return Path(output_dir) / pf.name / f"{c.id}.json"


def load_result(path: Path, c: Claim) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("spec") == spec_of(c) else None


def run_probe_file(pf: ProbeFile, output_dir: Path, log: Callable[[str], None]) -> int:
    """Run (or reuse) the probe of every claim of the file."""
    from ablate.probe.estimators import probe_estimators
    from ablate.tracking.provenance import git_commit
    from ablate.tracking.run_store import to_jsonable

    for c in pf.claims:
        path = result_path(output_dir, pf, c)
        if load_result(path, c) is not None:
            log(f"[claims] {pf.name}/{c.id}: probe result on disk, reused")
            continue
        log(f"[claims] {pf.name}/{c.id}: probing {c.batches} shared batches")
        t0 = time.time()
        res = probe_estimators(list(c.base), arms_of(c), batches=int(c.batches),
                               log=lambda m: log(f"[claims] {c.id}: {m}"))
        out = {"spec": spec_of(c), "wall_s": time.time() - t0, "git_commit": git_commit(),
               "result": res.to_dict()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(to_jsonable(out), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        (path.with_suffix(".md")).write_text(res_markdown(out), encoding="utf-8")
    return 0


def res_markdown(stored: dict) -> str:
    from ablate.probe.estimators import ArmStats, ProbeResult

    r = dict(stored["result"])
    r["arms"] = [ArmStats(**a) for a in r["arms"]]
    return ProbeResult(**r).markdown()


def per_batch(stored: dict, label: str, metric: str) -> list[float]:
    """An arm's per-batch values of the claim's metric (mean = the arm's trace_cov / rel_var)."""
    arm = next(a for a in stored["result"]["arms"] if a["label"] == label)
    vals = [float("nan") if v is None else float(v) for v in arm["sq_dev"]]
    if metric == "rel_var":
        m2 = float(arm["mean_norm"]) ** 2
        return [v / m2 if m2 > 0 else float("nan") for v in vals]
    return vals


def evaluate_probe_claim(stored: dict, c: Claim, name: str, alpha: float = ALPHA) -> ClaimResult:
    """a − b on the claim's metric, paired over the shared batches (uncorrected; Holm is applied
    over the family by ``evaluate_family``)."""
    la, lb = labels(c)
    xa, xb = per_batch(stored, la, c.metric), per_batch(stored, lb, c.metric)
    comp = compare(xa, xb, paired=True, alpha=alpha, margin=c.margin, effect=c.effect, expect=c.expect)
    comp = _with_method(comp, f"paired t over {len(xa)} shared rollout batches (probe)")
    mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
    return ClaimResult(claim=c, comparison=comp, mean_a=mean(xa), mean_b=mean(xb), n_a=len(xa),
                       n_b=len(xb), seeds=list(range(len(xa))), sweep=name)


def _with_method(comp, method: str):
    from dataclasses import replace

    return replace(comp, method=method)


def probe_results(entries) -> tuple[list[ClaimResult], list[str], list[tuple]]:
    """(claim results, notes for probes not run yet, (file, ProbeFile, stored) rows for the report)."""
    results, notes, rows = [], [], []
    for path, pf, output_dir in entries:
        for c in pf.claims:
            stored = load_result(result_path(output_dir, pf, c), c)
            if stored is None:
                notes.append(f"{pf.name}/{c.id}: no probe result on disk (not run yet); claim missing.")
                continue
            results.append(evaluate_probe_claim(stored, c, pf.name))
            rows.append((path, pf, c, stored))
    return results, notes, rows


__all__ = ["evaluate_probe_claim", "load_probe_file", "per_batch", "probe_results", "run_probe_file"]
