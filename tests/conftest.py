"""Test-wide settings: one torch thread per test process (CI has 2 cores), offline W&B."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# test fixtures name their own classes (tests.slot_fixtures.NaNAdvantage, ...): the tests package
# is a plugin, as a user's module named with --plugins would be (ablate/spec/targets.py)
os.environ.setdefault("ABLATE_PLUGINS", "tests")

import torch  # noqa: E402

torch.set_num_threads(1)
