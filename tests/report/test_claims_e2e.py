"""One shipped claim sweep end to end through `ablate claims` (Ray Tune, real trainer), with a
tiny budget: the sweep runs, the combined report states a verdict, the README block is rewritten."""

import json
from pathlib import Path

import pytest
import yaml


@pytest.mark.slow
def test_claim_sweep_end_to_end(tmp_path, monkeypatch):
    from ablate.cli.claims import run_claims

    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    data = yaml.safe_load(Path("search_spaces/claims/opo_grad_var.yaml").read_text())
    keep = [o for o in data["base_overrides"] if not o.startswith(("train.steps", "train.prompts_per_step",
                                                                  "eval."))]
    data["base_overrides"] = keep + ["train.steps=2", "train.prompts_per_step=4", "eval.every=2",
                                     "eval.num_prompts=8", "eval.n=4", "model.warm_start.steps=20",
                                     "model.warm_start.target_pass1=null"]
    data["seeds"] = [0, 1]
    f = tmp_path / "opo_small.yaml"
    f.write_text(yaml.safe_dump(data))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- claims:begin old -->\nold\n<!-- claims:end -->\ntail\n")
    rc = run_claims([str(f)], output_dir=str(tmp_path / "runs"), report_dir=str(tmp_path / "rep"),
                    readme=str(readme), num_cpus=2)
    assert rc == 0
    res = json.loads((tmp_path / "rep" / "claims.json").read_text())
    assert [r["id"] for r in res] == ["opo_lower_grad_var"]
    assert res[0]["verdict"] == "misspecified"  # the first OPO attempt is marked so
    assert res[0]["n_a"] == res[0]["n_b"] == 2
    md = (tmp_path / "rep" / "claims.md").read_text()
    assert "opo_lower_grad_var" in md and "2505.23585" in md
    text = readme.read_text()
    assert "old\n" not in text and "| opo_lower_grad_var | 2505.23585 |" in text and text.endswith("tail\n")
    # a second call reuses the finished sweep (no rerun) and regenerates the same verdict
    assert run_claims([str(f)], output_dir=str(tmp_path / "runs"), report_dir=str(tmp_path / "rep"),
                      readme=None) == 0
    assert json.loads((tmp_path / "rep" / "claims.json").read_text())[0]["verdict"] == res[0]["verdict"]
