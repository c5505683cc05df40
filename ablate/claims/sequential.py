"""Sequential seeds for claim sweeps (``seeds: {min, max, batch}``): ``ablate claims`` runs the first
``min`` seeds, looks at every claim, and adds seed batches (each a sweep of its own next to the
first, ``<name>.seeds<i>-<j>``) until every claim is decided or ``max`` is reached.

Each look tests the claims with a paired t against the look's nominal level from Lan–DeMets
O'Brien–Fleming-type alpha spending (``ablate.stats.sequential``); Holm across the claims by
recycling: with r claims already decided by a rejection, the others spend α/(m − r) (Maurer & Bretz
2013). A claim is decided at a look when it is reproduced / contradicted, or when its repeated
confidence interval lies within ±margin (or ±effect when no margin is declared): equivalent.
Claims still undecided at ``max`` get the fixed-n verdict rule (underpowered / inconclusive).
Every look is kept in ``ClaimResult.looks`` and printed by the claims report.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from ablate.stats import ALPHA, SequentialPlan
from ablate.stats.sequential import holm_look
from ablate.tracking.sweep_reader import Sweep

from .evaluate import ClaimResult, arm_values, evaluate_claim, evaluate_family

DECIDED = ("reproduced", "contradicted", "equivalent")


def batch_names(name: str, plan: SequentialPlan) -> list[tuple[str, list[int]]]:
    """(sweep name, its seeds) per look: the first look is the sweep itself."""
    out = [(name, list(range(plan.ns[0])))]
    for lo, hi in zip(plan.ns, plan.ns[1:]):
        out.append((f"{name}.seeds{lo}-{hi - 1}", list(range(lo, hi))))
    return out


def merge(sweeps: list[Sweep]) -> Sweep:
    """One Sweep of several seed batches of the same design (trial ids prefixed by their batch)."""
    if len(sweeps) == 1:
        return sweeps[0]
    trials, metrics = [], []
    for k, sw in enumerate(sweeps):
        t = sw.trials.copy()
        t["run_dir"] = [str(sw.path / d) for d in t["run_dir"]]  # relative to its own sweep dir
        pre = f"b{k}:" if k else ""
        t["trial_id"] = pre + t["trial_id"].astype(str)
        m = sw.metrics.copy()
        if not m.empty:
            m["trial_id"] = pre + m["trial_id"].astype(str)
        trials.append(t)
        metrics.append(m)
    first = sweeps[0]
    return replace(first, trials=pd.concat(trials, ignore_index=True),
                   metrics=pd.concat(metrics, ignore_index=True),
                   warnings=[w for sw in sweeps for w in sw.warnings],
                   skipped=[s for sw in sweeps for s in sw.skipped])


def evaluate_sequential(sweep: Sweep, claims: list, plan: SequentialPlan) -> list[ClaimResult]:
    """Every look the seeds on disk allow, Holm-recycled alpha spending, the look history, and
    each claim's verdict (decided at a look, or the fixed-n rule at ``max`` seeds)."""
    have = len(set(sweep.full_budget()["seed"].dropna().tolist())) if not sweep.trials.empty else 0
    m = sum(1 for c in claims if not c.misspecified)
    history: dict[str, list] = {c.id: [] for c in claims}
    decided: dict[str, str] = {}
    rejected = 0
    for k, n in enumerate(plan.ns):
        if n > have:
            break
        last = n == plan.ns[-1]
        family = {}
        for c in claims:
            if c.id in decided or c.misspecified:
                continue
            sa, sb, _, _ = arm_values(sweep, c, max_seeds=n)
            shared = sorted(set(sa.index) & set(sb.index))
            if len(shared) >= 2:
                family[c.id] = ((sa[shared] - sb[shared]).to_numpy(float),
                                {"expect": c.expect, "stop_within": c.margin or c.effect})
        looked, rejected = holm_look(family, plan, k, m, rejected, last)
        for cid, lk in looked.items():
            history[cid].append(lk)
            if lk.decision in DECIDED:
                decided[cid] = lk.decision
    fixed = {r.claim.id: r for r in evaluate_family([evaluate_claim(sweep, c) for c in claims])}
    out = []
    for c in claims:
        r = replace(fixed[c.id], looks=history[c.id])
        if not c.misspecified:
            r = _sequential_verdict(r, decided.get(c.id, "continue"), plan)
        out.append(r)
    return out


def _sequential_verdict(r: ClaimResult, decision: str, plan: SequentialPlan) -> ClaimResult:
    """The claim's comparison at its last look, with that look's repeated CI and decision. A claim
    no boundary decided is never reproduced / contradicted / equivalent (the fixed-n test at the
    last look would spend alpha the design did not plan): underpowered when its MDE exceeds the
    declared effect, else inconclusive."""
    k = r.comparison
    if decision in DECIDED:
        verdict = decision
    elif r.claim.effect is not None and not (k.mde <= r.claim.effect):
        verdict = "underpowered"
    else:
        verdict = "inconclusive"
    if not r.looks:
        method = f"group-sequential, not yet looked at (fewer than {plan.n_min} seeds)"
        return replace(r, comparison=replace(k, method=method, p_adjusted=float("nan"), verdict=verdict))
    lk = r.looks[-1]
    more = lk.n < plan.n_max and decision not in DECIDED
    method = (f"paired t, group-sequential (O'Brien–Fleming-type spending), look "
              f"{len(r.looks)} at {lk.n} of ≤ {plan.n_max} seeds"
              + ("; undecided, more seeds to come" if more else ""))
    comp = replace(k, low=lk.low, high=lk.high, estimate=lk.estimate, p_value=lk.p_value,
                   p_adjusted=float("nan"), method=method, verdict=verdict)
    return replace(r, comparison=comp)


def all_decided(results: list[ClaimResult], plan: SequentialPlan) -> bool:
    """True when every well-specified claim was decided at a look, or the last look is done."""
    for r in results:
        if r.claim.misspecified:
            continue
        if not r.looks or (r.looks[-1].decision not in DECIDED and r.looks[-1].n < plan.n_max):
            return False
    return True


def plan_of(space, alpha: float = ALPHA) -> SequentialPlan | None:
    """The sweep's sequential plan at ``alpha`` (its family's share of the run's alpha)."""
    sr = getattr(space, "seed_range", None)
    return SequentialPlan(sr["min"], sr["max"], sr.get("batch", 1), alpha=alpha) if sr else None


def load_batches(output_dir: Path, name: str, plan: SequentialPlan) -> list[Sweep]:
    """The seed batches of a sequential claim sweep found on disk, in look order."""
    from ablate.tracking.sweep_reader import SweepFormatError, load_sweep

    out = []
    for bname, _ in batch_names(name, plan):
        try:
            out.append(load_sweep(output_dir / bname))
        except SweepFormatError:
            break
    return out


__all__ = ["all_decided", "batch_names", "evaluate_sequential", "load_batches", "merge", "plan_of"]
