"""End-to-end: synthetic sweep dir -> generate_report -> report.md, report.html, figures."""

import re

import numpy as np

import pytest

from ablate.cli import main
from ablate.report import generate_report
from ablate.tracking.sweep_reader import SweepFormatError, load_sweep

from .synthetic import make_sweep

GRPO = {"name": "grpo", "mask": "ppo_clip", "denominator": "behaviour", "advantage": "group_zscore",
        "likelihood": "identity", "aggregation": "seq_mean_token_mean"}
SECTIONS = ["Overview", "Findings", "Leaderboard", "Slot effects", "Robust aggregates", "Curves",
            "Failed and stopped trials", "Sample generations", "Trials and W&amp;B runs"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    sweep = make_sweep(root, journal=True)
    out = generate_report(sweep, root / "out", presets=[GRPO])
    return sweep, out


def test_writes_report_files(report):
    _, out = report
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {"leaderboard.png", "marginals.png", "curves.png", "pass_at_k.png", "importances.png",
            "interactions.png", "robust.png"} <= set(figs)
    for p in (out / "figures").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_html_is_self_contained_and_escaped(report):
    _, out = report
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert "<script" not in html.lower()  # no unescaped script tag at all (we emit none ourselves)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "<script>alert" not in md
    assert "<b>bold</b>" not in html and "<b>bold</b>" not in md
    for h in SECTIONS:
        assert f">{h}</h2>" in html
    imgs = re.findall(r'<img src="([^"]+)"', html)
    assert len(imgs) >= 7 and all(src.startswith("data:image/png;base64,") for src in imgs)
    assert "http://" not in html and "https://" not in html and "src=\"figures/" not in html
    assert "](figures/leaderboard.png)" in md


def test_header_and_leaderboard_content(report):
    _, out = report
    md = (out / "report.md").read_text()
    assert "54 total: 52 finished, 1 failed, 1 early-stopped, 0 other" in md
    assert "Seeds | 0, 1, 2" in md
    assert "0123456789abcdef0123456789abcdef01234567" in md
    assert "53m 39s" in md  # sum of wall_s
    assert "# synthetic search space &lt;not html&gt; &amp; co" not in md  # yaml is fenced, verbatim
    assert "# synthetic search space <not html> & co" in md
    lb = md[md.index("## Leaderboard"):md.index("## Slot effects")]
    assert "| C01 |" in lb and "= GRPO" in lb
    assert "pass@8 \\[95% CI\\]" in lb
    assert "fANOVA" in md and "PED-ANOVA" in md and "17 full-budget study trials used" in md
    assert "Fixed across the sweep:" in md and "`model=tiny`" in md


def test_failed_trial_listed_with_escaped_error(report):
    _, out = report
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert "t0053" in html and "RuntimeError: loss is NaN at step 5 &lt;tensor&gt; &amp; friends" in html
    assert "RuntimeError: loss is NaN at step 5 &lt;tensor&gt; &amp; friends" in md
    assert "t0052" in md and "early-stopped" in md
    assert "wandb sync wandb/offline-run-20261120_100000-wbt0000" in md


def test_findings_claims_follow_the_cis(report):
    _, out = report
    md = (out / "report.md").read_text()
    fnd = md[md.index("## Findings"):md.index("## Leaderboard")]
    assert "`advantage`: rloo has the highest marginal mean" in fnd
    assert "`likelihood`: all variants within seed noise" in fnd
    # C03 lost two seeds (failed + early-stopped): no test for it (the "n < 3" caveat and the
    # "1 in 20" sentence are gone: the tests are small-sample-correct and corrected)
    assert "(C03) has a single full-budget seed" in fnd and "C01 vs C03: not testable" in fnd
    assert "1 in 20" not in md and "Few seeds" not in md
    assert "within seed noise" in fnd and "fANOVA ranks advantage first" in fnd


def test_regenerating_is_byte_identical(report, tmp_path):
    sweep, out = report
    out2 = generate_report(sweep, tmp_path / "again", presets=[GRPO])
    for name in ["report.md", "report.html"]:
        assert (out / name).read_bytes() == (out2 / name).read_bytes(), name
    for p in (out / "figures").glob("*.png"):
        assert p.read_bytes() == (out2 / "figures" / p.name).read_bytes(), p.name


def test_labels_come_from_the_method_catalog_by_default(tmp_path):
    pytest.importorskip("ablate.methods.catalog")
    sw = make_sweep(tmp_path, slots={"mask": ["ppo_clip", "clip_higher"], "denominator": ["behaviour"],
                                     "advantage": ["group_zscore"], "likelihood": ["identity"],
                                     "aggregation": ["seq_mean_token_mean"]},
                    effects={}, n_seeds=2, n_failed=0, n_early_stopped=0, samples_per_trial=1)
    md = (generate_report(sw, tmp_path / "o") / "report.md").read_text()
    assert "GRPO" in md.split("## Leaderboard")[1].split("## Slot effects")[0]


def test_edge_cases_single_seed_min_mode_all_failed(tmp_path):
    one = make_sweep(tmp_path, name="one_seed", slots={"mask": ["a", "b"], "advantage": ["x", "y"]},
                     effects={}, n_seeds=1, n_failed=0, n_early_stopped=0, samples_per_trial=0)
    (one / "sweep.json").write_text((one / "sweep.json").read_text().replace('"max"', '"min"'))
    md = (generate_report(one, tmp_path / "o1", presets=[]) / "report.md").read_text()
    assert "Every combination has a single full-budget seed" in md and "lower is better" in md
    assert "Importances skipped: 4 full-budget" not in md  # 4 trials are enough
    dead = make_sweep(tmp_path, name="dead", slots={"mask": ["a", "b"]}, effects={}, n_seeds=1,
                      n_failed=2, n_early_stopped=0)
    md = (generate_report(dead, tmp_path / "o2", presets=[]) / "report.md").read_text()
    assert "No finished full-budget trial" in md and "2 trial(s) failed" in md


def test_tasks_become_strata_and_bad_lines_are_tolerated(tmp_path):
    sw = make_sweep(tmp_path, name="tasks", slots={"mask": ["a", "b"]},
                    effects={"mask": {"a": 0.0, "b": 0.1}},
                    params={"task": ["arith", "countdown"]}, n_failed=0, n_early_stopped=0)
    with open(sw / "trials" / "t0000" / "metrics.jsonl", "a") as f:
        f.write('{"step": 21, "train/entr\n')  # a truncated last line (crashed writer)
    loaded = load_sweep(sw)
    assert any("unreadable line" in w for w in loaded.warnings)
    md = (generate_report(sw, tmp_path / "o", presets=[]) / "report.md").read_text()
    assert "strata = tasks (task)" in md and "| M01 |" in md


def test_a_sweep_without_trials_still_gets_a_report(tmp_path):
    """A sweep stopped before any trial wrote its run dir: a report that says so, not a KeyError."""
    (tmp_path / "trials").mkdir()
    (tmp_path / "sweep.json").write_text('{"name": "empty", "metric": "eval/pass@1", "mode": "max"}')
    md = (generate_report(tmp_path, tmp_path / "o", presets=[]) / "report.md").read_text()
    assert "| Trials | 0 total:" in md and "No finished full-budget trial" in md


def test_missing_sweep_files_give_one_clear_error(tmp_path):
    with pytest.raises(SweepFormatError, match="sweep.json"):
        load_sweep(tmp_path)
    assert main(["report", str(tmp_path), "--output", str(tmp_path / "o")]) == 2


def test_reads_at_a_glance(tmp_path):
    """Findings before the configuration; the leaderboard names combinations by their swept
    factors, the catalog look-alike is a footnote; samples are collapsed; no HTML entities in the
    Markdown's own text; W&B paths under the sweep dir are relative."""
    sw = make_sweep(tmp_path, name="glance", slots={"mask": ["ppo_clip", "none"]},
                    effects={"mask": {"ppo_clip": 0.0, "none": 0.1}},
                    params={"train.epochs": [1, 4]}, n_failed=0, n_early_stopped=0)
    out = generate_report(sw, tmp_path / "o", presets=[GRPO])
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    heads = re.findall(r"^## (.+?)<a", md, flags=re.M)
    assert heads[:2] == ["Overview", "Findings"] and heads[-1] == "Configuration", heads
    assert md.index("## Findings") < md.index("```yaml")  # the resolved YAML is at the end
    lb = md[md.index("## Leaderboard"):md.index("## Curves")]
    assert "| C01¹ | mask=" in lb or "| C01 | mask=" in lb
    rows = [ln for ln in lb.splitlines() if ln.startswith("| C0")]
    assert len({ln.split("|")[2] for ln in rows}) == 4  # every label tells its combination apart
    assert all("train.epochs=" in ln for ln in rows)
    assert ("¹ Catalog look-alikes" in lb) == any("¹" in ln for ln in rows)
    samples = md[md.index("## Sample generations"):md.index("## Trials and W")]
    assert samples.count("<details><summary>") >= 1 and "<details open" not in samples
    assert "<details><summary>C01 mask=" in html
    text = "\n".join(ln for ln in md.splitlines() if not ln.startswith(("<pre>", "<details>")))
    assert "&lt;" not in text and "&amp;" not in text and "&gt;" not in text, [
        ln for ln in md.splitlines() if "&lt;" in ln or "&amp;" in ln][:5]
    assert "## Trials and W&B runs" in md
    assert f"wandb sync {sw}" not in md  # relative to the sweep dir, as the text promises


def test_figures_are_not_clipped_and_legends_name_the_factors(tmp_path):
    """Every PNG keeps a white margin on all four sides (nothing drawn runs off the canvas, as a
    legend wider than its figure did), and the curves legend sits below the panels."""
    from matplotlib.image import imread

    from ablate.report.aggregate import build_combos
    from ablate.report.plots import _combo_name

    slots = {"mask": ["ppo_clip", "clip_higher"], "advantage": ["group_zscore", "rloo"],
             "likelihood": ["identity", "luffy"]}
    sw = make_sweep(tmp_path, name="wide", slots=slots, params={"train.lr": [1e-4, 3e-4]},
                    n_seeds=2, n_failed=0, n_early_stopped=0, samples_per_trial=0)
    out = generate_report(sw, tmp_path / "o", presets=[GRPO])
    for png in sorted((out / "figures").glob("*.png")):
        px = imread(str(png))[..., :3]
        edges = np.concatenate([px[:3].reshape(-1, 3), px[-3:].reshape(-1, 3),
                                px[:, :3].reshape(-1, 3), px[:, -3:].reshape(-1, 3)])
        assert (edges > 0.9).all(), f"{png.name}: drawn up to the edge (clipped)"
    curves = imread(str(out / "figures" / "curves.png"))[..., :3]
    bottom = curves[int(curves.shape[0] * 0.9):]
    assert (bottom < 0.5).any()  # the legend's text is below the panels
    from ablate.tracking.sweep_reader import load_sweep as _load

    combos = build_combos(_load(sw), [GRPO])
    names = [_combo_name(c) for c in combos]
    assert len(set(names)) == len(names) and all("train.lr=" in n for n in names)
    assert not any("GRPO" in n for n in names) and not any("…" in n for n in names)


def test_report_says_how_to_open_the_optuna_journal(tmp_path):
    sw = make_sweep(tmp_path, name="opt", slots={"mask": ["a", "b"]}, effects={}, n_seeds=1,
                    n_failed=0, n_early_stopped=0, samples_per_trial=0, journal=True)
    said: list[str] = []
    out = generate_report(sw, tmp_path / "o", presets=[], log=said.append)
    assert any(m.endswith(f"optuna-dashboard {sw / 'optuna.journal'}") for m in said), said
    md = (out / "report.md").read_text()
    assert "optuna-dashboard optuna.journal" in md and "user attributes" in md


@pytest.mark.parametrize("text", [None, "{not json", '{"name": "grpo"}'])
def test_a_bad_presets_file_gives_one_clear_error(tmp_path, capsys, text):
    presets = tmp_path / "presets.json"
    if text is not None:
        presets.write_text(text)
    (tmp_path / "trials").mkdir()
    (tmp_path / "sweep.json").write_text('{"name": "empty", "metric": "eval/pass@1", "mode": "max"}')
    assert main(["report", str(tmp_path), "--presets", str(presets), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: report: --presets") and "ablate methods --json" in err
    assert "\n" not in err and not (tmp_path / "o").exists()
