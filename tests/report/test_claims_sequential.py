"""Sequential seeds for claims: looks, stopping and the look history on synthetic sweeps, the
merge of seed batches, and the search-space format."""

import pytest

from ablate.claims.evaluate import sweep_claims
from ablate.claims.sequential import all_decided, batch_names, evaluate_sequential, merge
from ablate.errors import ConfigError
from ablate.report.load import load_sweep
from ablate.stats import SequentialPlan

from .claims_synth import claim, make_claim_sweep

PLAN = SequentialPlan(3, 8, 1)


def _seq(sw, plan=PLAN):
    return {r.claim.id: r for r in evaluate_sequential(sw, sweep_claims(sw), plan)}


def test_planted_effect_stops_early(tmp_path):
    sw = load_sweep(make_claim_sweep(tmp_path, n_seeds=8, level={"clip_higher": 1.5, "ppo_clip": 1.0},
                                     claims=[claim("up", "higher"), claim("down", "lower")]))
    r = _seq(sw)
    # the first look spends little alpha (t = 3/8): a large effect is decided within the first looks
    assert r["up"].looks[-1].n <= 4 and r["up"].verdict == "reproduced"
    assert r["down"].verdict == "contradicted"
    assert r["up"].looks[0].level < 0.05 and "group-sequential" in r["up"].comparison.method
    assert all_decided(list(r.values()), PLAN)


def test_null_runs_every_look_and_margin_stops_early(tmp_path):
    sw = load_sweep(make_claim_sweep(tmp_path, n_seeds=8, claims=[claim("none", "higher"),
                                                                 claim("eq", "higher", margin=0.5)]))
    r = _seq(sw)
    assert [lk.n for lk in r["none"].looks] == list(PLAN.ns)
    assert r["none"].verdict == "inconclusive" and r["none"].looks[-1].decision == "undecided"
    assert r["eq"].verdict == "equivalent" and r["eq"].looks[-1].n < 8
    # fewer seeds on disk than the next look: undecided, more to come
    few = load_sweep(make_claim_sweep(tmp_path / "few", n_seeds=4, claims=[claim("none", "higher")]))
    r4 = _seq(few)["none"]
    assert [lk.n for lk in r4.looks] == [3, 4] and not all_decided([r4], PLAN)
    assert "more seeds to come" in r4.comparison.method


def test_batches_merge_into_one_sweep(tmp_path):
    a = load_sweep(make_claim_sweep(tmp_path / "a", n_seeds=3, claims=[claim("none", "higher")]))
    b = load_sweep(make_claim_sweep(tmp_path / "b", n_seeds=2, first_seed=3, seed=1))
    m = merge([a, b])
    assert len(m.trials) == len(a.trials) + len(b.trials) and m.trials["trial_id"].is_unique
    assert sorted(set(m.trials["seed"])) == [0, 1, 2, 3, 4]
    assert set(m.metrics["trial_id"]) == set(m.trials["trial_id"])
    r = _seq(m)["none"]
    assert [lk.n for lk in r.looks] == [3, 4, 5]
    assert batch_names("s", PLAN)[:2] == [("s", [0, 1, 2]), ("s.seeds3-3", [3])]


def test_seed_range_in_the_search_space():
    from ablate.sweep.space import validate

    base = {"name": "s", "metric": "eval/pass@1", "slots": {"mask": ["ppo_clip", "clip_higher"]}}
    sp = validate({**base, "seeds": {"min": 3, "max": 20, "batch": 2}})
    assert sp.seeds == [0, 1, 2] and sp.seed_range == {"min": 3, "max": 20, "batch": 2}
    d = {k: v for k, v in sp.to_dict().items() if v != []}  # as the shipped-space round trip does
    assert validate(d).seed_range == sp.seed_range
    for bad, msg in (({"min": 3}, "seeds.max"), ({"min": 1, "max": 4}, "2 <= min"),
                     ({"min": 3, "max": 5, "step": 1}, "seeds: key")):
        with pytest.raises(ConfigError, match=msg):
            validate({**base, "seeds": bad})


def test_plan_matches_the_power_formulas(tmp_path, capsys):
    import numpy as np

    from ablate.claims.plan import plan_rows
    from ablate.cli import main
    from ablate.stats import mde, power
    from ablate.stats.power import design_se

    path = make_claim_sweep(tmp_path, n_seeds=5, level={"clip_higher": 1.02, "ppo_clip": 1.0},
                            claims=[claim("small", "higher", effect=0.01)])
    (row,) = plan_rows(path)
    assert row.n == 5 and row.effect == 0.01 and row.mde_now == pytest.approx(mde(*design_se(row.sd_diff, 5, True)))
    n = row.seeds_paired
    assert power(0.01, *design_se(row.sd_diff, n, True)) >= 0.8 > power(0.01, *design_se(row.sd_diff, n - 1, True))
    assert np.isfinite(row.rho)
    assert main(["plan", str(path), "--effect", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "claim small" in out and "To detect 0.05 (--effect)" in out
    assert main(["plan", str(tmp_path / "nope")]) == 2
