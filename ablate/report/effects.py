"""Slot effects: marginal means per slot variant / hyperparameter level, main-effect and interaction
F tests from one linear model of the design (``ablate.stats.CellModel``: a mean per combination,
seeds as blocks, one pooled seed variance; one exploratory BH family, ``adjust_exploratory``), and
fANOVA + PED-ANOVA importances on full-budget trials only (ASHA-stopped ones are COMPLETE in the
Optuna study with truncated values).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from ablate.stats import CellModel, Interval, adjust_p, compare, mean_ci, rejects
from ablate.stats.linear import factor_rows, interaction_rows

from ablate.render import value_text, is_missing
from ablate.tracking.sweep_reader import Sweep

from .aggregate import better_sign, factor_columns, varying

MAX_LEVELS = 8  # numeric hyperparameters with more distinct values are binned into quartiles
MIN_TRIALS_IMPORTANCE = 4


@dataclass
class Level:
    label: str
    n: int
    n_combos: int
    ci: Interval
    cells: list = field(default_factory=list, repr=False)  # the combinations at this level
    values: np.ndarray = field(default_factory=lambda: np.array([]), repr=False)  # its run values


@dataclass
class FactorEffect:
    name: str
    kind: str  # "slot" | "param"
    levels: list[Level]
    binned: bool = False
    conditional: bool = False  # some trials do not have this parameter (they are left out)
    ci_kind: str = "model"  # "model": cell-means linear model, pooled seed variance; "trials"
    model: CellModel | None = field(default=None, repr=False)
    p: float = float("nan")  # main-effect F test against the pooled residual
    p_adjusted: float = float("nan")  # BH over the report's exploratory family

    def diff(self, a: Level, b: Level) -> Interval:
        """Marginal mean of level a minus level b: a model contrast, or (unreplicated designs) a
        Welch t over the levels' trials."""
        if self.model is not None and self.model.fit is not None:
            return self.model.diff(a.cells, b.cells)
        return compare(a.values, b.values, detail=False).interval

    @property
    def spread(self) -> float:
        pts = [lv.ci.point for lv in self.levels if np.isfinite(lv.ci.point)]
        return float(max(pts) - min(pts)) if len(pts) > 1 else 0.0

    def best(self, mode: str) -> Level:
        return max(self.levels, key=lambda lv: (better_sign(mode) * lv.ci.point, lv.label))

    def separated_from_best(self, mode: str) -> tuple[list[Level], list[Level]]:
        """Levels that differ from the best level (its contrast's p, Holm over the factor's levels,
        below 0.05, and the factor's main effect significant after BH), and the rest."""
        best = self.best(mode)
        others = [lv for lv in self.levels if lv is not best]
        p_factor = self.p_adjusted if np.isfinite(self.p_adjusted) else self.p
        if not rejects(p_factor):
            return [], others
        ps = adjust_p([self.diff(best, lv).p for lv in others], "holm")
        sep = [lv for lv, p in zip(others, ps) if rejects(p)]
        return sep, [lv for lv in others if lv not in sep]


@dataclass
class Interaction:
    a: str
    b: str
    rows: list[str]
    cols: list[str]
    means: np.ndarray  # (rows, cols) cell means
    counts: np.ndarray
    residual_rms: float  # RMS of cell means minus the additive (row + col − grand) fit
    p: float = float("nan")  # interaction F test of the cell-means model (pooled seed variance)
    p_adjusted: float = float("nan")  # BH over the report's exploratory family


@dataclass
class Importances:
    source: str = ""
    unit: str = "full-budget trials"
    n_trials: int = 0
    n_excluded: int = 0
    fanova: dict[str, float] | None = None
    ped_anova: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return bool(self.fanova or self.ped_anova)

    @property
    def names(self) -> list[str]:
        """Every evaluated parameter, most important by fANOVA first."""
        fan = self.fanova or {}
        return sorted(set(fan) | set(self.ped_anova or {}), key=lambda k: (-fan.get(k, 0.0), k))


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _numbers(vals: list) -> bool:
    return all(_is_number(v) and math.isfinite(float(v)) for v in vals)


def _many_numbers(vals: list) -> bool:
    """Finite numbers with more than MAX_LEVELS distinct values: binned, or a range in a study."""
    return _numbers(vals) and len(set(vals)) > MAX_LEVELS


