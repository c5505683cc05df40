"""The report of a damaged sweep: a torn trials.jsonl line is recovered from the trial's own run
directory, every skipped or partly read trial is named (console and report), and hyperparameter ×
slot interactions are shown with legends that name the combination."""

from __future__ import annotations

from ablate.report import generate_report
from ablate.sweep.runner import run_sweep
from ablate.tracking.sweep_reader import load_sweep
from tests.sweep.conftest import read_trials, write_space


def test_damaged_sweep_report(tmp_path, conf_env, ray_local, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = write_space(tmp_path / "rr.yaml", name="rr", seeds=[0, 1],
                    slots={"mask": ["ppo_clip", "none"]},
                    params={"train.epochs": {"type": "choice", "values": [1, 4]}},
                    base_overrides=["fake.steps=2"])
    assert run_sweep(f, report=False, log=lambda m: None) == 0
    sweep_dir = tmp_path / "runs" / "rr"
    rows = read_trials(sweep_dir)
    assert len(rows) == 8 and {r["status"] for r in rows} == {"finished"}
    # a killed driver tore the last line of the table
    text = (sweep_dir / "trials.jsonl").read_text().splitlines(keepends=True)
    torn = rows[-1]
    (sweep_dir / "trials.jsonl").write_text("".join(text[:-1]) + text[-1][: len(text[-1]) // 2])
    # one run lost its metrics.jsonl, another has a garbage line in it
    gone, garbled = rows[0], rows[1]
    (sweep_dir / gone["run_dir"] / "metrics.jsonl").unlink()
    with open(sweep_dir / garbled["run_dir"] / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 3, "eval/pa\n')

    sweep = load_sweep(sweep_dir)
    assert sorted(sweep.trials["trial_id"]) == sorted(r["trial_id"] for r in rows)
    rec = sweep.trials.set_index("trial_id").loc[torn["trial_id"]]
    assert rec["status"] == "finished" and rec["final.eval/pass@1"] == torn["value"]
    assert len(sweep.full_budget()) == 8  # the recovered trial counts
    why = {s["trial_id"]: s["reason"] for s in sweep.skipped}
    assert "metrics.jsonl missing" in why[gone["trial_id"]]
    assert "1 unreadable line(s)" in why[garbled["trial_id"]]

    lines: list[str] = []
    out = generate_report(sweep_dir, tmp_path / "report", log=lines.append)
    console = "\n".join(lines)
    assert gone["trial_id"] in console and garbled["trial_id"] in console
    md = (out / "report.md").read_text()
    assert "Skipped trials (2)" in md
    assert gone["trial_id"] in md and garbled["trial_id"] in md
    # hyperparameter x slot interaction (the quickstart's mask x train.epochs design)
    assert "mask × train.epochs" in md and "Fewer than two" not in md

    from ablate.report.aggregate import build_combos
    from ablate.report.plots import _combo_name

    combos = build_combos(sweep, [])
    assert len(combos) == 4
    for c in combos:  # curve legends name the combination, not just C03
        name = _combo_name(c)
        assert name.startswith(c.cid) and "mask=" in name and "train.epochs=" in name
