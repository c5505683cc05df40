"""Assemble the report document from a loaded sweep and write report.md, report.html and
figures/*.png. ``generate_report`` is the entry point (re-exported by ablate.report).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np

from ablate.claims.evaluate import evaluate_sweep, report_metrics
from ablate.claims.sections import claim_blocks
from ablate.render import (Bullets, Code, Details, Heading, Image, Link, Para, Pre, Strong, Table,
                           is_missing, to_html, to_markdown)
from ablate.tracking.sweep_reader import Sweep, load_sweep

from . import plots
from .aggregate import (EXTRA_COLS, Combo, UnitComparison, build_combos, build_units, factor_columns,
                        fixed_settings, load_default_presets, normalise_presets, poi_matrix, seed_noise_sd,
                        top_comparisons, trial_desc, varying)
from .effects import Interaction, adjust_exploratory, importances, interactions, marginal_effects
from .findings import fci, findings, num as _g, pval as _p
from .metric_stats import metric_blocks

TOP_COMPARE = 5
TOP_SAMPLES = 3
SAMPLES_PER_COMBO = 3
MAX_SAMPLE_CHARS = 1200
MAX_LEADERBOARD = 100
MAX_INTERACTION_TABLES = 4


def _dur(s: float) -> str:
    if not np.isfinite(s):
        return "n/a"
    h, rem = divmod(int(round(s)), 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s"


def _first_line(s, n: int = 160) -> str:
    line = (str(s).strip().splitlines() or [""])[0]
    return line if len(line) <= n else line[: n - 1] + "…"


def _seed_list(values) -> str:
    vals = sorted({v for v in values if v is not None and v == v}, key=lambda v: (str(type(v)), v))
    return ", ".join(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v) for v in vals) or "none"


class _Doc:
    """What the sections share: the sweep, its analyses (each computed once, here) and the figures
    drawn so far (name → PNG bytes)."""

    def __init__(self, sweep: Sweep, presets: list[dict], metrics) -> None:
        self.sweep, self.metrics, self.figs = sweep, tuple(metrics), {}
        self.combos = build_combos(sweep, presets)
        self.units, self.tk = build_units(sweep, self.combos)
        self.effects = marginal_effects(sweep)
        self.inters, self.not_crossed = interactions(sweep)
        self.n_explore = adjust_exploratory(self.effects, self.inters)
        self.comps = top_comparisons(self.units, sweep.mode, TOP_COMPARE)
        self.imp, self.noise = importances(sweep), seed_noise_sd(self.combos)

    def figure(self, blocks: list, name: str, png: bytes | None, alt: str) -> None:
        """Append the figure (when one was drawn) to ``blocks`` and keep its bytes for figures/."""
        if png is not None:
            self.figs[name] = png
            blocks.append(Image(name, png, alt, ""))


def _overview(d: _Doc) -> list:
    sweep, t = d.sweep, d.sweep.trials
    counts = t["status"].value_counts().to_dict()
    other = sum(v for k, v in counts.items() if k not in ("finished", "failed", "early_stopped"))
    rows = [
        ["Sweep", sweep.name],
        ["Target metric", f"{sweep.metric} ({sweep.mode})"],
        ["Trials", f"{len(t)} total: {counts.get('finished', 0)} finished, {counts.get('failed', 0)} failed, "
                   f"{counts.get('early_stopped', 0)} early-stopped, {other} other (running/pending)"],
        ["Full-budget trials", str(len(sweep.full_budget()))],
        ["Combinations", f"{t['combo'].nunique()} in total, {len(d.combos)} with full-budget results"],
        ["Seeds", _seed_list(t["seed"].tolist())],
        ["Total compute time", f"{_dur(float(np.nansum(t['wall_s'])))} (sum of wall_s)"],
    ]
    return [Table(["field", "value"], rows),
            Para(["How the sweep was set up (search space, versions, fixed settings) is at the "
                  "end: ", Link("Configuration", "#configuration"), "."])]


def _leaderboard(d: _Doc) -> list:
    sweep, combos = d.sweep, d.combos
    blocks: list = [Para(
        f"One row per combination of slots and hyperparameters (seeds pooled), best {sweep.metric} first. "
        "Pass@k: mean over seeds with a 95% t interval. The ranking is descriptive: a row is not "
        "tested against the others here (see the pairwise comparisons). Final entropy, reward and response "
        "length are the last logged values; gradient variance is the mean over the run; wall time is per "
        "seed. Only full-budget finished trials count."
    ), _leaderboard_table(sweep, combos)]
    looks = [f"{c.cid} {c.label}" for c in combos[:MAX_LEADERBOARD] if c.label]
    if looks:
        blocks.append(Para("¹ Catalog look-alikes (same slot classes as a method preset): "
                           + "; ".join(looks) + "."))
    if len(combos) > MAX_LEADERBOARD:
        blocks.append(Para(f"Showing the top {MAX_LEADERBOARD} of {len(combos)} combinations."))
    n_missing = sweep.trials["combo"].nunique() - len(combos)
    if n_missing:
        blocks.append(Para(f"{n_missing} combination(s) have no full-budget result (failed, stopped or still running) and are not ranked."))
    d.figure(blocks, "leaderboard.png", plots.leaderboard_plot(combos, sweep.metric), "Leaderboard forest plot")
    return blocks


def _curves(d: _Doc) -> list:
    sweep, combos = d.sweep, d.combos
    blocks: list = [Para(f"Top {min(plots.TOP_CURVES, len(combos))} combinations by {sweep.metric}; lines are "
                         "means over seeds, bands ±1 standard error.")] if combos else []
    d.figure(blocks, "curves.png", plots.curves_plot(sweep, combos), "Training curves")
    d.figure(blocks, "pass_at_k.png", plots.passk_plot(combos, sweep.pass_ks), "Pass@k vs k")
    if not combos or sweep.metrics.empty:
        blocks.append(Para("No logged metrics to plot."))
    return blocks


def _marginal_means(d: _Doc) -> list:
    metric, effects = d.sweep.metric, d.effects
    blocks: list = [Heading(3, "Marginal means")]
    if not effects:
        return blocks + [Para("No slot or hyperparameter takes more than one value among full-budget trials.")]
    blocks.append(Para(
        f"Mean {metric} per variant of each swept slot and hyperparameter over full-budget trials. "
        + ("Each combination is weighted equally; 95% t intervals come from a linear model with a "
           "mean per combination, seeds as a block effect and one seed variance pooled over the "
           "sweep, so they measure seed noise given the design. The main-effect p is the factor's "
           f"F test, Benjamini–Hochberg corrected over the report's {d.n_explore} factor and "
           "interaction tests (exploratory). " if effects[0].ci_kind == "model" else
           "Combinations are unreplicated, so the interval is a t interval over the level's trials "
           "(it then also contains the spread over the other factors). ")
        + "In non-factorial designs (random, TPE) marginal means are confounded with what the "
        "search chose to sample."
    ))
    rows = [[[Code(eff.name)] + ([" (binned)"] if eff.binned else []) + ([" (conditional)"] if eff.conditional else []),
             [Strong(lv.label)] if lv is eff.best(d.sweep.mode) else lv.label, fci(lv.ci), str(lv.n),
             str(lv.n_combos), _p(eff.p_adjusted) if lv is eff.levels[0] else ""]
            for eff in effects for lv in eff.levels]
    blocks.append(Table(["factor", "variant", f"{metric} [95% CI]", "trials", "combinations",
                         "main effect p (BH)"], rows, ["l", "l", "r", "r", "r", "r"]))
    d.figure(blocks, "marginals.png", plots.marginals_plot(effects, metric), "Marginal means per variant")
    return blocks


def _interaction_table(it: Interaction) -> Table:
    cols = range(len(it.cols))
    rows = [[rname] + [f"{it.means[r, c]:.3f} ({it.counts[r, c]})" for c in cols]
            + [f"{np.mean(it.means[r]):.3f}"] for r, rname in enumerate(it.rows)]
    rows.append(["column mean"] + [f"{np.mean(it.means[:, c]):.3f}" for c in cols] + [""])
    return Table([f"{it.a} \\ {it.b}"] + it.cols + ["row mean"], rows, ["l"] + ["r"] * (len(it.cols) + 1))


def _interactions(d: _Doc) -> list:
    inters = d.inters
    blocks: list = [Heading(3, "Interactions")]
    if inters:
        blocks.append(Para(
            "Cell means (trials) for pairs of swept factors (slots and hyperparameters) whose values are "
            "fully crossed; the residual RMS is "
            "the deviation of the cell means from an additive model (row + column − grand mean): 0 means "
            "no interaction. The interaction p is the F test of the cell-means model (pooled seed "
            "variance), BH-corrected with the factor tests. "
            + (f"Pooled seed noise sd of one trial: {d.noise:.3g}." if np.isfinite(d.noise) else "")
        ))
        for it in inters[:MAX_INTERACTION_TABLES]:
            blocks += [Para([Strong(f"{it.a} × {it.b}"), f" (residual RMS {it.residual_rms:.3g}; "
                             f"interaction p = {_p(it.p)}, BH-adjusted {_p(it.p_adjusted)})"]), _interaction_table(it)]
        if len(inters) > MAX_INTERACTION_TABLES:
            blocks.append(Para("Smaller interactions: " + ", ".join(
                f"{it.a} × {it.b} ({it.residual_rms:.3g})" for it in inters[MAX_INTERACTION_TABLES:]) + "."))
        d.figure(blocks, "interactions.png", plots.interactions_plot(inters, d.sweep.metric), "Interaction heatmaps")
    elif sum(len(v) for v in varying(d.sweep)) < 2:
        blocks.append(Para("Fewer than two factors (slots, hyperparameters) are swept: no interactions "
                           "to show."))
    else:
        blocks.append(Para("No pair of swept factors is fully crossed in the full-budget trials."))
    if d.not_crossed:
        blocks.append(Para("Not fully crossed (skipped): " + ", ".join(f"{a} × {b}" for a, b in d.not_crossed) + "."))
    return blocks


def _importances(d: _Doc) -> list:
    imp = d.imp
    blocks: list = [Heading(3, "Importances")]
    if imp.available:
        fan, ped = imp.fanova or {}, imp.ped_anova or {}
        floor = {e.name: e.p_adjusted for e in d.effects}
        rows = [[Code(n), _g(fan.get(n)), _g(ped.get(n)), _p(floor.get(n))] for n in imp.names]
        blocks += [Para(
            f"Source: {imp.source}; {imp.n_trials} {imp.unit} used"
            + (f", {imp.n_excluded} excluded" if imp.n_excluded else "")
            + ". fANOVA: share of the variance of the target explained by each parameter (random-forest "
            "functional ANOVA). PED-ANOVA (Optuna 5's default): how much each parameter matters for "
            "reaching the top 10% of trials. They answer different questions; both are shown. Both "
            "always rank something first: the noise floor column is the factor's main-effect F test "
            "against the pooled seed variance (BH-adjusted p); an importance whose p is not below "
            "0.05 is not distinguishable from seed noise."),
            Table(["parameter", "fANOVA", "PED-ANOVA", "noise floor: main effect p (BH)"], rows, ["l", "r", "r", "r"])]
        d.figure(blocks, "importances.png", plots.importance_plot(imp), "Parameter importances")
    if imp.notes:
        blocks.append(Bullets(list(imp.notes)))
    return blocks


def _robust(d: _Doc) -> list:
    units, tk = d.units, d.tk
    if not units:
        return [Para("No full-budget results.")]
    strata = f"tasks ({tk})" if tk else "one stratum per combination (its seeds)"
    blocks: list = [Para(
        "Mean over runs with a 95% t interval; interquartile mean (mean of the middle 50% of runs) "
        "and median with a BCa bootstrap interval only from 20 runs (below that a bootstrap "
        f"interval under-covers, so only the point is shown); strata = {strata}. Probability of "
        "improvement P(X better than Y) is the Mann–Whitney statistic over runs (rliable, Agarwal "
        "et al. 2021), shown as a descriptive point estimate."
    )]
    if max(u.iqm.n for u in units) < 4:
        blocks.append(Para("With fewer than 4 runs per unit the IQM trims nothing and equals the mean."))
    if tk:
        blocks.append(Para("Units M01… pool combinations over tasks: " + "; ".join(
            f"{u.uid} = {u.desc} ({', '.join(u.combo_ids)})" for u in units[:MAX_LEADERBOARD])))
    rows = [[u.uid, u.desc, fci(u.iqm), fci(u.mean), fci(u.median), str(u.iqm.n)] for u in units[:MAX_LEADERBOARD]]
    blocks += [Table(["unit", "combination", "IQM [95% CI]", "mean [95% CI]", "median [95% CI]", "runs"],
                     rows, ["l", "l", "r", "r", "r", "r"])] + _pairwise(d)
    ids, pm = poi_matrix(units, d.sweep.mode)
    d.figure(blocks, "robust.png", plots.robust_plot(units, ids, pm, d.sweep.metric), "IQM and probability of improvement")
    return blocks


def _verdict(c: UnitComparison) -> str:
    if c.test.verdict == "untestable":
        return "not testable (single seed)"
    return "differs (adjusted p < 0.05)" if c.test.decided else "within seed noise"


def _pairwise(d: _Doc) -> list:
    comps = d.comps
    if not comps:
        return []
    rows = [[f"{c.a} vs {c.b}", fci(c.test.interval, signed=True), _p(c.test.p_adjusted), _g(c.test.mde), _g(c.poi),
             _verdict(c)] for c in comps]
    return [Heading(3, f"Pairwise comparisons among the top {min(TOP_COMPARE, len(d.units))}"), Para(
        f"{comps[0].test.method.capitalize()} over shared seeds (Welch t when fewer than 2 are shared); p is "
        f"Holm-corrected over all {comps[0].n_family} pairs of ranked units, so choosing the top "
        "ones after seeing the data does not inflate the error rate. MDE: the difference the "
        "pair's test detects with 80% power."),
        Table(["pair", "mean difference X − Y [95% CI]", "p (Holm)", "MDE", "P(X better than Y)", "verdict"],
              rows, ["l", "r", "r", "r", "r", "l"])]


def _failed(d: _Doc) -> list:
    sweep, t = d.sweep, d.sweep.trials
    blocks: list = []
    cid, cols = {c.key: c.cid for c in d.combos}, factor_columns(*varying(sweep))
    failed, stopped = t[t["status"] == "failed"], t[t["status"] == "early_stopped"]
    if len(failed):
        error = {r.Index: str(r.error) if _present(r.error) else "(no error recorded)" for r in failed.itertuples()}
        rows = [[r.trial_id, _combo_cell(cid, cols, failed, r), str(r.seed), _g(r.steps_done),
                 _first_line(error[r.Index])] for r in failed.itertuples()]
        details = [b for r in failed.itertuples() for b in (Para([Code(str(r.trial_id))]), Pre(error[r.Index]))]
        blocks += [Table(["trial", "combination", "seed", "steps", "error"], rows, ["l", "l", "r", "r", "l"]),
                   Details(f"Full error messages ({len(failed)})", details)]
    else:
        blocks.append(Para("No failed trials."))
    if len(stopped):
        rows = [[r.trial_id, _combo_cell(cid, cols, stopped, r), str(r.seed), _g(r.steps_done),
                 _g(stopped.at[r.Index, sweep.target_col])] for r in stopped.itertuples()]
        blocks += [Para(f"Early-stopped trials (truncated; excluded from statistics): {len(stopped)}."),
                   Table(["trial", "combination", "seed", "steps", f"last {sweep.metric}"], rows, ["l", "l", "r", "r", "r"])]
    others = t[~t["status"].isin(["finished", "failed", "early_stopped"])]
    if len(others):
        blocks.append(Para(f"Trials neither finished nor failed (running/pending/other): {len(others)}: "
                           + ", ".join(f"{r.trial_id} ({r.status})" for r in others.itertuples()) + "."))
    return blocks


def _methods(d: _Doc) -> list:
    budget = d.sweep.budget
    return [Bullets([
        f"Full budget: status finished and steps_done ≥ {_g(budget) if budget is not None else 'the budget'}. "
        "Early-stopped (ASHA) trials enter an Optuna study as COMPLETE with truncated values; they are "
        "excluded from every statistic and importance here.",
        "Every interval and p-value comes from ablate.stats (scipy.stats, statsmodels). Intervals: 95% "
        "Student t (a combination's mean over seeds; pass@k); marginal means, level differences and "
        "interactions from a linear model with a mean per combination, seeds as a block effect and one "
        "residual seed variance pooled over the sweep (statsmodels OLS t and F tests). IQM and median "
        "get a BCa bootstrap interval only from 20 runs.",
        "Pairs of units: paired t over shared seeds (Welch t otherwise), Holm-corrected over every "
        "pair of ranked units. Factor and interaction F tests: one exploratory family, "
        "Benjamini–Hochberg corrected. The metrics tables: Benjamini–Hochberg per column. Claims: Holm "
        "over the sweep's claims, with the minimum detectable effect (80% power) of each test.",
        "IQM = scipy.stats.trim_mean(scores, 0.25) over all runs; probability of improvement = "
        "P(X > Y) + ½P(X = Y) over pairs of runs, averaged over tasks (descriptive).",
        "Importances: Optuna FanovaImportanceEvaluator(seed=0) and PedAnovaImportanceEvaluator() on "
        "full-budget trials only.",
    ])]


def _configuration(d: _Doc) -> list:
    """How the sweep was set up: search, budget, provenance, fixed settings, the resolved search
    space, loader notes and skipped trials."""
    sweep, meta = d.sweep, d.sweep.meta
    out: list = [Table(["field", "value"], [
        ["Search algorithm", f"{meta.get('algorithm') or 'n/a'}; scheduler: {meta.get('scheduler') or 'none'}"],
        ["Budget", f"max_t = {meta.get('max_t', 'n/a')}; full budget taken as {_g(sweep.budget)} steps"],
        ["Started / finished", f"{meta.get('started') or 'n/a'} / {meta.get('finished') or 'not finished'}"],
        ["ablate version", str(meta.get("ablate_version") or "n/a")],
        ["Git commit", [Code(str(meta.get("git_commit") or "n/a"))]],
        ["Search space file", [Code(str(meta.get("search_space_file") or "n/a"))]],
    ])]
    fixed = fixed_settings(sweep)
    if fixed:
        codes = [x for k, v in sorted(fixed.items()) for x in (", ", Code(f"{k}={v}"))][1:]
        out.append(Para(["Fixed across the sweep: "] + codes + ["."]))
    out += [Heading(3, "Search space"),
            Pre(sweep.search_space_text or "(search_space.yaml missing)", "yaml", raw_output=False)]
    if sweep.warnings:
        out.append(Details(f"Loader notes ({len(sweep.warnings)})", [Bullets(list(sweep.warnings[:50]))]))
    if sweep.skipped:
        more = [f"... and {len(sweep.skipped) - MAX_SKIPPED} more"] if len(sweep.skipped) > MAX_SKIPPED else []
        out += [Heading(3, f"Skipped trials ({len(sweep.skipped)})"),
                Para("Trials left out of the statistics (excluded) or read only in part, and why."),
                Bullets([skipped_line(s) for s in sweep.skipped[:MAX_SKIPPED]] + more)]
    return out


def _present(v) -> bool:
    return not is_missing(v) and str(v) != ""


def _combo_cell(cid: dict, cols: list, frame, r) -> str:
    """A ranked combination's id, else the trial's own slot/param description."""
    return cid.get(r.combo) or trial_desc(frame.loc[r.Index], cols) or str(r.combo)


def _ci2(iv) -> str:
    """Point estimate over its CI on a second line (keeps the wide leaderboard narrow)."""
    return fci(iv).replace(" [", "\n[").replace(" (no CI", "\n(no CI")


def _leaderboard_table(sweep: Sweep, combos: list[Combo]) -> Table:
    """Optional columns (a target that is not a pass@k, stopped / failed counts) repeat 0 or 1 times."""
    pks = list(sweep.pass_ks)
    own = int(sweep.metric not in {f"eval/pass@{k}" for k in pks})
    bad = int(any(c.n_stopped or c.n_failed for c in combos))
    header = (["#", "combination"] + [f"{sweep.metric} [95% CI]"] * own + [f"pass@{k} [95% CI]" for k in pks]
              + list(EXTRA_COLS) + ["seeds"] + ["stopped / failed"] * bad)
    rows = [[c.cid + ("¹" if c.label else ""), c.desc] + [_ci2(c.target)] * own
            + [_ci2(c.pass_k[k]) if k in c.pass_k else "n/a" for k in pks]
            + [_g(c.extras.get(n)) for n in EXTRA_COLS] + [str(len(c.values))]
            + [f"{c.n_stopped} / {c.n_failed}"] * bad for c in combos[:MAX_LEADERBOARD]]
    return Table(header, rows, ["l", "l"] + ["r"] * (len(header) - 2), css="leaderboard")


def _samples(d: _Doc) -> list:
    """Collapsed generations of the top combinations' last logged step."""
    out: list = []
    for c in d.combos[:TOP_SAMPLES]:
        recs, src = next(((recs, tid) for tid in c.trial_ids if (recs := d.sweep.samples(tid))), ([], None))
        if not recs:
            continue
        last = max((r["step"] for r in recs if isinstance(r.get("step"), (int, float))), default=None)
        pick = [r for r in recs if last is None or r.get("step") == last][:SAMPLES_PER_COMBO]
        inner: list = [Para(["Trial ", Code(str(src)), f", step {_g(last)}."])]
        for i, r in enumerate(pick, 1):
            resp = str(r.get("response", ""))
            if len(resp) > MAX_SAMPLE_CHARS:
                resp = resp[:MAX_SAMPLE_CHARS] + f"… [{len(resp) - MAX_SAMPLE_CHARS} more characters]"
            inner += [Para([Strong(f"Sample {i}"), f" — reward {_g(r.get('reward'))}; prompt:"]),
                      Pre(str(r.get("prompt", ""))[:MAX_SAMPLE_CHARS]), Para("Response:"), Pre(resp)]
        # collapsed: generations are for looking up, not for scrolling past
        out.append(Details(f"{c.cid} {c.desc}: {len(pick)} sample(s)", inner))
    if not out:
        out.append(Para("No samples.jsonl records for the top combinations."))
    return out


