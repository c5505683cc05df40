"""Claim verdicts on synthetic sweeps with planted effects, multi-metric statistics against a
direct computation, the claims/report keys of a search space, and the report's new sections."""

import json

import numpy as np
import pytest

from ablate.claims.evaluate import evaluate_claim, evaluate_family, sweep_claims
from ablate.claims.spec import parse_claims, parse_report
from ablate.claims.values import run_values
from ablate.errors import ConfigError
from ablate.report import generate_report
from ablate.report.metric_stats import available_metrics, metric_stats
from ablate.stats import compare
from ablate.tracking.sweep_reader import load_sweep

from .claims_synth import ADVS, MASKS, claim, make_claim_sweep

CLAIMS = [claim("up_mean", "higher"), claim("down_mean", "lower"),
          claim("up_slope", "higher", aggregation="slope"), claim("flat_final", "higher", metric="train/other",
                                                                   aggregation="final")]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    # clip_higher: +0.5 level and +0.02/step slope over ppo_clip; train/other is pure noise
    root = tmp_path_factory.mktemp("claims")
    path = make_claim_sweep(root, level={"clip_higher": 1.5, "ppo_clip": 1.0},
                            slope={"clip_higher": 0.02, "ppo_clip": 0.0}, claims=CLAIMS,
                            report_metrics=["train/other"])
    return load_sweep(path)


def _results(sw):
    rs = evaluate_family([evaluate_claim(sw, c) for c in sweep_claims(sw)])
    return {r.claim.id: r for r in rs}


def test_planted_effect_is_reproduced_and_opposite_is_contradicted(planted):
    r = _results(planted)
    assert r["up_mean"].verdict == "reproduced"
    assert r["down_mean"].verdict == "contradicted"
    assert r["up_slope"].verdict == "reproduced"
    # true difference of run means: 0.5 + 0.02 * mean(step) = 0.5 + 0.02 * 10.5
    assert r["up_mean"].diff.point == pytest.approx(0.71, abs=0.03)
    assert r["up_mean"].diff.lo > 0 and r["up_mean"].n_a == r["up_mean"].n_b == 8
    # arms share seeds: a paired t over the 4 seeds (each seed's arm value: mean of its 2 combinations)
    assert r["up_mean"].comparison.paired and r["up_mean"].n_seeds == 4
    assert r["up_mean"].comparison.p_adjusted >= r["up_mean"].comparison.p_value  # Holm
    assert r["up_slope"].diff.point == pytest.approx(0.02, abs=0.005)
    assert "As claimed" in r["up_mean"].sentence and "Opposite" in r["down_mean"].sentence


def test_no_effect_is_inconclusive(tmp_path):
    # null effect: t tests keep their level, so a null sweep is almost never reproduced/contradicted
    verdicts = []
    for s in range(10):
        sw = load_sweep(make_claim_sweep(tmp_path / str(s), seed=s,
                                         claims=[claim("none", "higher"), claim("none2", "lower")]))
        r = _results(sw)
        assert {r["none"].verdict, r["none2"].verdict} in ({"inconclusive"}, {"reproduced", "contradicted"})
        verdicts.append(r["none"].verdict)
        if r["none"].verdict == "inconclusive":
            assert r["none"].diff.lo < 0 < r["none"].diff.hi and "No separable difference" in r["none"].sentence
            assert "MDE" in r["none"].sentence and "Holm-adjusted p" in r["none"].sentence
    assert verdicts.count("inconclusive") >= 9, verdicts


def test_effect_of_interest_and_margin_give_four_way_verdicts(tmp_path):
    claims = [claim("tiny_effect", "higher", effect=1e-4), claim("equiv", "higher", margin=0.5),
              claim("wrong_setting", "higher", misspecified="the toy setting cannot show it")]
    sw = load_sweep(make_claim_sweep(tmp_path, claims=claims))
    r = _results(sw)
    assert r["tiny_effect"].verdict == "underpowered" and r["tiny_effect"].comparison.mde > 1e-4
    assert r["equiv"].verdict == "equivalent" and "equivalent within ±0.5" in r["equiv"].sentence
    assert r["wrong_setting"].verdict == "misspecified"
    assert np.isnan(r["wrong_setting"].comparison.p_adjusted)  # left out of the Holm family


def test_single_seed_is_inconclusive_not_reproduced(tmp_path):
    # a huge planted effect with one run per combination and one combination per arm: no CI
    sw = load_sweep(make_claim_sweep(tmp_path, n_seeds=1, level={"clip_higher": 9.0, "ppo_clip": 1.0},
                                     claims=[claim("big", "higher", a={"mask": "clip_higher", "advantage": "opo"},
                                                   b={"mask": "ppo_clip", "advantage": "opo"})]))
    r = _results(sw)["big"]
    assert r.diff.point > 7 and not r.diff.has_ci and r.verdict == "untestable"


