"""LR schedules come from transformers.get_scheduler under our schema's names."""

from __future__ import annotations

import pytest
import torch

from ablate.optim import SCHEDULES, lr_schedule
from ablate.schema import TrainConfig


def _lrs(kind: str, warmup: int, total: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = lr_schedule(opt, kind, warmup, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_every_schema_schedule_has_a_transformers_name():
    allowed = TrainConfig.model_fields["scheduler"].annotation.__args__
    assert set(allowed) == set(SCHEDULES)


@pytest.mark.parametrize("kind,expect", [
    ("constant", [0.0, 0.5, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [0.0, 0.5, 1.0, 0.75, 0.5, 0.25]),
    ("cosine", [0.0, 0.5, 1.0, 0.8535534, 0.5, 0.1464466]),
])
def test_warmup_then_decay(kind, expect):
    assert _lrs(kind, 2, 6) == pytest.approx(expect, abs=1e-6)


def test_no_warmup_starts_at_full_rate():
    assert _lrs("cosine", 0, 4)[0] == 1.0 and _lrs("linear", 0, 4)[1] == pytest.approx(0.75)
