"""A run's training state in one place: step, last metrics, component state, optimizer, RNGs.

``Trainer.state_dict()`` gathers it and ``Trainer.load_state_dict()`` restores it, so a trial
checkpoint resumes exactly where it stopped (same prompts, same samples, same component state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ablate.component import StepInfo


@dataclass
class TrainingState:
    step: int = 0  # last completed RL step (0 = none yet)
    total_steps: int = 0
    last_metrics: dict[str, float] = field(default_factory=dict)

    def info(self) -> StepInfo:
        """The step context of the step about to run."""
        return StepInfo(step=self.step + 1, total_steps=self.total_steps,
                        last_metrics=dict(self.last_metrics))

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "total_steps": self.total_steps,
                "last_metrics": dict(self.last_metrics)}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.step = int(d["step"])
        self.total_steps = int(d["total_steps"])
        self.last_metrics = dict(d["last_metrics"])


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy_global": np.random.get_state(),
            "numpy": rng.bit_generator.state,
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def load_rng_state(rng: np.random.Generator, d: dict[str, Any]) -> None:
    torch.set_rng_state(d["torch"])
    np.random.set_state(d["numpy_global"])
    rng.bit_generator.state = d["numpy"]
    if d.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(d["cuda"])
