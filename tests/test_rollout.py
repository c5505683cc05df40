"""HF rollout engine: shapes, prompt-major order, EOS cut + masks, behaviour log-probs equal to a
recomputation with token_logprobs (ρ ≡ 1), seeded reproducibility; token_logprobs itself."""

from __future__ import annotations

import pytest
import torch

from ablate.errors import ConfigError
from ablate.policy import build_policy, encode_pairs, token_logprobs
from ablate.rollout import RolloutOutput, build_engine, resolve_budget
from ablate.rollout.common import cut_at_eos
from ablate.rollout.hf import HFEngine
from ablate.tasks import build_task

SMALL = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64, "warm_start": None}
PROMPTS = ["12+35=", "7+8=", "99+1=", "3+4="]  # different lengths → left padding


@pytest.fixture(scope="module")
def policy():
    task = build_task("addition")
    return build_policy(SMALL, task, seed=0, device="cpu")


@pytest.fixture(scope="module")
def engine():
    return build_engine("hf")


def _gen(engine, policy, n=8, seed=0, **kw):
    kw = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, **kw}
    g = None if seed is None else torch.Generator().manual_seed(seed)
    return engine.generate(policy.model, policy.tokenizer, PROMPTS, n, generator=g, **kw)


def test_shapes_and_prompt_major(engine, policy):
    n = 8
    out = _gen(engine, policy, n=n)
    assert isinstance(out, RolloutOutput)
    B, P = len(PROMPTS) * n, out.prompt_len
    T = out.response_mask.shape[1]
    assert out.input_ids.shape == out.attention_mask.shape == (B, P + T)
    assert out.old_logp.shape == out.response_mask.shape == (B, T) and T <= 8
    assert out.truncated.shape == (B,) and out.truncated.dtype == torch.bool
    assert len(out.texts) == B and out.response_mask.dtype == torch.float32
    enc = policy.tokenizer(PROMPTS, padding=True, padding_side="left", return_tensors="pt")
    assert P == enc["input_ids"].shape[1]
    for j in range(len(PROMPTS)):
        for s in range(n):
            assert torch.equal(out.input_ids[j * n + s, :P], enc["input_ids"][j])
            assert torch.equal(out.attention_mask[j * n + s, :P], enc["attention_mask"][j])


def test_eos_cut_and_masks(engine, policy):
    out = _gen(engine, policy, n=16, seed=1)
    tok = policy.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    P = out.prompt_len
    resp = out.input_ids[:, P:]
    assert out.truncated.any() and (~out.truncated).any()  # both kinds occur with this seed
    for i in range(resp.shape[0]):
        row, m = resp[i].tolist(), out.response_mask[i]
        L = int(m.sum())
        assert torch.all(m[:L] == 1) and torch.all(m[L:] == 0)  # contiguous prefix
        assert torch.equal(out.attention_mask[i, P:].float(), m)
        if out.truncated[i]:
            assert L == 8 and eos not in row
        else:
            assert row[L - 1] == eos and eos not in row[:L - 1]  # EOS is the last valid token
            assert all(t == pad for t in row[L:])
            assert out.texts[i] == tok.decode(row[:L - 1], skip_special_tokens=True)
        assert torch.all(out.old_logp[i, L:] == 0)
    # hand-made rows: [a, EOS, b] → mask 1 1 0; no EOS → all valid, truncated
    toks, m, tr = cut_at_eos(torch.tensor([[5, 2, 6], [5, 6, 7], [2, 2, 2]]), 2, 0)
    assert toks.tolist() == [[5, 2, 0], [5, 6, 7], [2, 0, 0]]
    assert m.tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0]] and tr.tolist() == [False, True, False]


def test_old_logp_equals_recomputation(engine, policy):
    for temp in (1.0, 0.7):
        out = _gen(engine, policy, n=4, seed=2, temperature=temp)
        lp, _ = token_logprobs(policy.model, out.input_ids, out.attention_mask, out.prompt_len, temp)
        m = out.response_mask
        assert torch.allclose(out.old_logp, lp * m, atol=1e-5)
        assert torch.all(out.old_logp <= 0) and torch.isfinite(out.old_logp).all()
        # ratio is exactly one before any update
        ratio = torch.exp((lp - out.old_logp) * m)
        assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5)


