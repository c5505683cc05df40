"""`ablate claims`: run every claim sweep (search_spaces/claims/*.yaml), then write one combined
claims report (reports/claims/claims.md + claims.html) and regenerate the README's claims block.

A claim sweep already finished on disk with the same search space is reused, an interrupted one is
resumed, anything else is run; ``--report-only`` runs nothing. Verdicts come from
``ablate.claims.evaluate`` (the same code as the per-sweep report's Claims section), Holm-corrected
over every claim of the run.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from ablate.claims.evaluate import evaluate_claim, evaluate_family, sweep_claims
from ablate.claims.probe import load_probe_file, probe_results, run_probe_file
from ablate.claims.sections import claim_blocks
from ablate.claims.sequential import (all_decided, batch_names, evaluate_sequential, load_batches, merge,
                                      plan_of)
from ablate.errors import ConfigError
from ablate.render import Bullets, Code, Heading, Para, Table, to_html, to_markdown
from ablate.stats import ALPHA, VERDICTS
from ablate.tracking.provenance import REPO_ROOT
from ablate.tracking.sweep_reader import SweepFormatError, load_sweep

CLAIMS_DIR = Path("search_spaces") / "claims"
FIXED = "(fixed-n claims)"  # family_shares' key of the probe claims and fixed-seed sweeps
DEFAULT_OUTPUT_DIR = "runs/claims"  # `ablate claims --output-dir` default: the claim sweeps and probes
BEGIN = "<!-- claims:begin"
END = "<!-- claims:end -->"


def claim_files(files: list[str] | None) -> list[Path]:
    if files:
        return [Path(f) for f in files]
    root = CLAIMS_DIR if CLAIMS_DIR.is_dir() else REPO_ROOT / CLAIMS_DIR
    out = sorted(root.glob("*.yaml"))
    if not out:
        raise ConfigError(f"claims: no claim sweeps found under {root}")
    return out


def _state(sweep_dir: Path) -> str:
    try:
        return str(json.loads((sweep_dir / "sweep.json").read_text()).get("status") or "unknown")
    except (OSError, json.JSONDecodeError):
        return "absent"


def run_claims(files: list[str] | None = None, *, report_only: bool = False,
               output_dir: str = DEFAULT_OUTPUT_DIR, report_dir: str = "reports/claims",
               readme: str | None = "README.md", num_cpus: float | None = None,
               log: Callable[[str], None] | None = None) -> int:
    from ablate.sweep.space import load_search_space

    log = log or (lambda m: print(m, flush=True))
    paths = claim_files(files)
    spaces, probes = [], []
    for p in paths:  # validate every file before running any
        pf = load_probe_file(p)
        if pf is not None:
            probes.append((p, pf, Path(output_dir)))
            continue
        space = load_search_space(p, output_dir=output_dir)
        if not space.claims:
            raise ConfigError(f"claims: {p} has no claims: section")
        spaces.append((p, space))
    shares = family_shares(spaces, probes)
    rc = 0
    for p, pf, out in ([] if report_only else probes):
        log(f"[claims] {pf.name}: probe claims of {p}")
        rc = rc or run_probe_file(pf, out, log)
    for p, space in spaces:
        if report_only:
            continue
        if plan_of(space) is not None:
            rc = rc or _run_sequential(p, space, Path(output_dir), num_cpus, log,
                                       ALPHA * shares.get(space.name, 1.0))
        else:
            rc = rc or _run_one(p, space, Path(output_dir), num_cpus, log)
    out = write_claims_report([(p, s, Path(output_dir) / s.name) for p, s in spaces], Path(report_dir),
                              probes=probes)
    log(f"[claims] report: {out / 'claims.md'}")
    if readme and Path(readme).is_file():
        cmd = "ablate claims" + (" --report-only" if report_only else "") + (
            "".join(f" {p}" for p in files) if files else "")
        if update_readme(Path(readme), out, command=cmd):
            log(f"[claims] README claims block regenerated: {readme}")
    return rc


def _run_one(p: Path, space, output_dir: Path, num_cpus, log) -> int:
    """Run (or resume, or reuse when finished) one claim sweep."""
    from ablate.sweep.runner import run_sweep, space_changes

    sweep_dir = output_dir / space.name
    state = _state(sweep_dir)
    if state == "finished":
        if space_changes(sweep_dir, space) != []:
            raise ConfigError(f"claims: {sweep_dir} holds a finished sweep of a different search "
                              f"space than {p}; move it away to rerun")
        log(f"[claims] {space.name}: finished sweep on disk, reused")
        return 0
    log(f"[claims] {space.name}: {'resuming' if state != 'absent' else 'running'} {p}")
    return run_sweep(p, output_dir=str(output_dir), resume=state != "absent", num_cpus=num_cpus, log=log)


def _tested(claims) -> int:
    return sum(1 for c in claims if not c.misspecified)


def family_shares(spaces, probes) -> dict[str, float]:
    """Each family's share of the run's alpha, in proportion to its declared tested claims: every
    sequential sweep is a family (Holm by recycling within it), the probe claims and fixed-seed
    sweeps together are one (Holm within it). Bonferroni across families keeps the family-wise
    error over every claim of the run at ≤ ALPHA. Key: the sequential sweep's name, or FIXED."""
    sizes: dict[str, int] = {FIXED: sum(_tested(pf.claims) for _, pf, _ in probes)}
    for _, space in spaces:
        if plan_of(space) is None:
            sizes[FIXED] += _tested(space.claims)
        else:
            sizes[space.name] = _tested(space.claims)
    total = sum(sizes.values())
    return {k: (m / total if total else 1.0) for k, m in sizes.items()}


