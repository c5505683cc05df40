"""The search spaces in search_spaces/ validate against the real conf/ and compose for every trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.sweep.runner import preflight
from ablate.sweep.space import DEFAULT_TRAINABLE, load_search_space, plan_trials

SPACES = sorted((Path(__file__).resolve().parents[2] / "search_spaces").glob("*.yaml"))
REQUIRED = {"quickstart", "upge_table", "mask_ablation", "advantage_ablation", "tpe_example"}


def test_the_required_spaces_ship():
    assert REQUIRED <= {p.stem for p in SPACES}


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_shipped_space_validates_and_composes(path, monkeypatch):
    monkeypatch.delenv("ABLATE_CONF_DIR", raising=False)
    space = load_search_space(path)  # structure + every slot variant / method preset on disk
    assert space.name == path.stem
    assert space.trainable == DEFAULT_TRAINABLE
    specs = plan_trials(space)
    if specs is not None:
        assert len(specs) == len({s["key"] for s in specs}) > 0
        assert {s["seed"] for s in specs} == set(space.seeds)
    else:
        assert space.is_optuna and space.search.num_samples
    assert preflight(space) > 0  # Hydra composes each trial's overrides (one-line error if not)
