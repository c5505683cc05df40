"""The run links an Optuna study trial gets when its Tune trial completes (no Ray, no Optuna)."""

from __future__ import annotations

import json
from pathlib import Path

from ablate.sweep.study import _outcome_links


def _run(sweep: Path, seed: int, status: str, wandb_id: str | None = None, summary_id: str | None = None):
    d = sweep / "trials" / "t1" / f"seed_{seed}"
    d.mkdir(parents=True)
    rec = {"seed": seed, "seeds": [0, 1], "status": status, "wandb_run_id": wandb_id}
    summary = {"sweep": rec, **({"wandb": {"run_id": summary_id}} if summary_id else {})}
    (d / "summary.json").write_text(json.dumps(summary))


def test_links_name_every_seed_run_and_fall_back_to_the_summary_wandb_id(tmp_path):
    assert _outcome_links(tmp_path, "t1") == {}
    _run(tmp_path, 0, "finished", wandb_id="w0")
    assert _outcome_links(tmp_path, "t1")["status"] == "running"  # seed 1 has not started
    _run(tmp_path, 1, "failed", summary_id="w1")  # no id in its record: the summary's
    links = _outcome_links(tmp_path, "t1")
    assert links == {"wandb_run_ids": ["w0", "w1"], "status": "failed",
                     "seed_run_dirs": ["trials/t1/seed_0", "trials/t1/seed_1"]}