def _run_sequential(p: Path, space, output_dir: Path, num_cpus, log, alpha: float = ALPHA) -> int:
    """Seed batches until every claim is decided (ablate.claims.sequential)."""
    import copy

    import yaml

    plan = plan_of(space, alpha)
    for k, (name, seeds) in enumerate(batch_names(space.name, plan)):
        if k:
            sweeps = load_batches(output_dir, space.name, plan)
            results = evaluate_sequential(merge(sweeps), list(space.claims), plan)
            if all_decided(results, plan):
                log(f"[claims] {space.name}: every claim decided or at its max seeds after {len(sweeps)} look(s)")
                return 0
            batch = copy.deepcopy(space)
            batch.name, batch.seeds, batch.seed_range = name, seeds, None
            bfile = output_dir / "_batches" / f"{name}.yaml"
            bfile.parent.mkdir(parents=True, exist_ok=True)
            # empty lists are the defaults (and `methods: []` does not validate)
            data = {k: v for k, v in json.loads(json.dumps(batch.to_dict(), default=str)).items() if v != []}
            bfile.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
            log(f"[claims] {space.name}: undecided; adding seeds {seeds[0]}..{seeds[-1]}")
            code = _run_one(bfile, batch, output_dir, num_cpus, log)
        else:
            code = _run_one(p, space, output_dir, num_cpus, log)
        if code:
            return code
    return 0


def _results(entries, probes=()):
    fixed, notes, probe_rows = probe_results(probes)
    sequential, sweeps = [], []
    shares = family_shares([(p, s) for p, s, _ in entries], probes)
    for path, space, sweep_dir in entries:
        try:
            sweep = load_sweep(sweep_dir)
        except SweepFormatError:
            notes.append(f"{space.name}: no sweep at {sweep_dir} (not run yet); its claims are missing.")
            continue
        claims = sweep_claims(sweep) or list(space.claims)
        sweeps.append((path, space, sweep))
        plan = plan_of(space, ALPHA * shares.get(space.name, 1.0))
        if plan is None:
            fixed += [evaluate_claim(sweep, c) for c in claims]
        else:  # a sequential sweep is its own family (recycled alpha spending)
            merged = merge(load_batches(Path(sweep_dir).parent, space.name, plan))
            sequential += evaluate_sequential(merged, claims, plan)
    return evaluate_family(fixed, shares[FIXED]) + sequential, notes, sweeps, probe_rows, shares


