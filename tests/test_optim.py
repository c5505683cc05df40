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


def test_adamw_is_fused_on_cpu_and_takes_the_per_tensor_loops_steps():
    """ablate.optim.adamw uses torch's fused kernel (HF Trainer's / TRL's ``adamw_torch_fused``
    default) and follows the same trajectory as torch's per-tensor AdamW."""
    from ablate.optim import adamw

    torch.manual_seed(0)
    a = torch.nn.Linear(6, 3)
    b = torch.nn.Linear(6, 3)
    b.load_state_dict(a.state_dict())
    start = [p.detach().clone() for p in a.parameters()]
    fused = adamw(a.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    loop = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, foreach=False)
    assert fused.defaults["fused"] is True
    for _ in range(20):
        x = torch.randn(8, 6)
        for net, opt in ((a, fused), (b, loop)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for p, q, p0 in zip(a.parameters(), b.parameters(), start):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert (p - p0).abs().max() > 1e-3  # it did move