def _level_labels(col: pd.Series) -> tuple[pd.Series, list[str], bool]:
    """Map values to level labels; numeric columns with many values become quartile bins."""
    vals = col.tolist()
    if _many_numbers(vals):
        x = col.astype(float).to_numpy()
        edges = np.unique(np.quantile(x, [0, 0.25, 0.5, 0.75, 1.0]))
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
        labels = [f"[{edges[i]:.3g}, {edges[i + 1]:.3g}]" for i in range(len(edges) - 1)]
        return pd.Series([labels[i] for i in idx], index=col.index), labels, True
    labels = ([value_text(v) for v in sorted(set(vals), key=float)] if _numbers(vals)
              else sorted({value_text(v) for v in vals}))
    return col.map(value_text), labels, False


def marginal_effects(sweep: Sweep, values: pd.Series | None = None) -> list[FactorEffect]:
    """Marginal mean of the target per level of each varying slot and hyperparameter over the
    full-budget trials: the mean of the combination means (equal weights, so a lost seed does not
    tilt a level) with a t interval from the model's pooled seed variance, and the main-effect F
    test. Unreplicated designs (random search) fall back to a t interval over the level's trials
    (confounded with the other factors). ``values`` (by trial_id) replaces the target by another
    per-run value; full-budget trials without a finite one are left out."""
    fb = sweep.full_budget()
    y = (fb[sweep.target_col] if values is None else fb["trial_id"].map(values)).to_numpy(dtype=float)
    if values is not None:
        fb, y = fb[np.isfinite(y)], y[np.isfinite(y)]
    if fb.empty:
        return []
    combo = fb["combo"].to_numpy()
    model = CellModel(y, fb["combo"].tolist(), fb["seed"].tolist())
    fitted = model.fit is not None
    out = []
    for name, col in factor_columns(*varying(sweep)):
        present = ~fb[col].map(is_missing).to_numpy(dtype=bool)
        if not present.any():
            continue
        lab, order, binned = _level_labels(fb[col][present])
        lab = lab.reindex(fb.index)
        levels = []
        for lvl in order:
            m = (lab == lvl).to_numpy()
            if not m.any():
                continue
            cells = sorted(set(combo[m].tolist()), key=str)
            levels.append(Level(label=lvl, n=int(m.sum()), n_combos=len(cells),
                                ci=model.mean(cells) if fitted else mean_ci(y[m]), cells=cells, values=y[m]))
        if len(levels) > 1:
            eff = FactorEffect(name=name, kind=col.split(".")[0], levels=levels, binned=binned,
                               conditional=not present.all(), ci_kind="model" if fitted else "trials",
                               model=model if fitted else None)
            if fitted:
                of = {c: lv.label for lv in levels for c in lv.cells}
                _, eff.p, _ = model.f_test(factor_rows(of, [lv.label for lv in levels]))
            out.append(eff)
    return out


def adjust_exploratory(effects: list[FactorEffect], inters: list["Interaction"]) -> int:
    """Benjamini–Hochberg over the report's factor and interaction tests (one exploratory family);
    sets ``p_adjusted`` on each and returns the family size."""
    items = list(effects) + list(inters)
    q = adjust_p([it.p for it in items], "bh")
    for it, v in zip(items, q):
        it.p_adjusted = float(v)
    return int(np.isfinite([it.p for it in items]).sum()) if items else 0


