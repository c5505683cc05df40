"""The Optuna study of a sweep, traceable to its runs: every study trial carries user attributes
naming its Tune trial id, its run directory (relative to the sweep dir) and, once it ended, its
W&B run id(s). Open the journal with optuna-dashboard (``pip install 'ablate-upge[dashboard]'``)::

    optuna-dashboard runs/<sweep>/optuna.journal

Only Optuna's public storage API is used: the study trial a proposal created is the newest
RUNNING one right after Tune's searcher asked for it (the searcher runs in the driver, one
proposal at a time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

JOURNAL = "optuna.journal"


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
    """W&B ids and run dirs of the seeds a trial ran: the run store (a run dir exists from its
    start; its record, ablate.tracking.trials.run_record, once it ended; a run the scheduler
    stopped has its W&B id only in its summary)."""
    from ablate.tracking.run_store import read_summary
    from ablate.tracking.trials import run_record

    dirs = [p for p in sorted((Path(sweep_dir) / "trials" / trial_id).glob("seed_*")) if p.is_dir()]
    if not dirs:
        return {}
    runs = [run_record(p) for p in dirs]
    statuses = {r.get("status") for r in runs}
    seeds = next((r["seeds"] for r in runs if r.get("seeds")), None)
    ended = all(runs) and len(runs) == len(seeds or runs) and statuses <= {"finished", "failed"}
    status = ("failed" if "failed" in statuses else "finished") if ended else (
        "stopped" if "stopped" in statuses else "running")
    wandb = [read_summary(p).get("wandb") for p in dirs]
    ids = [r.get("wandb_run_id") or (wb.get("run_id") if isinstance(wb, dict) else None)
           for r, wb in zip(runs, wandb)]
    return {"wandb_run_ids": [i for i in ids if i],
            "seed_run_dirs": [str(p.relative_to(sweep_dir)) for p in dirs], "status": status}
