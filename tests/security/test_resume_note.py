"""Resume says which checkpoint it took and why (a truncated newest one is named, not skipped
silently)."""

from __future__ import annotations

import warnings

import torch

from ablate.sweep.trial import CHECKPOINT_FILE, _load_checkpoint


def test_resume_names_the_checkpoint_and_the_skipped_one(tmp_path):
    trial = tmp_path / "tune" / "t1"
    old, new = trial / "checkpoint_000001", trial / "checkpoint_000002"
    old.mkdir(parents=True)
    new.mkdir()
    torch.save({"seed_index": 0, "step": 3}, old / CHECKPOINT_FILE)
    torch.save({"seed_index": 0, "step": 6}, new / CHECKPOINT_FILE)
    data = (new / CHECKPOINT_FILE).read_bytes()
    (new / CHECKPOINT_FILE).write_bytes(data[: len(data) // 2])  # cut short by a kill
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Ray: get_checkpoint outside a session
        state, note = _load_checkpoint(tmp_path, "t1")
    assert state["step"] == 3
    assert "checkpoint_000001" in note and "step 3" in note
    assert "skipped checkpoint_000002 unreadable" in note
