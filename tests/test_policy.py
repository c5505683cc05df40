"""Policy: char tokenizer round trip, tiny model size, config errors, a short SFT warm start that
beats chance, its on-disk cache (hit, equal weights, atomic writes, loadable as model.path)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from ablate.errors import ConfigError
from ablate.policy import build_policy, build_tokenizer, count_params, encode_pairs, pack
from ablate.policy.forward import pad_rows
from ablate.policy.model import _save_atomic, expected_pass1, warm_start_key
from ablate.rollout import build_engine
from ablate.tasks import build_task
from ablate.tasks.jsonl_math import PRINTABLE

# a short warm start for tests: small model, 100 steps → expected pass@1 ≈ 0.013-0.016 on addition
# (2-3x chance); the default config runs on to pass@1 ≈ 0.3
SHORT = {"hidden_size": 96, "num_layers": 2, "num_heads": 4, "intermediate_size": 192,
         "warm_start": {"steps": 100, "batch_size": 64, "lr": 5.0e-3, "warmup_steps": 5,
                        "min_lr_ratio": 0.1, "target_pass1": None}}


def tiny_cfg() -> dict:
    """The default model config as Hydra composes it (conf/model/tiny.yaml over the schema)."""
    from ablate.config import compose_config
    from ablate.registry import plain
    return plain(compose_config([]).model)


@pytest.fixture(scope="module")
def addition():
    return build_task("addition")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ablate-cache")


@pytest.fixture(scope="module")
def warm(addition, cache):
    mp = pytest.MonkeyPatch()
    mp.setenv("ABLATE_CACHE", str(cache))
    t0 = time.perf_counter()
    pol = build_policy(SHORT, addition, seed=0, device="cpu")
    first = time.perf_counter() - t0
    yield pol, first
    mp.undo()


def test_tokenizer_round_trip(addition):
    tok = build_tokenizer(addition.alphabet())
    assert len(tok) == 4 + len(set(addition.alphabet()))
    ids = tok("12+35=")["input_ids"]
    assert ids[0] == tok.bos_token_id and len(ids) == 7
    assert tok.decode(ids, skip_special_tokens=True) == "12+35="
    assert tok("47", add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids("4"),
                                                              tok.convert_tokens_to_ids("7")]
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}) == 4
    assert tok.padding_side == "left"
    big = build_tokenizer(PRINTABLE)
    text = "Q: What is 3 plus 4?\nA: 3+4=7. #### 7\t{x}_[y] \\boxed{7}"
    assert big.decode(big(text)["input_ids"], skip_special_tokens=True) == text
    assert big("é", add_special_tokens=False)["input_ids"] == [big.unk_token_id]
    batch = tok(["1+2=", "12+35="], padding=True)
    assert batch["input_ids"][0][:2] == [tok.pad_token_id] * 2 and batch["attention_mask"][0][:2] == [0, 0]


def test_default_tiny_model_size_and_archs(addition):
    cfg = tiny_cfg()
    assert cfg["warm_start"]["steps"] > 0 and cfg["path"] is None and cfg["dtype"] == "float32"
    cfg["warm_start"] = None
    pol = build_policy(cfg, addition, seed=0)
    n = count_params(pol.model)
    assert 200_000 <= n <= 1_000_000, n
    assert pol.model.config.vocab_size == len(pol.tokenizer)
    assert pol.model.dtype == torch.float32 and pol.info["num_params"] == n
    small = {**SHORT, "warm_start": None}
    q = build_policy({**small, "arch": "qwen2"}, addition, seed=0)
    assert type(q.model).__name__.startswith("Qwen2")
    # same seed ⇒ same init; another seed ⇒ another init
    a, again, other = (build_policy(small, addition, seed=s) for s in (0, 0, 1))
    sd, sd2, sd3 = a.model.state_dict(), again.model.state_dict(), other.model.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    assert not all(torch.equal(sd[k], sd3[k]) for k in sd)


def test_model_config_errors(addition, tmp_path):
    with pytest.raises(ConfigError, match="model: unknown key 'hidden'; allowed: .*hidden_size"):
        build_policy({"hidden": 64}, addition, 0)
    with pytest.raises(ConfigError, match="model.arch: got 'gpt9'; allowed: one of llama, qwen2"):
        build_policy({"arch": "gpt9"}, addition, 0)
    with pytest.raises(ConfigError, match="model.warm_start: unknown key 'step'"):
        build_policy({"warm_start": {"step": 3}}, addition, 0)
    with pytest.raises(ConfigError, match="model.path: not a local directory"):
        build_policy({"path": str(tmp_path / "missing")}, addition, 0)
    with pytest.raises(ConfigError, match="model.path: cannot load"):
        build_policy({"path": str(tmp_path)}, addition, 0)
    with pytest.raises(ConfigError, match="num_heads"):
        build_policy({"hidden_size": 30, "num_heads": 4}, addition, 0)


def test_warm_start_beats_chance(warm, addition):
    pol, first = warm
    ws = pol.info["warm_start"]
    assert ws["cache_hit"] is False and ws["steps"] == 100 and ws["loss"] < ws["first_loss"]
    probe = encode_pairs(pol.tokenizer, *zip(*[(p.prompt, p.demo) for p in addition.eval_problems(64)]))
    # exact expected pass@1 at T=1 on held-out prompts vs chance: a uniformly random answer among
    # the 179 possible sums (the untrained model is far below even that)
    init = build_policy({**SHORT, "warm_start": None}, addition, seed=0)
    assert expected_pass1(init.model, probe) < 1e-3
    assert expected_pass1(pol.model, probe) > 1 / 179
    out = build_engine("hf").generate(pol.model, pol.tokenizer, [p.prompt for p in addition.eval_problems(32)],
                                      8, temperature=1.0, top_p=1.0, max_new_tokens=4,
                                      generator=torch.Generator().manual_seed(0))
    probs = addition.eval_problems(32)
    fmt = [addition.verify(probs[i // 8], t).components["format"] for i, t in enumerate(out.texts)]
    assert sum(fmt) / len(fmt) > 0.9  # it answers with a number (sampled pass@1 is small and noisy)


def test_warm_start_cache_hit(warm, addition, cache, monkeypatch):
    pol, first = warm
    monkeypatch.setenv("ABLATE_CACHE", str(cache))
    t0 = time.perf_counter()
    again = build_policy(SHORT, addition, seed=0, device="cpu")
    second = time.perf_counter() - t0
    assert again.info["warm_start"]["cache_hit"] is True and second < first / 3
    sd, sd2 = pol.model.state_dict(), again.model.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    d = Path(again.info["warm_start"]["path"])
    assert d.parent == cache / "warmstart"
    assert {"config.json", "model.safetensors", "tokenizer.json", "ablate_warmstart.json"} <= {p.name for p in d.iterdir()}
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    assert json.loads((d / "ablate_warmstart.json").read_text())["seed"] == 0
    # the cache entry is a regular HF checkpoint: model.path loads it (no warm start on checkpoints)
    ck = build_policy({"path": str(d), "warm_start": SHORT["warm_start"]}, addition, seed=0)
    assert ck.info["warm_start"] is None
    assert all(torch.equal(sd[k], ck.model.state_dict()[k]) for k in sd)
    assert ck.tokenizer.get_vocab() == pol.tokenizer.get_vocab() and ck.tokenizer.padding_side == "left"
    # a different seed / warm-start config is a different entry
    cfg = {k: v for k, v in SHORT.items()}
    assert warm_start_key(_resolved(SHORT), addition, 0, torch.device("cpu")) != \
        warm_start_key(_resolved(SHORT), addition, 1, torch.device("cpu"))
    cfg["warm_start"] = {**SHORT["warm_start"], "lr": 1e-3}
    assert warm_start_key(_resolved(cfg), addition, 0, torch.device("cpu")) != \
        warm_start_key(_resolved(SHORT), addition, 0, torch.device("cpu"))
    # the cache flag itself does not change the key
    cfg["warm_start"] = {**SHORT["warm_start"], "cache": False}
    assert warm_start_key(_resolved(cfg), addition, 0, torch.device("cpu")) == \
        warm_start_key(_resolved(SHORT), addition, 0, torch.device("cpu"))


def _resolved(cfg):
    from ablate.policy.model import _resolve_cfg
    return _resolve_cfg(cfg)


def test_warm_start_deterministic_without_cache(warm, addition, monkeypatch, tmp_path):
    pol, _ = warm
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))
    cfg = {**SHORT, "warm_start": {**SHORT["warm_start"], "cache": False}}
    torch.manual_seed(999)  # the caller's global RNG must not matter
    fresh = build_policy(cfg, addition, seed=0)
    assert fresh.info["warm_start"]["cache_hit"] is False and not (tmp_path / "warmstart").exists()
    sd, sd2 = pol.model.state_dict(), fresh.model.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)


def test_atomic_save_tolerates_a_concurrent_winner(warm, tmp_path):
    pol, _ = warm
    final = tmp_path / "warmstart" / "abc"
    _save_atomic(pol.model, pol.tokenizer, final, {"seed": 0})
    before = (final / "model.safetensors").read_bytes()
    _save_atomic(pol.model, pol.tokenizer, final, {"seed": 0})  # second writer loses the rename
    assert (final / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in final.parent.iterdir()) == ["abc"]


def test_warm_start_stops_at_target(addition, tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))
    ws = {**SHORT["warm_start"], "steps": 150, "target_pass1": 0.004, "check_every": 10,
          "probe_size": 64, "cache": False}
    pol = build_policy({**SHORT, "warm_start": ws}, addition, seed=0)
    info = pol.info["warm_start"]
    assert info["reached_target"] is True and info["probe_pass1"] >= 0.004
    assert info["steps"] % 10 == 0 and info["steps"] < 150
    with pytest.raises(ConfigError, match="target_pass1"):
        build_policy({**SHORT, "warm_start": {**ws, "target_pass1": 2}}, addition, seed=0)


def test_cache_entry_is_deleted_only_when_verifiably_corrupt(warm, addition, tmp_path,
                                                              monkeypatch, caplog):
    """A transient load error keeps the shared entry; a truncated weights file removes it."""
    import ablate.policy.model as pm

    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))
    first = build_policy(SHORT, addition, seed=0)
    d = Path(first.info["warm_start"]["path"])
    assert pm.cache_corruption(d) is None and "files" in json.loads((d / "ablate_warmstart.json").read_text())
    real = pm._load_local
    monkeypatch.setattr(pm, "_load_local", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("can't start new thread")))
    again = build_policy(SHORT, addition, seed=0)
    assert again.info["warm_start"]["cache_hit"] is False
    assert d.is_dir() and pm.cache_corruption(d) is None  # intact: kept for the other trials
    monkeypatch.setattr(pm, "_load_local", real)
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    assert "checksum" in pm.cache_corruption(d) or "missing" in pm.cache_corruption(d)
    rebuilt = build_policy(SHORT, addition, seed=0)
    assert rebuilt.info["warm_start"]["cache_hit"] is False
    assert pm.cache_corruption(d) is None  # rebuilt and rewritten
    assert build_policy(SHORT, addition, seed=0).info["warm_start"]["cache_hit"] is True


def test_warm_start_reports_its_progress_then_a_cache_hit(addition, tmp_path, monkeypatch):
    """What the sweep console shows while a trial warm-starts: cache miss with step/target, then
    (same key again) a cache hit."""
    from ablate.tracking import progress

    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))
    cfg = {**SHORT, "warm_start": {**SHORT["warm_start"], "steps": 4, "target_pass1": None}}
    seen: list[dict] = []
    with progress.sink(seen.append, interval_s=0.0):
        build_policy(cfg, addition, seed=0)
        miss = list(seen)
        seen.clear()
        build_policy(cfg, addition, seed=0)
    assert [r["step"] for r in miss if r["phase"] == "warm_start"] == [0, 1, 2, 3, 4, 4]
    assert {r["cache"] for r in miss} == {"miss"} and miss[-1]["done"] and miss[-1]["target"] == 4
    assert [progress.describe(r) for r in seen] == ["warm start (cache hit)"]
    assert progress.describe(miss[2]) == "warm start (cache miss) 2/4"


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(st.integers(0, 50), max_size=9), max_size=12), left=st.booleans(),
       min_width=st.integers(0, 3))
def test_pad_rows_places_every_row_like_a_per_row_copy(rows, left, min_width):
    """pad_rows (one scatter) = the plain per-row copy: each row at the left or right end of a
    pad-filled [B, max(longest, min_width)] tensor, its mask 1 exactly where its tokens are."""
    ids, mask = pad_rows(rows, 99, left=left, min_width=min_width)
    width = max([len(r) for r in rows] + [min_width])
    want_ids = torch.full((len(rows), width), 99, dtype=torch.long)
    want_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        want_ids[i, sl] = torch.tensor(r, dtype=torch.long)
        want_mask[i, sl] = 1
    assert ids.dtype == mask.dtype == torch.long
    assert torch.equal(ids, want_ids) and torch.equal(mask, want_mask)


def test_pack_keeps_one_response_column_when_every_response_is_empty():
    out = pack([[1, 2], [3]], [[], []], 0)
    assert out["prompt_len"] == 2 and out["input_ids"].tolist() == [[1, 2, 0], [0, 3, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 0], [0, 1, 0]]
    assert out["response_mask"].dtype == torch.float32 and out["response_mask"].tolist() == [[0.0], [0.0]]
