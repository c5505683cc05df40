"""Diagnostics with explicit reductions: how a per-microbatch value becomes one per-step number.

A component returns ``{name: Diag(value, reduce)}``; ``mean`` is weighted by ``weight`` (the
chunk's valid tokens unless the producer says otherwise), ``max``/``min`` are extremes over chunks,
``sum`` adds, ``partial`` is a chunk's share of a minibatch quantity (a loss normalised by the
minibatch totals): the shares add up to the minibatch value, reported as the mean over the step's
minibatches, so it does not depend on how minibatches are cut into microbatches or workers.
Values stay on the device until ``DiagAccumulator.result`` (one host sync per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch

REDUCTIONS = ("mean", "max", "min", "sum", "partial")
_OPS = {"mean": "sum", "sum": "sum", "partial": "sum", "max": "max", "min": "min"}


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


def partial(v: torch.Tensor) -> Diag:
    return Diag(v.detach(), "partial")


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

    def result(self, prefix: str = "", minibatches: int = 1, reducer=None) -> dict[str, float]:
        """The step's values; ``minibatches`` divides ``partial`` sums; ``reducer`` (an object with
        ``all_reduce(t, op)``) combines the workers of a multi-worker trial exactly."""
        keys = sorted(self._acc)  # the same order on every worker
        if reducer is not None:
            keys = sorted(set().union(*reducer.all_gather_object(keys)))
        if not keys:
            return {}
        dev = next(iter(self._acc.values())).device if self._acc else torch.device("cpu")
        zero = torch.zeros((), dtype=torch.float64, device=dev)
        acc = {k: self._acc.get(k, zero) for k in keys}
        wts = {k: self._w.get(k, zero) for k in keys if self._kind.get(k, "mean") == "mean"}
        if reducer is not None:
            kinds = {}
            for part in reducer.all_gather_object(dict(self._kind)):
                kinds.update(part)
            self._kind = kinds
            for k in keys:
                op = _OPS[self._kind[k]]
                have = torch.tensor([1.0 if k in self._acc else 0.0], dtype=torch.float64)
                if op != "sum" and float(reducer.all_reduce(have, "sum")[0]) < reducer.world:
                    # a worker without this value: reduce over those that have it
                    fill = float("-inf") if op == "max" else float("inf")
                    v = self._acc.get(k, torch.full((), fill, dtype=torch.float64, device=dev))
                    acc[k] = reducer.all_reduce(v.reshape(1), op).reshape(())
                else:
                    acc[k] = reducer.all_reduce(acc[k].reshape(1), op).reshape(())
                if k in wts:
                    wts[k] = reducer.all_reduce(wts[k].reshape(1), "sum").reshape(())
        vals = []
        for k in keys:
            kind = self._kind[k]
            if kind == "mean":
                vals.append(acc[k] / wts[k].clamp_min(1e-12))
            elif kind == "partial":
                vals.append(acc[k] / max(1, minibatches))
            else:
                vals.append(acc[k])
        return dict(zip((prefix + k for k in keys), torch.stack(vals).cpu().tolist()))