def interactions(sweep: Sweep) -> tuple[list[Interaction], list[tuple[str, str]]]:
    """Cell-mean tables for every pair of varying factors (slot × hyperparameter pairs count as much
    as slot × slot ones) fully crossed in the full-budget trials, largest residual RMS first, and
    the pairs not crossed. Many-valued numeric factors are binned; a trial where a conditional
    parameter is unset does not enter its pairs."""
    fb = sweep.full_budget()
    crossed, not_crossed = [], []
    if fb.empty:
        return [], []
    model = CellModel(fb[sweep.target_col].to_numpy(dtype=float), fb["combo"].tolist(), fb["seed"].tolist())
    for (a, col_a), (b, col_b) in combinations(factor_columns(*varying(sweep)), 2):
        sub = fb[~fb[[col_a, col_b]].map(is_missing).any(axis=1)]
        if sub.empty:
            continue
        y = sub[sweep.target_col].astype(float)
        ca, rows, _ = _level_labels(sub[col_a])
        cb, cols, _ = _level_labels(sub[col_b])
        if len(rows) < 2 or len(cols) < 2:
            continue
        grouped = y.groupby([ca, cb])
        means = grouped.mean().unstack().reindex(index=rows, columns=cols).to_numpy(dtype=float)
        counts = grouped.size().unstack(fill_value=0).reindex(index=rows, columns=cols, fill_value=0).to_numpy(dtype=int)
        if (counts == 0).any():
            not_crossed.append((a, b))
            continue
        grand = means.mean()
        fit = means.mean(axis=1, keepdims=True) + means.mean(axis=0, keepdims=True) - grand
        rms = float(np.sqrt(np.mean((means - fit) ** 2)))
        it = Interaction(a, b, rows, cols, means, counts, rms)
        if model.fit is not None:
            a_of = dict(zip(sub["combo"].tolist(), ca.tolist()))
            b_of = dict(zip(sub["combo"].tolist(), cb.tolist()))
            _, it.p, _ = model.f_test(interaction_rows(a_of, b_of, rows, cols))
        crossed.append(it)
    crossed.sort(key=lambda it: (-it.residual_rms, it.a, it.b))
    return crossed, not_crossed


def _quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _close(a, b) -> bool:
    if _is_number(a) and _is_number(b):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


def _candidate_values(row: pd.Series, sweep: Sweep) -> dict:
    """A trial's slots and params under the study's parameter names (the bare axis names that
    ablate.sweep.space.OptunaSpace suggests)."""
    return {**{s: row.get("slot." + s) for s in sweep.slot_names},
            **{p: row.get("param." + p) for p in sweep.param_names}}


def _memory_study(sweep: Sweep, fb: pd.DataFrame):
    """An in-memory study with one trial per full-budget trial: varying slots as categorical,
    varying hyperparameters as categorical (≤ 8 values) or float/int ranges."""
    optuna = _quiet_optuna()
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    vs, vp = varying(sweep)
    if vs and "method" in vp:
        vp = [p for p in vp if p != "method"]  # presets are slot bundles: avoid collinear factors
    dists, cols = {}, {}
    for name, col, text in ([(s, fb["slot." + s], str) for s in vs]
                            + [(p, fb["param." + p], value_text) for p in vp]):
        vals = [v for v in col.tolist() if not is_missing(v)]
        if vals and text is value_text and _many_numbers(vals):
            lo, hi = float(min(vals)), float(max(vals))
            if all(isinstance(v, (int, np.integer)) for v in vals):
                dists[name], text = IntDistribution(int(lo), int(hi)), int
            else:
                dists[name], text = FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 100), float
        else:
            choices = sorted({text(v) for v in vals})
            if len(choices) < 2:
                continue
            dists[name] = CategoricalDistribution(choices)
        cols[name] = col.map(lambda v, f=text: None if is_missing(v) else f(v))
    study = optuna.create_study(direction="maximize" if sweep.mode == "max" else "minimize")
    # a conditional parameter not sampled in a trial is left out of it
    rows = [{k: v.item() if hasattr(v, "item") else v for k, c in cols.items() if not is_missing(v := c.iloc[i])}
            for i in range(len(fb))]
    study.add_trials([optuna.trial.create_trial(params=p, distributions={k: dists[k] for k in p}, value=y)
                      for p, y in zip(rows, fb[sweep.target_col].astype(float).tolist())])
    return study, dists


def importances(sweep: Sweep) -> Importances:
    """fANOVA and PED-ANOVA (Optuna 5's default evaluator) on full-budget trials only: on the
    sweep's Optuna study when its full-budget trials can be matched, else on an in-memory study."""
    imp = Importances()
    fb = sweep.full_budget().sort_values("trial_id", kind="mergesort")
    n_all_complete = int(sweep.trials["status"].isin(["finished", "early_stopped"]).sum())
    if len(fb) < MIN_TRIALS_IMPORTANCE:
        imp.notes.append(f"Importances skipped: {len(fb)} full-budget trial(s), at least "
                         f"{MIN_TRIALS_IMPORTANCE} needed.")
        return imp
    study = _journal_study(sweep, fb, imp) if sweep.journal_path is not None else None
    if study is None:
        study, dists = _memory_study(sweep, fb)
        if not dists:
            imp.notes.append("Importances skipped: no slot or hyperparameter takes more than one value.")
            return imp
        imp.source, imp.n_trials, imp.n_excluded = ("in-memory Optuna study of the full-budget finished trials",
                                                    len(fb), max(0, n_all_complete - len(fb)))
    _evaluate(study, imp)
    return imp


