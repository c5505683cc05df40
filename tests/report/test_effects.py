"""Slot effects, importances and labels on synthetic sweeps with planted effects."""

import numpy as np
import pytest

from ablate.report import aggregate as A
from ablate.report import effects as E
from ablate.tracking.sweep_reader import load_sweep

from .synthetic import edit_records, make_sweep

GRPO = {"name": "grpo", "mask": "ppo_clip", "denominator": "behaviour", "advantage": "group_zscore",
        "likelihood": "identity", "aggregation": "seq_mean_token_mean"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    return load_sweep(make_sweep(root, journal=True))


def test_marginal_effects_recover_planted_order(planted):
    eff = {e.name: e for e in E.marginal_effects(planted)}
    assert set(eff) == {"mask", "advantage", "likelihood"}  # constant slots/params are not factors
    assert eff["advantage"].spread > eff["mask"].spread > eff["likelihood"].spread
    assert eff["advantage"].spread == pytest.approx(0.20, abs=0.02)
    assert eff["mask"].spread == pytest.approx(0.05, abs=0.015)
    assert eff["likelihood"].spread < 0.01
    assert eff["advantage"].best("max").label == "rloo"
    sep, overlap = eff["advantage"].separated_from_best("max")
    assert {lv.label for lv in sep} == {"group_center", "group_zscore"} and not overlap
    sep, _ = eff["likelihood"].separated_from_best("max")
    assert not sep  # planted zero effect: within noise


def test_fanova_ranks_planted_strongest_slot_first_on_memory_study(tmp_path):
    sw = load_sweep(make_sweep(tmp_path, journal=False))
    imp = E.importances(sw)
    assert imp.source.startswith("in-memory")
    assert next(iter(imp.fanova)) == "advantage"
    assert next(iter(imp.ped_anova)) == "advantage"
    assert imp.n_trials == len(sw.full_budget()) == 52
    assert imp.n_excluded == 1  # the early-stopped trial


def test_importances_use_journal_but_only_full_budget_trials(tmp_path):
    # one study trial per proposal (mean over seeds); the last proposal was stopped: COMPLETE in
    # the study with a truncated value, and it must not enter the importances
    sw = load_sweep(make_sweep(tmp_path, journal=True, n_failed=0, n_early_stopped=3))
    imp = E.importances(sw)
    assert "optuna.journal" in imp.source, imp.notes
    assert imp.n_trials == 17 and imp.n_excluded == 1
    assert next(iter(imp.fanova)) == "advantage"


def test_importances_skip_gracefully(tmp_path):
    tiny = load_sweep(make_sweep(tmp_path / "a", slots={"mask": ["a", "b"]}, effects={}, n_seeds=1,
                                 n_failed=0, n_early_stopped=0))
    imp = E.importances(tiny)
    assert not imp.available and "at least 4" in imp.notes[0]
    single = load_sweep(make_sweep(tmp_path / "b", slots={"mask": ["a"]}, effects={}, n_seeds=5,
                                   n_failed=0, n_early_stopped=0))
    imp = E.importances(single)
    assert not imp.available and "more than one value" in imp.notes[0]
    assert E.marginal_effects(single) == []


def test_interactions_only_for_crossed_pairs(planted):
    inters, not_crossed = E.interactions(planted)
    pairs = {(i.a, i.b) for i in inters}
    assert pairs == {("mask", "advantage"), ("mask", "likelihood"), ("advantage", "likelihood")}
    assert not not_crossed
    for it in inters:
        assert it.counts.min() >= 1 and np.isfinite(it.means).all()


def test_planted_interaction_is_largest(tmp_path):
    # mask helps only with rloo: an interaction between mask and advantage
    slots = {"mask": ["none", "clip"], "advantage": ["zscore", "rloo"], "likelihood": ["id", "luffy"]}
    sw = load_sweep(make_sweep(tmp_path, slots=slots, effects={}, n_failed=0, n_early_stopped=0,
                               noise=0.005))
    # rebuild targets with an interaction: add 0.2 where mask=clip and advantage=rloo
    t = sw.trials
    bump = (t["slot.mask"] == "clip") & (t["slot.advantage"] == "rloo")
    t.loc[bump, sw.target_col] += 0.2
    inters, _ = E.interactions(sw)
    assert (inters[0].a, inters[0].b) == ("mask", "advantage")
    assert inters[0].residual_rms == pytest.approx(0.05, abs=0.01)
    # the interaction F test of the cell-means model (pooled seed variance) finds it; the others not
    n = E.adjust_exploratory(E.marginal_effects(sw), inters)
    assert n == 3 + 3 and inters[0].p_adjusted < 1e-6
    assert all(it.p_adjusted > 0.01 for it in inters[1:])


def test_not_crossed_pairs_are_reported(tmp_path):
    sw = load_sweep(make_sweep(tmp_path, slots={"mask": ["a", "b"], "advantage": ["x", "y"]}, effects={},
                               n_failed=3, n_early_stopped=0, n_seeds=3))
    # the last 3 trials (combo b/y, all seeds) failed -> the cell is empty
    inters, not_crossed = E.interactions(sw)
    assert not inters and not_crossed == [("mask", "advantage")]


def test_method_labels():
    s = dict(GRPO)
    assert A.method_label(s, [GRPO]) == "= GRPO"
    assert A.method_label({**s, "aggregation": "token_mean"}, [GRPO]) == "≈ GRPO (aggregation differs)"
    assert A.method_label({**s, "mask": "none"}, [GRPO]) == ""
    assert A.method_label(s, [], method="grpo") == "preset grpo"
    assert isinstance(A.load_default_presets(), list)  # never raises, catalog may not exist yet


def test_combos_sorted_and_labelled(planted):
    combos = A.build_combos(planted, [GRPO])
    pts = [c.target.point for c in combos]
    assert pts == sorted(pts, reverse=True)
    assert combos[0].desc.startswith("mask=clip_higher, advantage=rloo")
    grpo = [c for c in combos if c.label == "= GRPO"]
    assert len(grpo) == 1 and grpo[0].slots["advantage"] == "group_zscore"
    assert sum(len(c.values) for c in combos) == 52


def test_conditional_parameters_are_left_out_where_unset(tmp_path):
    import json

    sw_dir = make_sweep(tmp_path, slots={"mask": ["none", "clip"], "advantage": ["x", "y"]}, effects={},
                        params={"mask.eps": [0.2, 0.3]}, n_failed=0, n_early_stopped=0, n_seeds=2)
    def unset(rec: dict) -> None:
        if rec["assign"]["mask"] == "none":
            rec["assign"].pop("mask.eps")
            slots = {k: v for k, v in rec["assign"].items() if k in ("mask", "advantage")}
            rec["combo"] = json.dumps({"slots": slots, "params": {}}, sort_keys=True)
            rec["wandb_run_id"] = None

    edit_records(sw_dir, unset)
    sw = load_sweep(sw_dir)
    eff = {e.name: e for e in E.marginal_effects(sw)}
    assert eff["mask.eps"].conditional and [lv.label for lv in eff["mask.eps"].levels] == ["0.2", "0.3"]
    assert eff["mask.eps"].levels[0].n == 4  # only mask=clip trials
    imp = E.importances(sw)
    assert "mask.eps" in imp.ped_anova and "mask.eps" not in imp.fanova
    assert any("conditional" in n for n in imp.notes)
    combos = A.build_combos(sw, [])
    assert len(combos) == 6 and not any("nan" in c.desc or "—" in c.desc for c in combos)


def test_importances_match_study_trials_by_their_tune_trial_link(tmp_path):
    """Each study trial names its Tune trial (user attribute tune_trial_id, ablate.sweep.study): a
    linked trial whose runs are all full-budget counts whatever value the study recorded; the
    early-stopped trial's link does not."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = make_sweep(tmp_path, n_seeds=1, n_failed=0, n_early_stopped=1)
    t = load_sweep(path).trials
    axes = ["mask", "advantage", "likelihood"]
    dists = {a: CategoricalDistribution(sorted(set(t["slot." + a]))) for a in axes}
    study = optuna.create_study(study_name="synth", direction="maximize",
                                storage=JournalStorage(JournalFileBackend(str(path / "optuna.journal"))))
    for _, row in t.iterrows():
        study.add_trial(optuna.trial.create_trial(
            params={a: row["slot." + a] for a in axes}, distributions=dists, value=-1.0,  # matches no run
            user_attrs={"tune_trial_id": str(row["tune_trial_id"])}))
    imp = E.importances(load_sweep(path))
    assert "optuna.journal" in imp.source, imp.notes
    assert imp.n_trials == len(t) - 1 and imp.n_excluded == 1