def _trials(d: _Doc) -> list:
    """Every trial with its W&B run id, how to upload offline runs and open the Optuna study."""
    sweep, t = d.sweep, d.sweep.trials
    cid = {c.key: c.cid for c in d.combos}
    rows = [[str(r.trial_id), str(r.status), cid.get(r.combo, "—"), str(r.seed), _g(t.at[r.Index, sweep.target_col]),
             _g(r.steps_done), _g(r.wall_s), [Code(str(r.wandb_run_id))] if _present(r.wandb_run_id) else "—"]
            for r in t.sort_values("trial_id", kind="mergesort").itertuples()]
    out: list = [Details(f"All {len(t)} trials", [Table(
        ["trial", "status", "combination", "seed", sweep.metric, "steps", "wall (s)", "W&B run id"],
        rows, ["l", "l", "l", "r", "r", "r", "r", "l"])])]
    offline = t[(t["wandb_mode"].astype(str) == "offline") | t["wandb_dir"].astype(str).str.contains("offline-run")]
    offline = offline[offline["wandb_dir"].map(_present)]
    if len(offline):
        dirs = sorted({_wandb_path(sweep, r.run_dir, str(r.wandb_dir)) for r in offline.itertuples()})
        cmds = Pre("\n".join(f"wandb sync {shlex.quote(d)}" for d in dirs), "bash", raw_output=True)
        out += [Para(f"{len(dirs)} W&B run(s) were logged offline. Upload them from the sweep directory with "
                     "(paths that exist under the sweep directory are given relative to it, others as recorded):"),
                cmds if len(dirs) <= 10 else Details(f"wandb sync commands ({len(dirs)})", [cmds])]
    elif t["wandb_run_id"].map(_present).any():
        out.append(Para("All W&B runs with a recorded id were logged online (or their mode is unknown)."))
    if sweep.journal_path is not None and Path(sweep.journal_path).is_file():
        out += [Para("The Optuna study (each trial's user attributes name its Tune trial, run "
                     "directory and W&B run ids) opens in optuna-dashboard "
                     "(pip install 'ablate-upge[dashboard]'), from the sweep directory:"),
                Pre(f"optuna-dashboard {Path(sweep.journal_path).name}", "bash", raw_output=True)]
    return out