def test_verdict_rule():
    up, down = [0.5, 0.6, 0.7, 0.65], [0.1, 0.15, 0.12, 0.2]
    assert compare(up, down, paired=True, expect="higher").verdict == "reproduced"
    assert compare(up, down, paired=True, expect="lower").verdict == "contradicted"
    assert compare(down, up, paired=True, expect="lower").verdict == "reproduced"
    assert compare([0.1, 0.5, 0.2], [0.3, 0.1, 0.4], paired=True, expect="higher").verdict == "inconclusive"
    assert compare([0.3], [0.1], expect="higher").verdict == "untestable"


def test_run_values_equal_direct_computation(planted):
    m = planted.metrics
    for tid, g in m.groupby("trial_id"):
        y = g["train/m"].to_numpy(float)
        x = g["step"].to_numpy(float)
        assert run_values(planted, "train/m", "final")[tid] == pytest.approx(y[-1])
        assert run_values(planted, "train/m", "mean")[tid] == pytest.approx(y.mean())
        assert run_values(planted, "train/m", "slope")[tid] == pytest.approx(np.polyfit(x, y, 1)[0])
        assert run_values(planted, "train/m", "auc")[tid] == pytest.approx(np.trapezoid(y, x) / np.ptp(x))
        assert run_values(planted, "train/m", "last3")[tid] == pytest.approx(y[-3:].mean())
        ev = g.dropna(subset=["eval/pass@1"])
        d = (ev["eval/pass@1"] - ev["eval/pass@8"]).to_numpy()
        assert run_values(planted, "eval/pass@1 - eval/pass@8", "final")[tid] == pytest.approx(d[-1])


def test_marginal_means_and_differences_equal_direct_computation(planted):
    t = planted.trials
    for agg in ("final", "mean"):
        vals = run_values(planted, "train/m", agg)
        t = t.assign(v=t["trial_id"].map(vals))
        st = metric_stats(planted, "train/m", agg)
        eff = {e.name: e for e in st.effects}
        assert set(eff) == {"mask", "advantage"}
        direct = {}
        for factor, levels in (("mask", MASKS), ("advantage", ADVS)):
            for lv in levels:
                sub = t[t["slot." + factor] == lv]
                direct[(factor, lv)] = sub.groupby("combo")["v"].mean().mean()  # mean of combination means
                got = next(x for x in eff[factor].levels if x.label == lv)
                assert got.ci.point == pytest.approx(direct[(factor, lv)])
                assert got.ci.lo <= got.ci.point <= got.ci.hi and got.n == len(sub)
        for p in st.pairs:
            assert p.diff.point == pytest.approx(direct[(p.factor, p.a)] - direct[(p.factor, p.b)])
        mask_pair = next(p for p in st.pairs if p.factor == "mask")
        assert mask_pair.diff.excludes(0.0)  # planted
        adv_pair = next(p for p in st.pairs if p.factor == "advantage")
        assert abs(adv_pair.diff.point) < 0.1 * abs(mask_pair.diff.point)  # no planted advantage effect


def test_pair_ci_equals_direct_linear_model(planted):
    """A level difference equals the OLS contrast of combination means with the seed block."""
    import statsmodels.formula.api as smf

    vals = run_values(planted, "train/m", "mean")
    t = planted.trials.assign(v=lambda d: d["trial_id"].map(vals))
    fit = smf.ols("v ~ 0 + C(combo) + C(seed, Sum)", data=t).fit()
    names = [n for n in fit.params.index if n.startswith("C(combo)")]
    L = np.zeros(len(fit.params))
    for n in names:
        L[list(fit.params.index).index(n)] = 0.5 if '"clip_higher"' in n else -0.5
    ref = fit.t_test(L)
    st = metric_stats(planted, "train/m", "mean")
    p = next(p for p in st.pairs if p.factor == "mask")
    sign = 1 if p.a == "clip_higher" else -1
    assert sign * p.diff.point == pytest.approx(float(np.ravel(ref.effect)[0]))
    lo, hi = np.asarray(ref.conf_int()).ravel()
    assert sorted([sign * p.diff.lo, sign * p.diff.hi]) == pytest.approx([lo, hi])
    assert p.diff.p == pytest.approx(float(ref.pvalue)) and p.p_adjusted >= p.diff.p


