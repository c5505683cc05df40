"""The sweep's eval cache (ablate/train/eval_cache.py): a cached eval logs exactly what a computed one
logs, arms that share a seed share the step-0 eval, entries are checked, concurrent writers are safe."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ablate.config import compose_config
from ablate.train.api import run_config
from ablate.train.eval_cache import ENV, EvalCache, cache_from_env, digest, weights_digest
from ablate.train.trainer import Trainer
from tests.test_train import FAST

LOGS = ("metrics.jsonl", "eval_prompts.jsonl", "samples.jsonl")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _logs(run_dir: Path) -> dict[str, list[dict]]:
    out = {}
    for name in LOGS:
        rows = [json.loads(x) for x in (run_dir / name).read_text().splitlines()]
        out[name] = [{k: v for k, v in r.items() if not k.startswith("perf/") and k != "time"}
                     for r in rows]
    return out


def test_arm_sharing_a_seed_reads_the_step0_eval_and_logs_what_computing_it_logs(tmp_path, monkeypatch):
    computed: list[int] = []
    inner = Trainer._evaluate_prompts

    def counting(self, step):
        computed.append(step)
        return inner(self, step)

    monkeypatch.setattr(Trainer, "_evaluate_prompts", counting)
    monkeypatch.setenv(ENV, str(tmp_path / "eval_cache"))
    common = FAST + ["seed=5", "eval.num_samples_logged=3"]
    run_config(compose_config(common + ["method=grpo"]), run_dir=tmp_path / "a")
    assert computed == [0, 2]
    run_config(compose_config(common + ["method=drgrpo"]), run_dir=tmp_path / "b")
    # step 0 read back: same weights, prompts, seed and settings (step 2 too if no update happened)
    assert computed in ([0, 2], [0, 2, 2])
    n = len(computed)
    run_config(compose_config(common + ["method=drgrpo", "eval.cache=false"]), run_dir=tmp_path / "c")
    assert computed[n:] == [0, 2]
    b, c = _logs(tmp_path / "b"), _logs(tmp_path / "c")
    assert b == c
    assert b["samples.jsonl"] and b["eval_prompts.jsonl"][0]["step"] == 0
    assert "eval/pass@1" in b["metrics.jsonl"][0]
    run_config(compose_config(common + ["method=grpo", "seed=6"]), run_dir=tmp_path / "d")
    assert computed[-2:] == [0, 2]  # another seed: another stream, computed


def test_no_cache_outside_a_sweep_or_when_switched_off(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert cache_from_env(True) is None
    monkeypatch.setenv(ENV, str(tmp_path))
    assert cache_from_env(False) is None and cache_from_env(True).root == tmp_path


def test_weights_digest_follows_every_tensor():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    d0 = weights_digest(m)
    assert weights_digest(m) == d0
    with torch.no_grad():
        m[1].bias[2] += 1e-6
    assert weights_digest(m) != d0
    m.register_buffer("scale", torch.tensor(2.0, dtype=torch.bfloat16))  # 0-d, 2-byte dtype
    d1 = weights_digest(m)
    m.scale.fill_(3.0)
    assert weights_digest(m) != d1


RESULT = ({"eval/pass@1": 0.25, "eval/mean@4": float("nan")},
          [{"step": 0, "prompt": "1+2=", "response": "3<", "reward": 1.0, "answer": "3"}],
          {"prompt_id": ["a", "b"], "n": [4, 4], "c": [1, 0]})


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_round_trip_and_corrupt_or_foreign_entries_are_recomputed(tmp_path):
    cache, key = EvalCache(tmp_path), digest({"x": 1})
    assert cache.get(key) is None
    cache.put(key, RESULT)
    assert _same(cache.get(key), RESULT)
    path = next(tmp_path.rglob(f"{key}.json"))
    entry = json.loads(path.read_text())
    for bad in ('{"format": 1, "key"', json.dumps({**entry, "sha": "0" * 64}),
                json.dumps({**entry, "key": digest({"x": 2})})):
        path.write_text(bad)
        assert cache.get(key) is None
        calls = []
        got = cache.get_or_compute(key, lambda: calls.append(1) or RESULT)
        assert calls == [1] and _same(got, RESULT) and _same(cache.get(key), RESULT)
    assert not list(tmp_path.rglob("*.tmp"))


WRITER = """
import json, sys, time
from ablate.train.eval_cache import EvalCache
root, key, log, tag = sys.argv[1:5]
def compute():
    with open(log, "a") as f:
        f.write(tag + "\\n")
    time.sleep(1.0)
    return {"eval/pass@1": 0.5}, [{"response": "x" * 200000}], {"prompt_id": ["p"], "n": [1], "c": [1]}
print(json.dumps(EvalCache(root).get_or_compute(key, compute)))
"""

READER = """
import json, sys, time
from pathlib import Path
root, key = sys.argv[1:3]
path, seen, t = Path(root) / key[:2] / (key + ".json"), 0, time.time()
while time.time() - t < 5:
    try:
        text = path.read_text()
    except FileNotFoundError:
        time.sleep(0.001)
        continue
    assert len(json.loads(text)["result"]["samples"][0]["response"]) == 200000, "partial entry"
    seen += 1
print(seen)
"""


def test_concurrent_writers_compute_once_and_readers_never_see_a_partial_entry(tmp_path):
    root, key, log = tmp_path / "c", digest({"k": "concurrent"}), tmp_path / "computed.log"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(root), key], stdout=subprocess.PIPE, text=True)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), key, str(log), t],
                                stdout=subprocess.PIPE, text=True) for t in "ab"]
    outs = [w.communicate(timeout=60)[0] for w in writers]
    assert all(w.returncode == 0 for w in writers)
    assert len(log.read_text().split()) == 1  # the second writer waited and read the first's entry
    assert json.loads(outs[0]) == json.loads(outs[1])
    seen = reader.communicate(timeout=60)[0]
    assert reader.returncode == 0 and int(seen) > 0
