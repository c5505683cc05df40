"""The component contract: declared needs, per-row side data, group-intact partitions, prescoring,
step context, component state, diagnostics reductions, and a trainer that names no method."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from ablate.component import Component, Needs, StepInfo, load_tree_state, tree_state
from ablate.config import compose_config
from ablate.upge.partition import partition
from ablate.upge.batch import RolloutBatch
from ablate.upge.diagnostics import Diag, DiagAccumulator

FAST = [
    "train.steps=2", "train.prompts_per_step=4", "train.group_size=4", "train.microbatches=2",
    "eval.num_prompts=4", "eval.n=4", "eval.every=0", "tracker=none",
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
    "model.warm_start.steps=10", "model.warm_start.target_pass1=null",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# ------------------------------------------------------------------------------------ needs
class _A(Component):
    NEEDS: ClassVar[Needs] = Needs(entropy=True, temperatures=frozenset({0.8}))


class _B(Component):
    NEEDS: ClassVar[Needs] = Needs(whole_groups=True, refill_rounds=3, rollouts=False,
                                   temperatures=frozenset({1.2}))


class _Parent(Component):
    def __init__(self):
        self.parts = [_A(), _B()]


def test_needs_union_is_declared_and_found_through_children():
    n = _Parent().needs()
    assert n.entropy and n.whole_groups and not n.ref_model
    assert n.temperatures == frozenset({0.8, 1.2}) and n.refill_rounds == 3 and n.rollouts is False
    assert n.prescoring and not Needs().prescoring
    assert (Needs() | Needs()).rollouts is True


def test_kl_coefficient_zero_needs_no_reference_model():
    from ablate.train.components import build_algorithm
    assert build_algorithm(compose_config(["method=grpo"])).needs().ref_model
    assert not build_algorithm(compose_config(["method=grpo", "regularizers.kl.coef=0"])).needs().ref_model
    assert not build_algorithm(compose_config(["method=dapo"])).needs().ref_model
    assert build_algorithm(compose_config(["method=dapo"])).needs().refill_rounds == 10  # verl DAPO recipe (issue 18)
    assert build_algorithm(compose_config(["method=sft"])).needs().rollouts is False


# ------------------------------------------------------------------------------------ rows
def _batch(B=6, T=3):
    return RolloutBatch(input_ids=torch.zeros(B, T + 1, dtype=torch.long),
                        attention_mask=torch.ones(B, T + 1, dtype=torch.long),
                        response_mask=torch.ones(B, T), old_logp=torch.zeros(B, T),
                        rewards=torch.arange(B, dtype=torch.float32),
                        group_ids=torch.tensor([0, 0, 1, 1, 2, 2][:B]), prompt_len=1,
                        rows={"answer": [f"a{i}" for i in range(B)], "score": torch.arange(B) * 10,
                              "tok": torch.arange(B * T).reshape(B, T)})


def test_per_row_data_is_sliced_with_the_rows():
    b = _batch()
    s = b.select(torch.tensor([4, 1]))
    assert s.rows["answer"] == ["a4", "a1"]
    assert s.rows["score"].tolist() == [40, 10]
    assert s.rows["tok"].tolist() == [[12, 13, 14], [3, 4, 5]]
    m = b.select(torch.tensor([True, False, False, False, False, True]))
    assert m.rows["answer"] == ["a0", "a5"] and m.rewards.tolist() == [0.0, 5.0]


def test_misshapen_row_data_fails_on_select():
    b = _batch()
    b.rows["bad"] = [1, 2]
    with pytest.raises(ValueError, match="rows\\['bad'\\]"):
        b.select(torch.tensor([0]))


# ------------------------------------------------------------------------------------ partitions
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_group_partition_keeps_groups_whole_and_covers_every_row_once(k):
    groups = torch.tensor([3, 3, 0, 1, 1, 1, 2, 2, 0, 4])
    chunks = partition(10, k, torch.Generator().manual_seed(1), groups)
    rows = torch.cat(chunks).sort().values
    assert rows.tolist() == list(range(10))
    for c in chunks:
        gs = set(groups[c].tolist())
        for g in gs:  # every member of a group present in the chunk is in it
            assert set(torch.nonzero(groups == g).reshape(-1).tolist()) <= set(c.tolist())
    assert len(chunks) == min(k, 5)


def test_row_partition_matches_the_previous_permutation_split():
    gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    chunks = partition(9, 2, gen_a)
    expect = torch.randperm(9, generator=gen_b).tensor_split(2)
    assert all(torch.equal(a, b) for a, b in zip(chunks, expect))


# ------------------------------------------------------------------------------------ diagnostics
def test_diagnostics_reduce_as_declared():
    acc = DiagAccumulator()
    acc.add({"m": Diag(torch.tensor(1.0)), "hi": Diag(torch.tensor(3.0), "max"),
             "lo": Diag(torch.tensor(3.0), "min"), "s": Diag(torch.tensor(2.0), "sum")}, 1.0)
    acc.add({"m": Diag(torch.tensor(4.0)), "hi": Diag(torch.tensor(5.0), "max"),
             "lo": Diag(torch.tensor(-1.0), "min"), "s": Diag(torch.tensor(2.0), "sum")}, 3.0)
    out = acc.result("train/")
    assert out == {"train/m": pytest.approx(13 / 4), "train/hi": 5.0, "train/lo": -1.0, "train/s": 4.0}
    with pytest.raises(ValueError, match="reductions"):
        acc.add({"m": Diag(torch.tensor(1.0), "max")}, 1.0)


# ------------------------------------------------------------------------------------ state
class _Counter(Component):
    def __init__(self):
        self.seen = 0

    def observe(self, info, metrics):
        self.seen += 1

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = int(state.get("seen", 0))


def test_component_state_round_trips_through_the_tree():
    p = _Parent()
    p.parts.append(_Counter())
    p.parts[2].seen = 7
    st = tree_state(p)
    assert st == {"parts.2": {"seen": 7}}
    q = _Parent()
    q.parts.append(_Counter())
    load_tree_state(q, st)
    assert q.parts[2].seen == 7
    with pytest.raises(ValueError, match="unknown components"):
        load_tree_state(_Parent(), st)


def test_step_info_progress():
    assert StepInfo(step=1, total_steps=10).progress == 0.0
    assert StepInfo(step=6, total_steps=10).progress == 0.5


# ------------------------------------------------------------------------------------ trainer
class _NeedsEverything(Component):
    NEEDS: ClassVar[Needs] = Needs(logp_before_advantage=True, entropy_before_advantage=True,
                                   temperatures=frozenset({0.5}), step_info=True)


def test_prescoring_fills_behaviour_scores_before_the_advantage():
    from ablate.policy import token_logprobs
    from ablate.train.trainer import Trainer

    tr = Trainer(compose_config(FAST + ["method=grpo", "regularizers=none"]))
    tr.plan = tr.plan | _NeedsEverything().needs()
    rollouts, _ = tr.collect(1)
    batch = tr.assemble(rollouts)
    with torch.no_grad():
        lp, ent = token_logprobs(tr.model, batch.input_ids, batch.attention_mask, batch.prompt_len,
                                 tr.temperature, with_entropy=True)
        lp5, _ = token_logprobs(tr.model, batch.input_ids, batch.attention_mask, batch.prompt_len, 0.5)
    rm = batch.response_mask
    torch.testing.assert_close(batch.old_logp, lp * rm, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch.rows["old_entropy"], ent * rm, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch.rows["old_logp@0.5"], lp5 * rm, rtol=1e-5, atol=1e-5)
    assert batch.info is not None and batch.info.step == 1 and batch.info.total_steps == 2
    # per-row side data from the rollout: group statistics are p̂ and p̂(1−p̂) for 0/1 rewards
    p = batch.rows["group_reward_mean"]
    torch.testing.assert_close(batch.rows["group_reward_var"], p * (1 - p))
    assert len(batch.rows["answer"]) == batch.batch_size
    tr.objective.compute_advantages(batch)
    m = tr.update(batch, 1)
    assert "logp" in tr.timers.acc and m["train/optimizer_steps"] == 1.0


def test_whole_group_microbatches_give_the_gradient_of_one_big_batch():
    """Exact accumulation: the same minibatch split into group-intact microbatches or not."""
    from ablate.train.trainer import Trainer

    grads = []
    for mcs, whole in ((1, False), (3, True), (2, False)):
        tr = Trainer(compose_config(FAST + ["method=grpo", "regularizers=none",
                                            f"train.microbatches={mcs}", "train.max_grad_norm=1e9"]))
        if whole:
            tr.plan = tr.plan | Needs(whole_groups=True)
        rollouts, _ = tr.collect(1)
        batch = tr.assemble(rollouts)
        tr.objective.compute_advantages(batch)
        captured = {}

        def _capture(opt, args, kwargs):
            captured["g"] = torch.cat([p.grad.reshape(-1).clone() for p in tr.model.parameters()
                                       if p.grad is not None])

        tr.opt.register_step_pre_hook(_capture)
        tr.update(batch, 1)
        grads.append(captured["g"])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(grads[2], grads[0], rtol=1e-4, atol=1e-7)


def test_resume_from_trainer_state_continues_identically(tmp_path):
    """Checkpoint after step 1, restore into a fresh trainer: step 2 logs the same metrics."""
    from ablate.train.trainer import Trainer

    def rows_of(tr):
        out = []
        tr.tracker = type("T", (), {"log": lambda self, m, step: out.append((step, m)),
                                    "log_samples": lambda self, s, step: None,
                                    "log_eval_prompts": lambda self, prompt_id, n, c, step: None})()
        return out

    cfg = compose_config(FAST + ["method=dapo", "train.prompts_per_step=8", "seed=2"])  # DAPO: 16 minibatches
    full = Trainer(cfg)
    log_full = rows_of(full)
    snap = {}
    full.on_step_end = lambda tr, step: snap.setdefault(step, torch.save(tr.state_dict(), tmp_path / f"s{step}.pt"))
    full.run(progress=False)
    resumed = Trainer(cfg)
    resumed.load_state_dict(torch.load(tmp_path / "s1.pt", weights_only=False))
    log_res = rows_of(resumed)
    resumed.run(progress=False)
    strip = lambda m: {k: v for k, v in m.items() if not k.startswith("perf/")}  # noqa: E731
    assert [s for s, _ in log_res] == [2]
    assert strip(log_res[0][1]) == strip(dict(log_full)[2])


def test_trainer_names_no_method_and_inspects_no_component():
    src = "\n".join(p.read_text() for p in Path("ablate/train").glob("*.py"))
    assert "getattr(" not in src and "hasattr(" not in src
    from ablate.methods.catalog import load_presets
    names = {r["name"] for r in load_presets()}
    code = "\n".join(line.split("#")[0] for line in
                     (Path("ablate/train/trainer.py").read_text().splitlines()))
    for n in names:
        assert not re.search(rf"['\"]{re.escape(n)}['\"]", code), f"trainer names method {n!r}"


@pytest.mark.parametrize("n,world", [(8, 2), (9, 2), (5, 3), (2, 4)])
def test_worker_shards_cover_every_item_once(n, world):
    from ablate.train.distributed import Dist
    items = [i for r in range(world) for i in range(n)[Dist(r, world).shard(n)]]
    assert items == list(range(n))
