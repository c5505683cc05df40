"""Sequential seeds for claims: looks, stopping and the look history on synthetic sweeps, the
merge of seed batches, and the search-space format."""

from pathlib import Path

import pytest

from ablate.claims.evaluate import sweep_claims
from ablate.claims.sequential import all_decided, batch_names, evaluate_sequential, merge
from ablate.errors import ConfigError
from ablate.stats import SequentialPlan
from ablate.tracking.sweep_reader import load_sweep
from ablate.tracking.trials import read_trials

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
    # after the merge every row's run dir is absolute, under its own batch's sweep dir
    assert all(Path(d).is_dir() for d in m.trials["run_dir"])
    assert {Path(d).parent.parent.parent for d in m.trials["run_dir"]} == {tmp_path / "a", tmp_path / "b"}
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

    from ablate.cli.plan import plan_rows
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


def test_claims_report_and_readme_block_from_synthetic_sweeps(tmp_path):
    import json

    import yaml

    from ablate.cli.claims import update_readme, write_claims_report
    from ablate.sweep.space import validate

    path = make_claim_sweep(tmp_path / "runs", level={"clip_higher": 1.5, "ppo_clip": 1.0},
                            claims=[claim("up", "higher", effect=0.1), claim("none", "higher", metric="train/other"),
                                    claim("bad", "lower", misspecified="wrong setting")])
    data = {k: v for k, v in yaml.safe_load((path / "search_space.yaml").read_text()).items() if v != []}
    space = validate(data)
    out = write_claims_report([(path / "search_space.yaml", space, path)], tmp_path / "rep")
    res = {d["id"]: d for d in json.loads((out / "claims.json").read_text())}
    assert res["up"]["verdict"] == "reproduced" and res["up"]["p_holm"] >= res["up"]["p"]
    assert res["bad"]["verdict"] == "misspecified" and res["up"]["n_seeds"] == 4
    assert res["none"]["verdict"] in ("inconclusive", "underpowered") and res["none"]["mde"] > 0
    md = (out / "claims.md").read_text()
    assert "Holm-corrected over the 2 tested claim(s)" in md and "MDE" in md and "misspecified" in md
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- claims:begin old -->\nold\n<!-- claims:end -->\n")
    assert update_readme(readme, out)
    text = readme.read_text()
    assert "| p (Holm p / look level) | MDE |" in text and "| up | 2503.14476 | reproduced |" in text


@pytest.mark.parametrize("level, batches", [({"clip_higher": 1.0, "ppo_clip": 1.0}, 3),
                                            ({"clip_higher": 1.5, "ppo_clip": 1.0}, None)])
def test_claims_runner_adds_seed_batches_until_decided(tmp_path, monkeypatch, level, batches):
    """`ablate claims` on a sequential claim sweep, with the sweep runner replaced by the synthetic
    sweep writer (the runner itself is tested in tests/sweep)."""
    import yaml

    import ablate.sweep.runner as runner
    from ablate.cli.claims import run_claims

    calls = []

    def fake_run_sweep(space_file, output_dir, resume, num_cpus, log):
        from ablate.sweep.space import load_search_space

        load_search_space(space_file)  # a seed batch's file validates like the claim file
        d = yaml.safe_load(Path(space_file).read_text())
        seeds = d["seeds"] if isinstance(d["seeds"], list) else list(range(d["seeds"]["min"]))
        calls.append(seeds)
        make_claim_sweep(output_dir, name=d["name"], n_seeds=len(seeds), first_seed=seeds[0],
                         level=level, seed=len(calls))
        return 0

    monkeypatch.setattr(runner, "run_sweep", fake_run_sweep)
    space = {"name": "seq", "slots": {"mask": ["clip_higher", "ppo_clip"], "advantage": ["group_zscore", "opo"]},
             "seeds": {"min": 3, "max": 5}, "metric": "eval/pass@1",
             "claims": [claim("up", "higher")]}
    f = tmp_path / "seq.yaml"
    f.write_text(yaml.safe_dump(space))
    assert run_claims([str(f)], output_dir=str(tmp_path / "runs"), report_dir=str(tmp_path / "rep"),
                      readme=None, log=lambda m: None) == 0
    import json

    (res,) = json.loads((tmp_path / "rep" / "claims.json").read_text())
    if batches:  # no effect: every look, seeds 0-2, then 3, then 4
        assert calls == [[0, 1, 2], [3], [4]] and [lk["n"] for lk in res["looks"]] == [3, 4, 5]
        assert res["verdict"] == "inconclusive"
    else:
        assert len(calls) < 3 and res["verdict"] == "reproduced"
    assert "Sequential looks at up" in (tmp_path / "rep" / "claims.md").read_text()


def test_undecided_claims_never_get_a_fixed_n_verdict(tmp_path):
    # a moderate effect the boundaries do not reach at 3 seeds: the fixed-n t test at α = 0.05 may
    # reject, the sequential design must not (its first look spends almost no alpha)
    sw = load_sweep(make_claim_sweep(tmp_path, n_seeds=3, noise=0.5, level={"clip_higher": 1.3, "ppo_clip": 1.0},
                                     claims=[claim("up", "higher", effect=0.01)]))
    r = _seq(sw, SequentialPlan(3, 3, 1))["up"]
    assert [lk.decision for lk in r.looks] in (["undecided"], ["reproduced"])
    if r.looks[0].decision == "undecided":
        assert r.verdict in ("underpowered", "inconclusive")
    two = load_sweep(make_claim_sweep(tmp_path / "two", n_seeds=2, level={"clip_higher": 9.0, "ppo_clip": 1.0},
                                      claims=[claim("up", "higher")]))
    r2 = _seq(two)["up"]
    assert not r2.looks and r2.verdict == "inconclusive" and "not yet looked at" in r2.comparison.method


def test_aa_claim_is_never_reproduced_or_contradicted(tmp_path):
    """Two arms with identical configs under different labels: same seed → identical runs."""
    import shutil

    from ablate.claims.evaluate import evaluate_sweep

    path = make_claim_sweep(tmp_path, level={"clip_higher": 1.0, "ppo_clip": 1.0},
                            claims=[claim("aa", "higher", margin=0.01), claim("aa2", "lower")])
    rows = read_trials(path)
    twin = {(r["seed"], r["slots"]["advantage"]): r["trial_id"] for r in rows if r["slots"]["mask"] == "ppo_clip"}
    for r in rows:
        if r["slots"]["mask"] == "clip_higher":
            src = path / "trials" / twin[(r["seed"], r["slots"]["advantage"])] / "metrics.jsonl"
            shutil.copy(src, path / "trials" / r["trial_id"] / "metrics.jsonl")
    res = {r.claim.id: r for r in evaluate_sweep(load_sweep(path))}
    assert res["aa"].diff.point == 0 and res["aa"].verdict == "equivalent"
    assert res["aa2"].verdict == "inconclusive"
