"""Run tracking: the local run store (source of truth for reports), W&B logging that never kills a
run, and a reader for offline W&B runs."""

from ablate.tracking.run_store import RunStore, load_run
from ablate.tracking.tracker import Tracker, build_tracker
from ablate.tracking.wandb_logger import WandbLogger, api_key_configured, resolve_mode
from ablate.tracking.wandb_reader import read_offline_history, read_offline_run

__all__ = ["RunStore", "load_run", "Tracker", "build_tracker", "WandbLogger", "resolve_mode",
           "api_key_configured", "read_offline_history", "read_offline_run"]