def _wandb_path(sweep: Sweep, run_dir, wandb_dir: str) -> str:
    p = Path(wandb_dir)
    if p.is_absolute():  # recorded absolute: relative when it lies under the sweep directory
        root = next((r for r in (sweep.path, sweep.path.resolve()) if p.is_relative_to(r)), None)
        return str(p.relative_to(root)) if root is not None else wandb_dir
    for q in (sweep.path / str(run_dir) / p, sweep.path / p):
        if q.exists():
            return str(q.relative_to(sweep.path)) if q.is_relative_to(sweep.path) else str(q)
    return wandb_dir


MAX_SKIPPED = 200


def skipped_line(s: dict) -> str:
    kind = "excluded" if s.get("excluded") else "partly read"
    combo = f" ({s['combo']})" if s.get("combo") else ""
    return f"{s['trial_id']}{combo}: {kind}: {s['reason']}"


# What a report contains, in reading order: what was found first, how it was set up last.
# (heading, anchor, blocks); the claims bring their own heading, and only when there are claims.
SECTIONS = (("Overview", "overview", _overview),
            ("Findings", "findings",
             lambda d: [Bullets(findings(d.sweep, d.combos, d.comps, d.effects, d.inters, d.imp, d.tk))]),
            ("", "", lambda d: claim_blocks(r) if (r := evaluate_sweep(d.sweep)) else []),
            ("Leaderboard", "leaderboard", _leaderboard), ("Curves", "curves", _curves),
            ("Slot effects", "slot-effects", lambda d: _marginal_means(d) + _interactions(d) + _importances(d)),
            ("Metrics", "metrics", lambda d: metric_blocks(d.sweep, report_metrics(d.sweep) + list(d.metrics))),
            ("Robust aggregates", "robust", _robust), ("Failed and stopped trials", "failed", _failed),
            ("Sample generations", "samples", _samples), ("Trials and W&B runs", "trials", _trials),
            ("How the numbers are computed", "methods", _methods),
            ("Configuration", "configuration", _configuration))


