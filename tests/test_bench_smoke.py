"""Smoke tests of the benchmark entry point (bench/, `python -m bench --quick`).

The default test runs the cheapest section (estimator overhead: no TRL, no Ray) in quick mode and
checks the table, the one-line summary and the JSON file; it takes a few seconds. The TRL / step
section needs the `bench` extra (`pip install -e '.[bench]'`) and is marked slow.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from bench.__main__ import main


def _run(tmp_path, capsys, sections: str) -> tuple[dict, list[str]]:
    out = tmp_path / "bench.json"
    rc = main(["--quick", "--only", sections, "--out", str(out)])
    lines = [x for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert rc == 0, "\n".join(lines)
    doc = json.loads(out.read_text())
    return doc, lines


@pytest.mark.timeout(60)
def test_bench_quick_estimator(tmp_path, capsys):
    doc, lines = _run(tmp_path, capsys, "estimator")
    assert lines[-1].startswith("bench: ") and str(tmp_path / "bench.json") in lines[-1]
    assert any(x.startswith("estimator grpo") for x in lines)
    rows = [r for r in doc["rows"] if r["section"] == "estimator"]
    assert {r["metric"].split()[1] for r in rows} == {"grpo", "dapo", "gspo"}
    for r in rows:
        assert r["value"] > 0 and isinstance(r["met"], bool)
        assert r["target"] == ("<= 1.05" if r["metric"].endswith("loss only") else "<= 1.10")
    det = doc["sections"]["estimator"]["details"]
    # the composed estimator and the hand-fused loss compute the same gradient
    assert all(d["grad_rel_diff"] < 1e-5 for d in det.values())
    m = doc["machine"]
    assert m["cores"] >= 1 and m["versions"]["torch"] and doc["quick"] is True


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="needs the bench extra (trl)")
def test_bench_quick_step_vs_trl(tmp_path, capsys):
    doc, lines = _run(tmp_path, capsys, "step")
    det = doc["sections"]["step"]["details"]
    assert det["same_initial_weights"], det["initial_weights_sha"]
    names = [r["metric"] for r in doc["rows"]]
    assert any("ablate / TRL" in n for n in names) and any("ablate / floor" in n for n in names)


@pytest.mark.timeout(120)
def test_bench_quick_generation_long_answers_and_eval_cache(tmp_path, capsys):
    doc, _ = _run(tmp_path, capsys, "generation,long,evalcache")
    rows = {r["metric"]: r for r in doc["rows"]}
    gen = [m for m in rows if m.startswith("generation") and "tokens/s" in m]
    assert gen and all(rows[m]["value"] > 0 for m in gen)
    assert any(m.startswith("long Qwen2") and m.endswith("step") for m in rows)
    # the TRL comparison runs where the bench extra is installed, and its absence (CI) fails nothing
    with_trl = importlib.util.find_spec("trl") is not None
    assert any(m.startswith("long Qwen2") and m.endswith("ablate / TRL step") for m in rows) == with_trl
    det = doc["sections"]["long"]["details"]
    assert det["params"] > 0 and all(d["summary_steps"] == 3 for k, d in det.items() if k.startswith("T="))
    read = [r for m, r in rows.items() if m.startswith("step-0 eval read")]
    assert len(read) == 1 and read[0]["value"] > 0  # the section itself fails unless it was a cache hit


_BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\ntime.sleep(0.3)"


@pytest.mark.timeout(30)
def test_tree_cpu_counts_a_child_process():
    """The sweep section's CPU split sees the CPU time of a process below the driver."""
    from bench.sweep import TreeCPU

    with TreeCPU(period=0.05) as cpu:
        subprocess.run([sys.executable, "-c", _BURN], check=True)
    children = {k: v for k, v in cpu.by_process.items() if k != "driver (this process)"}
    assert sum(children.values()) > 0
    assert cpu.total == pytest.approx(sum(cpu.by_process.values()), abs=0.05)