def write_claims_report(entries, out_dir: Path, probes=()) -> Path:
    """claims.md + claims.html from the claim sweeps and probe results on disk (a pure function of
    them). ``probes``: (file, ProbeFile, output dir) of probe claim files; their claims join the
    fixed-n Holm family."""
    results, notes, sweeps, probe_rows, shares = _results(entries, probes)
    blocks: list = [Heading(2, "Summary", "summary")]
    counts = {v: sum(r.verdict == v for r in results) for v in VERDICTS}
    blocks.append(Para(
        f"{len(results)} claim(s) from {len(sweeps)} sweep(s)"
        + (f" and {len(probe_rows)} estimator probe(s)" if probe_rows else "")
        + "".join(f"{', ' if i else ': '}{n} {v}" for i, (v, n) in enumerate((v, n) for v, n in counts.items() if n))
        + ". Every sweep "
        "runs the embedded tiny char-level policy on CPU; a verdict is about this toy setting, not the "
        "paper's scale. Regenerate with `ablate claims` (runs what is missing) or "
        "`ablate claims --report-only`."))
    if len(shares) > 1 or shares.get(FIXED, 1.0) < 1:
        blocks.append(Para(
            f"Error control over the whole run: the family-wise error rate over every tested claim is "
            f"at most {ALPHA:g}. The run's alpha is split across its families in proportion to their "
            "tested claims (Bonferroni across families): "
            + "; ".join(f"{k} {ALPHA * v:.3g}" for k, v in shares.items() if v > 0)
            + ". Within the fixed-n family the p (Holm) column is the Holm-adjusted p divided by the "
            f"family's share (compare it with {ALPHA:g}); a sequential sweep spends its share with "
            "alpha-spending boundaries and Holm by recycling (its looks' nominal levels include it)."))
    if notes:
        blocks.append(Bullets(notes))
    blocks += claim_blocks(results, heading=True, with_sweep=True)
    blocks.append(Heading(2, "Sweeps", "sweeps"))
    rows = []
    for path, space, sweep in sweeps:
        t = sweep.trials
        wall = float(np.nansum(t["wall_s"])) if not t.empty else float("nan")
        fin = int((t["status"] == "finished").sum()) if not t.empty else 0
        rows.append([[Code(space.name)], [Code(str(path))], f"{fin}/{len(t)}",
                     _seeds_text(space), f"{wall:.0f}",
                     str(sweep.meta.get("git_commit") or "n/a")[:10],
                     [Code(f"reports/{space.name}/report.md")]])
    blocks.append(Table(["sweep", "file", "finished/trials", "seeds", "compute (s)", "commit", "full report"],
                        rows, ["l", "l", "r", "l", "r", "l", "l"]))
    for path, space, sweep in sweeps:
        blocks.append(Para([Code(space.name), ": " + (space.description or "") + " Fixed: "]
                           + [Code(" ".join(space.base_overrides) or "(none)")]))
    if probe_rows:
        blocks += _probe_blocks(probe_rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = "Published claims re-tested by ablate"
    (out_dir / "claims.md").write_text(to_markdown(title, blocks), encoding="utf-8")
    (out_dir / "claims.html").write_text(to_html(title, blocks), encoding="utf-8")
    (out_dir / "claims.json").write_text(json.dumps([{
        "sweep": r.sweep, **r.claim.to_dict(), "verdict": r.verdict, "diff": r.diff.point,
        "ci": [r.diff.lo, r.diff.hi], "p": r.comparison.p_value, "p_holm": r.comparison.p_adjusted,
        "mde": r.comparison.mde, "method": r.comparison.method, "n_seeds": r.n_seeds,
        "n_seeds_a": r.comparison.n_a, "n_seeds_b": r.comparison.n_b,
        "n_a": r.n_a, "n_b": r.n_b, "mean_a": r.mean_a, "mean_b": r.mean_b, "sentence": r.sentence,
        "looks": [lk.to_dict() for lk in r.looks]} for r in results], indent=1, default=str) + "\n",
        encoding="utf-8")
    return out_dir


def _probe_blocks(probe_rows) -> list:
    """The Probes section: one row per probe claim (file, batches, compute, commit)."""
    rows = [[[Code(pf.name)], [Code(str(path))], [Code(c.id)], str(c.batches),
             f"{float(st.get('wall_s') or float('nan')):.0f}", str(st.get("git_commit") or "n/a")[:10]]
            for path, pf, c, st in probe_rows]
    out: list = [Heading(2, "Probes", "probes"), Table(
        ["probe file", "file", "claim", "batches", "compute (s)", "commit"], rows,
        ["l", "l", "l", "r", "r", "l"])]
    for path, pf, c, st in probe_rows:
        res = st["result"]
        out.append(Para([Code(c.id), f": {pf.description} Shared: "]
                        + [Code(" ".join(c.base) or "(none)")]
                        + [f"; a: {' '.join(c.overrides('a'))}, b: {' '.join(c.overrides('b'))}; "
                           f"{res['params']} parameters, reference for the bias: `{res['reference']}`."]))
        g = lambda x: "n/a" if x is None else f"{x:.4g}"  # noqa: E731
        out.append(Table(["arm", "‖E g‖", "tr Cov (one batch)", "tr Cov / ‖E g‖²", "bias² vs ref", "cos to ref"],
                         [[[Code(a["label"])], g(a["mean_norm"]), g(a["trace_cov"]), g(a["rel_var"]),
                           g(a["bias_sq"]), g(a["cosine"])] for a in res["arms"]],
                         ["l", "r", "r", "r", "r", "r"]))
    return out


def readme_block(report_dir: Path, command: str = "ablate claims") -> str:
    """The README's generated claims block: one line per claim, linking the combined report."""
    data = json.loads((report_dir / "claims.json").read_text(encoding="utf-8"))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"{BEGIN} (generated by `{command}`, {stamp}; do not edit by hand) -->",
             f"Latest result: [{report_dir}/claims.md]({report_dir}/claims.md) "
             f"([HTML]({report_dir}/claims.html)).", "",
             "| claim | arXiv | verdict | a − b [95% CI] | p (Holm p / look level) | MDE | seeds (probe: batches) a/b | looks |",
             "|---|---|---|---|---|---|---|---|"]
    for d in data:
        lo, hi = d["ci"]
        ci = "no CI" if _nan(lo) or _nan(hi) else f"[{lo:+.3g}, {hi:+.3g}]"
        diff = "n/a" if _nan(d["diff"]) else f"{d['diff']:+.3g}"
        p = ("n/a" if _nan(d.get("p")) else f"{d['p']:.3g}") + _adjusted_text(d)
        mde = "n/a" if _nan(d.get("mde")) else f"{d['mde']:.3g}"
        n = f"{d['n_seeds_a']}/{d['n_seeds_b']}" if "n_seeds_a" in d else f"{d['n_a']}/{d['n_b']}"
        lines.append(f"| {d['id']} | {d['arxiv']} | {d['verdict']} | {diff} {ci} | {p} | {mde} | "
                     f"{n} | {len(d.get('looks') or []) or '–'} |")
    lines.append(END)
    return "\n".join(lines)


def _adjusted_text(d: dict) -> str:
    """Holm-adjusted p of a fixed-n claim; for a sequential claim, the level its last look was
    tested at (its p is compared with that level, not adjusted)."""
    if not _nan(d.get("p_holm")):
        return f" ({d['p_holm']:.3g})"
    looks = d.get("looks") or []
    if looks and not _nan(looks[-1].get("level")):
        return f" (look level {looks[-1]['level']:.2g})"
    return " (n/a)"


def _seeds_text(space) -> str:
    sr = space.seed_range
    if sr:
        return f"sequential: {sr['min']} to {sr['max']}, batches of {sr['batch']}"
    return ", ".join(str(s) for s in space.seeds)


def _nan(x) -> bool:
    return x is None or x != x


def update_readme(readme: Path, report_dir: Path, command: str = "ablate claims") -> bool:
    """Replace the block between the claims markers; False when the README has no markers."""
    text = readme.read_text(encoding="utf-8")
    pat = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pat.search(text):
        return False
    new = pat.sub(lambda _: readme_block(report_dir, command), text, count=1)
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return True
