"""The rollout engine gets the current weights after every update: an engine that keeps its own
copy (vLLM) would otherwise sample every step from the initial policy while ρ is computed against
the current one. A recording engine (HF sampling underneath) checks the pushes."""

from __future__ import annotations

import pytest
import torch

from ablate.config import compose_config
from ablate.rollout.hf import HFEngine

FAST = [
    "train.steps=3", "train.prompts_per_step=4", "train.group_size=4", "train.microbatches=2",
    "train.minibatches=2", "eval.num_prompts=4", "eval.n=4", "eval.every=0", "tracker=none",
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
    "model.warm_start.steps=10", "model.warm_start.target_pass1=null",
    "rollout._target_=tests.test_engine_sync.RecordingEngine",
]


class RecordingEngine(HFEngine):
    """Samples with HF generate, but from its *own* copy of the weights, like vLLM."""

    instances: list["RecordingEngine"] = []

    def __init__(self, temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 8,
                 top_k: int = 0, batch_size=None, logprob_batch_size=None):
        super().__init__(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                         top_k=top_k, batch_size=batch_size, logprob_batch_size=logprob_batch_size)
        self.pushes: list[dict[str, torch.Tensor]] = []
        self.stale_generations = 0
        RecordingEngine.instances.append(self)

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.pushes.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    def generate(self, model, tokenizer, prompts, n, **kw):
        if self.pushes:  # what the engine would sample from must be the trainer's current policy
            current = model.state_dict()
            if any(not torch.equal(current[k], v) for k, v in self.pushes[-1].items()):
                self.stale_generations += 1
        return super().generate(model, tokenizer, prompts, n, **kw)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_weights_are_pushed_after_every_update_and_generation_uses_them():
    from ablate.train.trainer import Trainer

    RecordingEngine.instances.clear()
    tr = Trainer(compose_config(FAST + ["method=grpo", "advantage=constant"]))  # Â ≡ 1: weights move
    tr.run(progress=False)
    eng = RecordingEngine.instances[-1]
    assert len(eng.pushes) == 3  # one push per RL step, after its 2 optimizer steps
    final = tr.model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in eng.pushes[-1].items())
    assert any(not torch.equal(eng.pushes[0][k], eng.pushes[1][k]) for k in final)  # weights moved
    assert eng.stale_generations == 0  # steps 2, 3 and the final eval sampled the pushed weights
