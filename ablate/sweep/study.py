"""The Optuna study of a sweep, traceable to its runs: every study trial carries user attributes
naming its Tune trial id, its run directory (relative to the sweep dir) and, once it ended, its
W&B run id(s). Open the journal with optuna-dashboard (``pip install 'ablate-upge[dashboard]'``)::

    optuna-dashboard runs/<sweep>/optuna.journal

Only Optuna's public storage API is used: the study trial a proposal created is the newest
RUNNING one right after Tune's searcher asked for it (the searcher runs in the driver, one
proposal at a time).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

JOURNAL = "optuna.journal"


def dashboard_command(sweep_dir: Path | str) -> str:
    return f"optuna-dashboard {Path(sweep_dir) / JOURNAL}"


def make_linked_search(*, storage, study_name: str, sweep_dir: Path, **kwargs):
    """Ray Tune's OptunaSearch, writing the run links into the study as user attributes."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class LinkedOptunaSearch(OptunaSearch):
        def __init__(self):
            super().__init__(storage=storage, study_name=study_name, **kwargs)
            self.links_storage = storage
            self.links_study = study_name
            self.links_sweep_dir = str(sweep_dir)
            self.links_numbers: dict[str, int] = {}

        def _set(self, number: int, attrs: dict[str, Any]) -> None:
            st = self.links_storage
            sid = st.get_study_id_from_name(self.links_study)
            tid = st.get_trial_id_from_study_id_trial_number(sid, number)
            for k, v in attrs.items():
                st.set_trial_user_attr(tid, k, v)

        def suggest(self, trial_id: str) -> Optional[dict]:
            config = super().suggest(trial_id)
            if trial_id not in self.links_numbers:
                st = self.links_storage
                sid = st.get_study_id_from_name(self.links_study)
                running = st.get_all_trials(sid, deepcopy=False,
                                            states=(optuna.trial.TrialState.RUNNING,))
                if running:
                    number = max(t.number for t in running)
                    self.links_numbers[trial_id] = number
                    self._set(number, {"tune_trial_id": trial_id,
                                       "run_dir": f"trials/{trial_id}",
                                       "sweep_dir": self.links_sweep_dir})
            return config

        def on_trial_complete(self, trial_id: str, result: Optional[dict] = None,
                              error: bool = False) -> None:
            number = self.links_numbers.get(trial_id)
            if number is not None:
                self._set(number, _outcome_links(Path(self.links_sweep_dir), trial_id))
            super().on_trial_complete(trial_id, result=result, error=error)

    return LinkedOptunaSearch()


def _outcome_links(sweep_dir: Path, trial_id: str) -> dict[str, Any]:
    """W&B ids and run dirs of the seeds a trial ran (from its sweep_trial.json)."""
    try:
        out = json.loads((sweep_dir / "trials" / trial_id / "sweep_trial.json").read_text())
    except (OSError, ValueError):
        return {}
    runs = [r for r in out.get("runs") or [] if isinstance(r, dict)]
    ids = [r.get("wandb_run_id") or _summary_wandb_id(sweep_dir / str(r.get("run_dir") or ""))
           for r in runs]
    return {"wandb_run_ids": [i for i in ids if i],
            "seed_run_dirs": [r.get("run_dir") for r in runs if r.get("run_dir")],
            "status": str(out.get("status") or "unknown")}


def _summary_wandb_id(run_dir: Path) -> Optional[str]:
    """A run stopped by the scheduler has no final summary in the outcome file: its run store's."""
    try:
        wb = json.loads((run_dir / "summary.json").read_text()).get("wandb") or {}
    except (OSError, ValueError, AttributeError):
        return None
    return wb.get("run_id") if isinstance(wb, dict) else None