def test_default_and_requested_metrics(planted):
    have, missing = available_metrics(planted, ["train/other", "train/never"])
    assert have == ["train/other"] and missing == ["train/never"]  # defaults absent from these logs


def test_report_has_claims_and_metrics_sections(planted, tmp_path):
    out = generate_report(planted.path, tmp_path / "rep", metrics=["train/m"])
    md = (out / "report.md").read_text()
    assert "## Claims" in md and "`up_mean`" in md and "CONTRADICTED" in md
    assert "### train/m" in md and "### train/other" in md  # --metric and report.metrics
    html = (out / "report.html").read_text()
    assert "Claims" in html and "<script" not in html


def test_report_cli_metric(planted, tmp_path, capsys):
    from ablate.cli import main

    assert main(["report", str(planted.path), "-o", str(tmp_path / "r"), "--metric", "train/m"]) == 0
    assert "### train/m" in (tmp_path / "r" / "report.md").read_text()
    assert main(["report", str(planted.path), "--metric", "not a metric!"]) == 2
    assert "--metric" in capsys.readouterr().err


AXES = {"mask": ["ppo_clip", "clip_higher"], "train.lr": [0.0, 3.0e-4]}


@pytest.mark.parametrize("bad, msg", [
    ({"a": {"mask": "clip_hgher"}}, "claims.c.a.mask"),
    ({"a": {"advantage": "opo"}}, "claims.c.a: axis"),
    ({"b": {"mask": "clip_higher"}}, "identical"),
    ({"aggregation": "median"}, "claims.c.aggregation"),
    ({"expect": "bigger"}, "claims.c.expect"),
    ({"arxiv": "DAPO"}, "claims.c.arxiv"),
    ({"metric": "a - b - c"}, "claims.c.metric"),
    ({"colour": 1}, "claims[0]: key"),
])
def test_claims_validation_one_line_errors(bad, msg):
    c = {**claim("c", "higher"), **bad}
    with pytest.raises(ConfigError) as e:
        parse_claims([c], AXES)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_claims_parse_values_and_report_metrics():
    (c,) = parse_claims([claim("c", "lower", metric="eval/pass@1 - eval/pass@8", a={"train.lr": 3.0e-4},
                               b={"train.lr": "0.0"})], AXES)
    assert c.b == {"train.lr": 0.0} and c.terms == ("eval/pass@1", "eval/pass@8")
    assert parse_report({"metrics": ["train/kl_old", "train/kl_old"]}).metrics == ["train/kl_old"]
    with pytest.raises(ConfigError, match="report.metrics"):
        parse_report({"metrics": {"x": 1}})


def test_shipped_claim_sweeps_validate_and_round_trip():
    from pathlib import Path

    from ablate.claims.probe import load_probe_file
    from ablate.sweep.space import load_search_space, validate

    files = sorted(Path("search_spaces/claims").glob("*.yaml"))
    assert len(files) == 6
    ids = set()
    for f in files:
        pf = load_probe_file(f)  # a probe claim file (kind: probe claims, no sweep)
        if pf is not None:
            assert all(c.is_probe and c.batches >= 16 for c in pf.claims)
            ids |= {c.id for c in pf.claims}
            continue
        sp = load_search_space(f)
        assert sp.claims and len(sp.seeds) >= 3 and sp.max_concurrent <= 2
        ids |= {c.id for c in sp.claims}
        d = {k: v for k, v in json.loads(json.dumps(sp.to_dict(), default=str)).items() if v != []}
        again = validate(d)
        assert [c.to_dict() for c in again.claims] == [c.to_dict() for c in sp.claims]
    assert len(ids) == 8


def test_search_space_validates_claims_against_its_axes():
    from ablate.sweep.space import validate

    base = {"name": "s", "metric": "eval/pass@1", "slots": {"mask": ["ppo_clip", "clip_higher"]},
            "params": {"train.epochs": [1, 4]}, "report": {"metrics": ["train/kl_old"]}}
    sp = validate({**base, "claims": [claim("c", "higher", a={"mask": "clip_higher", "train.epochs": 4},
                                            b={"mask": "ppo_clip", "train.epochs": 4})]})
    assert sp.claims[0].a == {"mask": "clip_higher", "train.epochs": 4}
    assert sp.to_dict()["report"] == {"metrics": ["train/kl_old"]}
    with pytest.raises(ConfigError, match=r"claims.c.a: axis.*allowed: mask, train.epochs"):
        validate({**base, "claims": [claim("c", "higher", a={"advantage": "opo"})]})
    with pytest.raises(ConfigError, match="report: key"):
        validate({**base, "report": {"metric": ["x"]}})