def test_seeded_sampling_is_reproducible(engine, policy):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = _gen(engine, policy, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global RNG is untouched
    b = _gen(engine, policy, seed=5)
    c = _gen(engine, policy, seed=6)
    assert torch.equal(a.input_ids, b.input_ids) and a.texts == b.texts
    assert torch.equal(a.old_logp, b.old_logp)
    assert a.texts != c.texts
    # one generator advanced twice gives two different draws, reproducibly
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    kw = dict(temperature=1.0, top_p=1.0, max_new_tokens=8)
    x1 = engine.generate(policy.model, policy.tokenizer, PROMPTS, 4, generator=g1, **kw)
    x2 = engine.generate(policy.model, policy.tokenizer, PROMPTS, 4, generator=g1, **kw)
    y1 = engine.generate(policy.model, policy.tokenizer, PROMPTS, 4, generator=g2, **kw)
    assert x1.texts == y1.texts and x1.texts != x2.texts
    # chunked generation (batch_size) is reproducible too and keeps the layout
    ch = HFEngine(batch_size=5)
    d1 = ch.generate(policy.model, policy.tokenizer, PROMPTS, 4, generator=torch.Generator().manual_seed(1), **kw)
    d2 = ch.generate(policy.model, policy.tokenizer, PROMPTS, 4, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(d1.input_ids, d2.input_ids) and d1.input_ids.shape[0] == 16


def test_greedy_and_top_p(engine, policy):
    g = _gen(engine, policy, n=3, seed=0, temperature=0.0)
    for j in range(len(PROMPTS)):
        assert len(set(g.texts[j * 3:(j + 1) * 3])) == 1
    t = _gen(engine, policy, n=4, seed=0, top_p=0.5)
    assert torch.isfinite(t.old_logp).all()


def test_token_logprobs_padding_entropy_and_grad(policy):
    model, tok = policy.model, policy.tokenizer
    b = encode_pairs(tok, ["12+35=", "1+2="], ["47", "3"])
    lp, ent = token_logprobs(model, b["input_ids"], b["attention_mask"], b["prompt_len"], 1.0,
                             with_entropy=True)
    assert lp.shape == ent.shape == b["response_mask"].shape and not ent.requires_grad
    single = encode_pairs(tok, ["1+2="], ["3"])
    lp1, _ = token_logprobs(model, single["input_ids"], single["attention_mask"], single["prompt_len"], 1.0)
    assert torch.allclose(lp[1, :2], lp1[0], atol=1e-5)  # left padding does not change anything
    # against a manual computation on the unpadded sequence
    ids = single["input_ids"]
    logits = model(input_ids=ids).logits[0, single["prompt_len"] - 1:-1] / 0.5
    ref = torch.log_softmax(logits, -1)
    lp_t, ent_t = token_logprobs(model, ids, single["attention_mask"], single["prompt_len"], 0.5,
                                 with_entropy=True, entropy_grad=True)
    assert torch.allclose(lp_t[0], ref.gather(-1, ids[0, single["prompt_len"]:, None])[:, 0], atol=1e-5)
    assert torch.allclose(ent_t[0], -(ref.exp() * ref).sum(-1), atol=1e-5)
    assert ent_t.requires_grad and lp_t.requires_grad
    with pytest.raises(ValueError):
        token_logprobs(model, ids, single["attention_mask"], single["prompt_len"], 0.0)


def test_engine_config():
    assert isinstance(build_engine({"_target_": "ablate.rollout.hf.HFEngine", "max_new_tokens": 4}), HFEngine)
    with pytest.raises(ConfigError, match="unknown value 'max_tokens'"):
        build_engine({"_target_": "ablate.rollout.hf.HFEngine", "max_tokens": 4})
    with pytest.raises(ConfigError, match="top_p"):
        build_engine({"_target_": "ablate.rollout.hf.HFEngine", "top_p": 0})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="rollout=vllm needs a GPU and the `gpu` extra"):
            build_engine("vllm")
    task = build_task("addition")
    # the budget rule changed (issue 18): rollout.max_new_tokens, when set, wins even below the task's
    assert resolve_budget(8, task).tokens == 8 and resolve_budget(2, task).tokens == 2
    assert resolve_budget(None, task).tokens == task.max_new_tokens


def test_generation_stops_as_soon_as_every_row_has_ended(engine):
    """No decode step after the last row's EOS: the response width is the longest row, not the budget."""
    pol = build_policy(SMALL, build_task("addition"), seed=0, device="cpu")
    head = pol.model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[pol.tokenizer.eos_token_id] = 1e4  # every row ends at its first token
    pol.model.lm_head = biased
    out = engine.generate(pol.model, pol.tokenizer, PROMPTS, 4, temperature=1.0, max_new_tokens=50,
                          generator=torch.Generator().manual_seed(0))
    assert out.response_mask.shape[1] == 1 and not bool(out.truncated.any())


def test_vllm_engine_lays_out_its_samples_like_the_hf_engine(policy, monkeypatch):
    """The vLLM engine's own logic on CPU, with vLLM's LLM and SamplingParams faked (unit test): prompts
    left-padded, samples prompt-major, a sample vLLM stopped on EOS without returning the id gets it
    back, and the budget cuts."""
    import sys
    import types

    from ablate.rollout.vllm import VLLMEngine

    model, tok = policy.model, policy.tokenizer
    eos = tok.eos_token_id
    fake = types.ModuleType("vllm")
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    out_rows = [[[5, 6, eos], [7]], [[8, 9, 10, 11, 12], []]]  # per prompt, per sample
    finish = [["stop", "stop"], ["length", "stop"]]

    class LLM:
        def generate(self, prompts, params, use_tqdm=False):
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=ids, finish_reason=f, logprobs=None)
                                                   for ids, f in zip(rows, fins)])
                    for rows, fins in zip(out_rows, finish)]

    eng = VLLMEngine.__new__(VLLMEngine)
    eng.temperature, eng.top_p, eng.top_k, eng.max_new_tokens = 1.0, 1.0, 0, 4
    eng.logprob_batch_size, eng.reports_logprobs, eng.sleep_mode, eng._llm = None, False, False, LLM()
    prompts = ["1+2=", "10+20="]
    out = eng.generate(model, tok, prompts, 2, compute_logprobs=False)
    p_ids = tok(prompts, add_special_tokens=True)["input_ids"]
    P = max(map(len, p_ids))
    assert out.prompt_len == P and out.input_ids.shape[0] == 4
    for i in range(4):
        p = p_ids[i // 2]
        assert out.input_ids[i, P - len(p):P].tolist() == p and out.attention_mask[i, :P].sum() == len(p)
    want = [[5, 6, eos], [7, eos], [8, 9, 10, 11], [eos]]  # EOS restored where vLLM dropped it; cut at 4
    for i, w in enumerate(want):
        assert out.input_ids[i, P:P + len(w)].tolist() == w and out.response_mask[i].sum() == len(w)