def _journal_study(sweep: Sweep, fb: pd.DataFrame, imp: Importances):
    """The sweep's own study restricted to its full-budget trials, or None (with a note saying
    why) when it cannot be read, too few of its trials can be matched or none of its parameters
    varies."""
    optuna = _quiet_optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        storage = JournalStorage(JournalFileBackend(str(sweep.journal_path)))
        names = sorted(s.study_name for s in storage.get_all_studies())
        name = sweep.name if sweep.name in names else (names[0] if len(names) == 1 else None)
        if name is None:
            imp.notes.append(f"optuna.journal holds no study named '{sweep.name}' ({len(names)} studies).")
            return None
        study = optuna.load_study(study_name=name, storage=storage)
        frozen = study.get_trials(deepcopy=False)
    except Exception as e:  # a corrupt or foreign journal must not kill the report
        imp.notes.append(f"optuna.journal could not be read ({e.__class__.__name__}: {e}).")
        return None
    complete = [t for t in frozen if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    kept = _matched(sweep, fb, complete)
    varying_params = {k for k in {k for t in kept for k in t.params}
                      if len({str(t.params.get(k)) for t in kept}) > 1}
    if len(kept) >= MIN_TRIALS_IMPORTANCE and varying_params:
        own = optuna.create_study(direction=study.direction)
        own.add_trials(kept)
        imp.source, imp.unit = f"Optuna study '{name}' (optuna.journal)", "full-budget study trials"
        imp.n_trials, imp.n_excluded = len(kept), len(complete) - len(kept)
        if imp.n_excluded:
            imp.notes.append(f"{imp.n_excluded} of {len(complete)} COMPLETE study trials were excluded: "
                             "not full-budget (e.g. ASHA-stopped with a truncated value) or not matched "
                             "to a finished trial.")
        return own
    if kept:
        imp.notes.append(f"The Optuna study has {len(kept)} full-budget trial(s) ({len(complete)} COMPLETE, "
                         f"{len(complete) - len(kept)} not full-budget), too few for importances; using an "
                         "in-memory study of the full-budget runs (one per seed) instead.")
    else:
        imp.notes.append(f"None of the {len(complete)} COMPLETE study trials could be matched to a "
                         "full-budget finished trial; using an in-memory study of the full-budget runs instead.")
    return None


def _matched(sweep: Sweep, fb: pd.DataFrame, complete: list) -> list:
    """The COMPLETE study trials that are full-budget trials of the sweep."""
    cands = [(_candidate_values(r, sweep), float(r[sweep.target_col])) for _, r in fb.iterrows()]
    # Optuna searches run every seed of a proposal in one Tune trial and report the mean over
    # seeds: a proposal is full-budget when all its rows are
    full_ids = set()
    for tune_id, g in sweep.trials.groupby("tune_trial_id", sort=True):
        if g["full_budget"].all():
            full_ids.add(str(tune_id))
            cands.append((_candidate_values(g.iloc[0], sweep), float(g[sweep.target_col].astype(float).mean())))
    # matched by the link ablate.sweep.study writes, else by value and parameters
    return [t for t in complete if t.user_attrs.get("tune_trial_id") in full_ids
            or any(_close(t.value, val) and all(k in cand and _close(cand[k], v) for k, v in t.params.items())
                   for cand, val in cands)]


def _evaluate(study, imp: Importances) -> None:
    """Both evaluators on ``study``; a failing one leaves a note, not an error."""
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

    def run(evaluator, label):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = get_param_importances(study, evaluator=evaluator)
            return dict(sorted(((str(k), float(v)) for k, v in res.items()), key=lambda kv: (-kv[1], kv[0])))
        except Exception as e:
            imp.notes.append(f"{label} failed: {e.__class__.__name__}: {e}")
        return None

    imp.fanova = run(FanovaImportanceEvaluator(seed=0), "fANOVA")
    imp.ped_anova = run(PedAnovaImportanceEvaluator(), "PED-ANOVA")
    if imp.fanova is not None and imp.ped_anova:
        left_out = sorted(set(imp.ped_anova) - set(imp.fanova))
        if left_out:
            imp.notes.append("fANOVA leaves out conditional parameters (sampled in only some trials): "
                             + ", ".join(left_out) + ".")
