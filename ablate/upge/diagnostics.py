"""Diagnostics with explicit reductions: how a per-microbatch value becomes one per-step number.

A component returns ``{name: Diag(value, reduce)}``; ``mean`` is weighted by ``weight`` (the
chunk's valid tokens unless the producer says otherwise), ``max``/``min`` are extremes over chunks,
``sum`` adds. Values stay on the device until ``DiagAccumulator.result`` (one host sync per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch

REDUCTIONS = ("mean", "max", "min", "sum")


@dataclass
class Diag:
    value: torch.Tensor  # 0-d, detached
    reduce: str = "mean"
    weight: Optional[torch.Tensor | float] = None  # for "mean": None = the chunk's token count

    def __post_init__(self) -> None:
        if self.reduce not in REDUCTIONS:
            raise ValueError(f"Diag.reduce: unknown value {self.reduce!r}; allowed: {', '.join(REDUCTIONS)}")


def mean(v: torch.Tensor, weight: Optional[torch.Tensor | float] = None) -> Diag:
    return Diag(v.detach(), "mean", weight)


def maximum(v: torch.Tensor) -> Diag:
    return Diag(v.detach(), "max")


def minimum(v: torch.Tensor) -> Diag:
    return Diag(v.detach(), "min")


class DiagAccumulator:
    """Reduce diagnostics over the microbatches of one step."""

    def __init__(self) -> None:
        self._acc: dict[str, torch.Tensor] = {}
        self._w: dict[str, torch.Tensor] = {}
        self._kind: dict[str, str] = {}

    def add(self, diags: Mapping[str, Diag], default_weight: torch.Tensor | float) -> None:
        for k, d in diags.items():
            v = d.value.detach().double()
            prev = self._kind.setdefault(k, d.reduce)
            if prev != d.reduce:
                raise ValueError(f"diagnostic {k!r} reported with reductions {prev!r} and {d.reduce!r}")
            if d.reduce == "mean":
                w = torch.as_tensor(default_weight if d.weight is None else d.weight,
                                    dtype=torch.float64, device=v.device)
                self._acc[k] = self._acc[k] + v * w if k in self._acc else v * w
                self._w[k] = self._w[k] + w if k in self._w else w
            elif k not in self._acc:
                self._acc[k] = v
            elif d.reduce == "max":
                self._acc[k] = torch.maximum(self._acc[k], v)
            elif d.reduce == "min":
                self._acc[k] = torch.minimum(self._acc[k], v)
            else:
                self._acc[k] = self._acc[k] + v

    def result(self, prefix: str = "") -> dict[str, float]:
        if not self._acc:
            return {}
        keys = list(self._acc)
        vals = [self._acc[k] / self._w[k].clamp_min(1e-12) if self._kind[k] == "mean" else self._acc[k]
                for k in keys]
        return dict(zip((prefix + k for k in keys), torch.stack(vals).cpu().tolist()))