def generate_report(sweep_dir, out_dir=None, presets=None, log=None, metrics=()) -> Path:
    """Read ``sweep_dir``; write ``report.md``, a self-contained ``report.html`` and ``figures/*.png``
    into ``out_dir`` (default ``reports/<sweep name>``) and return it. ``presets``: the method
    catalog (``ablate methods --json``) for labels, by default ``ablate.methods.catalog``'s. ``log``:
    one line per skipped trial (the console of `ablate report` / `ablate sweep`). ``metrics``: logged
    metrics analysed on top of the defaults and the search space's ``report.metrics``."""
    sweep = load_sweep(sweep_dir)
    if log is not None and sweep.skipped:
        log(f"report: {len(sweep.skipped)} trial(s) skipped or partly read:")
        for s in sweep.skipped[:MAX_SKIPPED]:
            log(f"  {skipped_line(s)}")
    plist = normalise_presets(presets) if presets is not None else load_default_presets()
    doc = _Doc(sweep, plist, metrics)
    title, figures = f"Sweep report: {sweep.name}", doc.figs
    blocks = [b for head, anchor, section in SECTIONS
              for b in ([Heading(2, head, anchor)] if head else []) + section(doc)]
    out = Path(out_dir) if out_dir is not None else Path("reports") / _safe_name(sweep.name)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):
        if old.name not in figures:
            old.unlink()
    for name, png in sorted(figures.items()):
        (fig_dir / name).write_bytes(png)
    (out / "report.md").write_text(to_markdown(title, blocks), encoding="utf-8")
    (out / "report.html").write_text(to_html(title, blocks), encoding="utf-8")
    if log is not None and sweep.journal_path is not None and Path(sweep.journal_path).is_file():
        log(f"report: browse the Optuna study with: optuna-dashboard {sweep.journal_path}")
    return out


def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "sweep"
