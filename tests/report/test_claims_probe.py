"""Probe claims (``kind: probe``): the format (one-line errors), and `ablate claims` on a tiny probe:
a − b is the paired t over the shared batches of the probe's per-batch values (scipy agrees), the
claim joins the Holm family of the run, a stored probe is reused, and the README block says what
was run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from scipy import stats as st

from ablate.claims.spec import is_probe_file, parse_claims, parse_probe_file
from ablate.errors import ConfigError

from .claims_synth import claim, make_claim_sweep

# the tiny model of tests/test_probe.py; Â ≡ 1 gives a non-zero gradient whatever the rewards
FAST = ["method=grpo", "train.prompts_per_step=3", "train.group_size=3", "threads=1",
        "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        "model.warm_start.steps=10", "model.warm_start.target_pass1=null", "mask=none", "advantage=constant"]


def _probe_claim(**kw) -> dict:
    c = {"id": "tok_vs_seq", "kind": "probe", "paper": "P", "arxiv": "2505.23585", "claim": "c",
         "base": list(FAST), "a": {"aggregation": "token_mean"}, "b": {"aggregation": "seq_mean_token_mean"},
         "metric": "trace_cov", "batches": 4, "expect": "lower"}
    c.update(kw)
    return c


def _file(**kw) -> dict:
    return {"name": "probe_claims", "description": "tiny", "claims": [_probe_claim(**kw)]}


def test_probe_claim_format():
    pf = parse_probe_file(_file())
    (c,) = pf.claims
    assert c.is_probe and c.batches == 4 and c.overrides("a") == ["aggregation=token_mean"]
    assert c.to_dict()["kind"] == "probe" and "aggregation" not in c.to_dict()
    assert is_probe_file(_file()) and not is_probe_file({"claims": [claim("x", "higher")]})


@pytest.mark.parametrize("kw, msg", [
    ({"batches": None}, "claims.tok_vs_seq.batches: missing"),
    ({"batches": 1}, "claims.tok_vs_seq.batches"),
    ({"batches": 2.5}, "claims.tok_vs_seq.batches"),
    ({"metric": "train/grad_var"}, "not a probe metric; allowed: trace_cov, rel_var"),
    ({"aggregation": "mean"}, "claims[0]: key: unknown value 'aggregation'"),
    ({"a": {"bad key": 1}}, "is not a config key"),
    ({"a": {"aggregation": "two words"}}, "a.aggregation: expected a scalar without spaces"),
    ({"a": {}}, "claims.tok_vs_seq.a: expected a mapping"),
    ({"base": ["method grpo"]}, "is not an override key=value"),
    ({"b": {"aggregation": "token_mean"}}, "arms a and b are identical"),
    ({"expect": "up"}, "claims.tok_vs_seq.expect"),
])
def test_probe_claim_errors_are_one_line(kw, msg):
    with pytest.raises(ConfigError) as e:
        parse_probe_file(_file(**kw))
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_probe_claim_in_a_search_space_and_sweep_keys_in_a_probe_claim_are_errors():
    with pytest.raises(ConfigError, match="probe claims go in a probe claim file"):
        parse_claims([_probe_claim()], {"mask": ["a", "b"]})
    with pytest.raises(ConfigError, match="claims.0.: key: unknown value .batches."):
        parse_claims([{**claim("x", "higher"), "batches": 4}], {"mask": ["clip_higher", "ppo_clip"]})
    with pytest.raises(ConfigError, match="probe_claims: key"):
        parse_probe_file({**_file(), "slots": {}}, source="probe_claims")


@pytest.fixture
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_claims_runs_a_tiny_probe_with_holm_over_the_family(tmp_path, _cache, monkeypatch):
    from ablate.cli.claims import DEFAULT_OUTPUT_DIR, run_claims

    monkeypatch.chdir(tmp_path)

    f = tmp_path / "probe.yaml"
    f.write_text(yaml.safe_dump(_file()))
    # a synthetic sweep claim on disk, for the Holm family below
    runs = tmp_path / DEFAULT_OUTPUT_DIR
    sweep = make_claim_sweep(runs, name="claimsynth", level={"clip_higher": 1.5, "ppo_clip": 1.0},
                             claims=[claim("up", "higher")])
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- claims:begin old -->\nold\n<!-- claims:end -->\n")
    logs: list[str] = []
    assert run_claims([str(f)], output_dir=str(runs), report_dir=str(tmp_path / "rep"),
                      readme=str(readme), log=logs.append) == 0
    stored = json.loads((runs / "probe_claims" / "tok_vs_seq.json").read_text())
    arms = {a["label"]: a for a in stored["result"]["arms"]}
    xa, xb = np.array(arms["aggregation=token_mean"]["sq_dev"]), np.array(arms["aggregation=seq_mean_token_mean"]["sq_dev"])
    (res,) = json.loads((tmp_path / "rep" / "claims.json").read_text())
    t = st.ttest_rel(xa, xb)
    assert res["diff"] == pytest.approx(float(np.mean(xa - xb))) and res["p"] == pytest.approx(t.pvalue)
    assert res["n_seeds_a"] == 4 and res["verdict"] in ("reproduced", "contradicted", "inconclusive")
    assert res["mean_a"] == pytest.approx(arms["aggregation=token_mean"]["trace_cov"])
    assert res["p_holm"] == pytest.approx(res["p"])  # a family of one
    text = readme.read_text()
    assert f"generated by `ablate claims {f}`" in text and "| tok_vs_seq | 2505.23585 |" in text
    md = (tmp_path / "rep" / "claims.md").read_text()
    assert "Probes" in md and "paired t over 4 shared rollout batches" in md
    # `ablate plan` on the probe file: the batches are the replicates
    from ablate.cli.plan import plan_rows

    (row,) = plan_rows(f)
    assert row.unit == "batches" and row.n == 4 and "4 shared batches" in row.line()
    assert row.sd_diff == pytest.approx(float(np.std(xa - xb, ddof=1)))

    # the probe plus the synthetic sweep claim: one Holm family of 2; the stored probe is reused
    from ablate.claims.probe import load_probe_file
    from ablate.cli.claims import write_claims_report
    from ablate.sweep.space import validate

    logs.clear()
    assert run_claims([str(f)], output_dir=str(runs), report_dir=str(tmp_path / "rep"),
                      readme=None, log=logs.append) == 0
    assert any("reused" in m for m in logs)
    data = {k: v for k, v in yaml.safe_load((sweep / "search_space.yaml").read_text()).items() if v != []}
    out = write_claims_report([(sweep / "search_space.yaml", validate(data), sweep)], tmp_path / "rep2",
                              probes=[(f, load_probe_file(f), runs)])
    both = {d["id"]: d for d in json.loads((out / "claims.json").read_text())}
    ps = sorted([both["up"]["p"], both["tok_vs_seq"]["p"]])
    assert sorted([both["up"]["p_holm"], both["tok_vs_seq"]["p_holm"]]) == pytest.approx(
        [min(1.0, 2 * ps[0]), min(1.0, max(2 * ps[0], ps[1]))])


def test_run_alpha_is_split_across_families_in_proportion_to_their_claims(tmp_path):
    """Bonferroni across the families of one `ablate claims` run (each sequential sweep; the probe
    and fixed-seed claims together), Holm within: p (Holm) of the fixed family is divided by its
    share, so the family-wise error over the run stays at 0.05."""
    from types import SimpleNamespace as NS

    from ablate.claims.evaluate import evaluate_claim, evaluate_family, sweep_claims
    from ablate.cli.claims import FIXED, family_shares
    from ablate.claims.spec import Claim
    from ablate.tracking.sweep_reader import load_sweep

    c = lambda i, mis="": Claim.model_validate({**claim(i, "higher"), "misspecified": mis})  # noqa: E731
    seq = NS(name="seq", claims=[c("s1"), c("s2"), c("s3")], seed_range={"min": 3, "max": 6, "batch": 3})
    fixed = NS(name="fix", claims=[c("f1"), c("bad", "wrong setting")], seed_range=None)
    pf = parse_probe_file(_file())
    shares = family_shares([("a", seq), ("b", fixed)], [("p", pf, tmp_path)])
    assert shares == pytest.approx({FIXED: 2 / 5, "seq": 3 / 5})
    sw = load_sweep(make_claim_sweep(tmp_path, level={"clip_higher": 1.1, "ppo_clip": 1.0},
                                     claims=[claim("up", "higher"), claim("none", "higher", metric="train/other")]))
    one = evaluate_family([evaluate_claim(sw, x) for x in sweep_claims(sw)])
    half = evaluate_family([evaluate_claim(sw, x) for x in sweep_claims(sw)], share=0.5)
    for r1, r2 in zip(one, half):
        assert r2.comparison.p_adjusted == pytest.approx(min(1.0, 2 * r1.comparison.p_adjusted))
        assert r2.comparison.p_value == r1.comparison.p_value
