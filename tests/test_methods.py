"""The method catalog: every preset is complete, names real variants, and composes."""

import json
import subprocess
import sys

import pytest

from ablate.methods.catalog import check_presets, load_presets

REQUIRED_PRESETS = {"sft", "ppo", "grpo", "reinforce", "cispo", "gspo", "srft", "luffy", "dapo",
                    "drgrpo", "rloo", "reinforce_pp", "opo", "gpg"}


def test_catalog_has_the_upge_table_and_common_methods():
    names = {r["name"] for r in load_presets()}
    assert REQUIRED_PRESETS <= names


def test_every_preset_is_complete_and_names_existing_variants():
    assert check_presets() == []


def test_changes_relative_to_grpo_are_computed_from_files():
    recs = {r["name"]: r for r in load_presets()}
    assert recs["grpo"]["changes"] == []
    assert "mask" in recs["dapo"]["changes"] and "aggregation" in recs["dapo"]["changes"]
    assert recs["drgrpo"]["changes"][:1] == ["advantage"]


def test_methods_json_cli_lists_all_fields():
    out = subprocess.run([sys.executable, "-m", "ablate.cli", "methods", "--json"],
                         capture_output=True, text=True, check=True).stdout
    recs = json.loads(out)
    assert len(recs) >= 14
    for r in recs:
        for k in ("name", "mask", "denominator", "advantage", "likelihood", "aggregation", "paper",
                  "arxiv", "fidelity"):
            assert r.get(k), (r["name"], k)


@pytest.mark.parametrize("name", sorted(REQUIRED_PRESETS))
def test_preset_composes_and_builds_its_slots(name):
    from ablate.config import compose_config
    from ablate.train.components import build_algorithm

    cfg = compose_config([f"method={name}"])
    assert cfg.choices["method"] == name
    algo = build_algorithm(cfg)
    assert algo.objective.terms and algo.objective.primary.advantage is not None


def test_unknown_method_fails_with_one_line():
    from ablate.config import compose_config
    from ablate.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        compose_config(["method=grop"])
    assert "grpo" in str(e.value) and "\n" not in str(e.value)
