"""Run tracking: the local run store (source of truth for reports), the sweep reader over it
(``sweep_reader``: what claims and the report read), run provenance, and W&B logging that never
kills a run (tests/wandb_reader.py reads offline W&B runs back in tests)."""

from ablate.tracking.run_store import RunStore, load_run
from ablate.tracking.tracker import Tracker, build_tracker
from ablate.tracking.wandb_logger import WandbLogger, api_key_configured, resolve_mode

__all__ = ["RunStore", "load_run", "Tracker", "build_tracker", "WandbLogger", "resolve_mode",
           "api_key_configured"]
