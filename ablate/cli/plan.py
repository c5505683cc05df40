"""``ablate plan <search space or sweep dir> [--effect Δ]``: power planning from a pilot sweep.

For each claim (or, without claims, the two best combinations on the target metric): the arms'
per-seed values over the shared seeds give each arm's seed SD and the between-arm correlation ρ;
the paired difference has SD σ_d = √(σ_a² + σ_b² − 2ρσ_aσ_b). Printed: the MDE (80% power) at the
current number of seeds, and the seeds per arm needed to detect Δ (``--effect``, else the claim's
declared effect, else the observed difference) with a paired and with an unpaired design.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablate.claims.evaluate import arm_values, sweep_claims
from ablate.claims.probe import labels, load_probe_file, load_result, per_batch, result_path
from ablate.claims.sequential import load_batches, merge, plan_of
from ablate.cli.claims import DEFAULT_OUTPUT_DIR
from ablate.errors import ConfigError
from ablate.stats import ALPHA, mde, seeds_needed
from ablate.stats.power import design_se
from ablate.tracking.sweep_reader import SweepFormatError, load_sweep


@dataclass
class PlanRow:
    name: str
    n: int
    sd_a: float
    sd_b: float
    rho: float
    sd_diff: float
    observed: float
    effect: float
    effect_source: str
    mde_now: float
    seeds_paired: int
    seeds_unpaired: int
    unit: str = "seeds"  # the replicate: seeds, or a probe claim's shared rollout batches

    def line(self) -> str:
        need = lambda k: f"{k}" if k > 0 else "more than 10000"  # noqa: E731
        u = self.unit
        return (f"{self.name}: {self.n} shared {u}; SD a {self.sd_a:.4g}, b {self.sd_b:.4g}, "
                f"correlation {self.rho:+.2f}, SD of a − b {self.sd_diff:.4g}; observed a − b "
                f"{self.observed:+.4g}. MDE at n = {self.n} (paired t, 80% power): {self.mde_now:.4g}. "
                f"To detect {self.effect:.4g} ({self.effect_source}): {need(self.seeds_paired)} {u} "
                f"per arm paired, {need(self.seeds_unpaired)} unpaired.")


def plan_pair(name: str, a: np.ndarray, b: np.ndarray, effect: float | None, source: str,
              alpha: float = ALPHA) -> PlanRow:
    """Planning numbers from paired per-seed values ``a``, ``b`` (same order = same seed)."""
    n = int(a.size)
    sd_a, sd_b = float(np.std(a, ddof=1)), float(np.std(b, ddof=1))
    d = a - b
    sd_d = float(np.std(d, ddof=1))
    rho = float(np.corrcoef(a, b)[0, 1]) if sd_a > 0 and sd_b > 0 else float("nan")
    obs = float(d.mean())
    eff = abs(effect) if effect else abs(obs)
    src = source if effect else "the observed difference"
    return PlanRow(name, n, sd_a, sd_b, rho, sd_d, obs, eff, src, mde(*design_se(sd_d, n, True), alpha),
                   seeds_needed(eff, sd_d, paired=True, alpha=alpha),
                   seeds_needed(eff, sd_a, paired=False, sd_b=sd_b, alpha=alpha))


def _pilot(target: Path):
    """(sweep, claims) of a sweep dir, or of the sweep a search space file writes."""
    if target.is_dir():
        sweep = load_sweep(target)
        return sweep, sweep_claims(sweep)
    if not target.is_file():
        raise ConfigError(f"plan: {str(target)!r} is neither a sweep directory nor a search space file")
    from ablate.sweep.space import load_search_space

    space = load_search_space(target)
    sweep_dir = Path(space.output_dir) / space.name
    try:
        seq = plan_of(space)
        sweep = merge(load_batches(sweep_dir.parent, space.name, seq)) if seq else load_sweep(sweep_dir)
    except (SweepFormatError, ValueError):
        raise ConfigError(f"plan: no pilot sweep of {target} at {sweep_dir}; run it first with a few "
                          "seeds (e.g. seeds: 3)") from None
    return sweep, sweep_claims(sweep) or list(space.claims)


def _probe_rows(target: Path, effect: float | None, alpha: float) -> list[PlanRow] | None:
    """Planning rows of a probe claim file from its stored probe results (None: not a probe file)."""
    pf = load_probe_file(target) if target.is_file() else None
    if pf is None:
        return None
    rows = []
    for c in pf.claims:
        stored = load_result(result_path(Path(DEFAULT_OUTPUT_DIR), pf, c), c)
        if stored is None:
            raise ConfigError(f"plan: no probe result of {c.id} under {DEFAULT_OUTPUT_DIR}/{pf.name}; run "
                              f"`ablate claims {target}` first")
        la, lb = labels(c)
        row = plan_pair(f"claim {c.id} ({c.metric}, probe)", np.asarray(per_batch(stored, la, c.metric)),
                        np.asarray(per_batch(stored, lb, c.metric)), effect or c.effect,
                        "--effect" if effect else "the claim's effect", alpha)
        row.unit = "batches"
        rows.append(row)
    return rows


def plan_rows(target: Path, effect: float | None = None, alpha: float = ALPHA) -> list[PlanRow]:
    probe = _probe_rows(target, effect, alpha)
    if probe is not None:
        return probe
    sweep, claims = _pilot(target)
    rows = []
    for c in claims:
        sa, sb, _, _ = arm_values(sweep, c)
        shared = sorted(set(sa.index) & set(sb.index))
        if len(shared) < 2:
            continue
        rows.append(plan_pair(f"claim {c.id} ({c.metric}, {c.aggregation})", sa[shared].to_numpy(float),
                              sb[shared].to_numpy(float), effect or c.effect,
                              "--effect" if effect else "the claim's effect", alpha))
    if not claims:
        rows += _top_two(sweep, effect, alpha)
    return rows


def _top_two(sweep, effect, alpha) -> list[PlanRow]:
    """The two best combinations on the target metric, paired by seed."""
    fb = sweep.full_budget()
    if fb.empty:
        return []
    means = fb.groupby("combo")[sweep.target_col].mean().sort_values(ascending=sweep.mode == "min")
    if len(means) < 2:
        return []
    ka, kb = means.index[:2]
    pa = fb[fb["combo"] == ka].groupby("seed")[sweep.target_col].mean()
    pb = fb[fb["combo"] == kb].groupby("seed")[sweep.target_col].mean()
    shared = sorted(set(pa.index) & set(pb.index))
    if len(shared) < 2:
        return []
    return [plan_pair(f"{sweep.metric}: best two combinations ({ka} − {kb})", pa[shared].to_numpy(float),
                      pb[shared].to_numpy(float), effect, "--effect", alpha)]


def main(target: str, effect: float | None = None) -> int:
    if effect is not None and not effect > 0:
        raise ConfigError(f"plan: --effect must be > 0, got {effect}")
    rows = plan_rows(Path(target), effect)
    if not rows:
        print(f"[plan] {target}: nothing to plan from (need ≥ 2 seeds shared by the arms of a claim "
              "or by two combinations)")
        return 0
    for r in rows:
        print("[plan] " + r.line())
    return 0
