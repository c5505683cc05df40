"""Counterfactual estimator probe: per-batch gradients equal a direct autograd computation on the
same batches, the statistics equal direct numpy computations, bad input is one line + exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ablate.cli import main
from ablate.probe.estimators import compose_arms, probe_gradients, split_arms, summarize

FAST = ["method=grpo", "train.prompts_per_step=3", "train.group_size=3", "threads=1",
        "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        "model.warm_start.steps=10", "model.warm_start.target_pass1=null", "mask=none"]
# Â ≡ 1 gives a non-zero gradient whatever the (tiny model's) rewards: ∇ mean log-likelihood
ARMS = {"seq": ["advantage=constant"], "tok": ["advantage=constant", "aggregation=token_mean"]}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _direct_grad(tr, rollouts, token_mean: bool) -> torch.Tensor:
    """−(1/B) Σ_i mean_t log π (seq-mean-token-mean) or −Σ log π / Σ tokens, by plain autograd."""
    from ablate.policy import token_logprobs

    batch = tr.assemble(rollouts)
    tr.model.zero_grad(set_to_none=True)
    tr.model.train()
    lp, _ = token_logprobs(tr.model, batch.input_ids, batch.attention_mask, batch.prompt_len,
                           tr.temperature)
    m = batch.response_mask
    loss = -(lp * m).sum() / m.sum() if token_mean else \
        -((lp * m).sum(1) / m.sum(1).clamp_min(1)).mean()
    loss.backward()
    params = [p for p in tr.model.parameters() if p.requires_grad]
    return torch.cat([p.grad.reshape(-1).double() for p in params])


def test_probe_gradients_and_variance_equal_a_direct_computation():
    from ablate.train.trainer import Trainer

    cfgs = compose_arms(FAST, ARMS)
    grads, rows, kept = probe_gradients(cfgs, batches=4)
    assert grads.shape[:2] == (2, 4) and rows == [9, 9, 9, 9]
    direct = Trainer(cfgs["seq"])
    for a, token_mean in enumerate((False, True)):
        for b, r in enumerate(kept):
            torch.testing.assert_close(grads[a, b], _direct_grad(direct, r, token_mean),
                                       rtol=1e-4, atol=1e-7)
    g = grads.numpy()
    stats = summarize(["seq", "tok"], grads, "seq")
    for a, st in enumerate(stats):
        cov = np.cov(g[a], rowvar=False)  # the direct covariance of the per-batch gradients
        assert st.trace_cov == pytest.approx(float(np.trace(cov)), rel=1e-9)
        assert np.mean(st.sq_dev) == pytest.approx(st.trace_cov, rel=1e-9)
        mean = g[a].mean(0)
        assert st.rel_var == pytest.approx(st.trace_cov / float(mean @ mean), rel=1e-9)
    assert stats[0].bias_sq == 0.0 and stats[0].cosine == pytest.approx(1.0)
    D = g[1] - g[0]
    expect = float(D.mean(0) @ D.mean(0)) - float(np.trace(np.cov(D, rowvar=False))) / 4
    assert stats[1].bias_sq == pytest.approx(expect, rel=1e-9)
    assert stats[1].trace_cov > 0 and stats[1].trace_cov != pytest.approx(stats[0].trace_cov)


def test_summarize_is_unbiased_for_a_known_bias_and_variance():
    """g_b = μ_a + N(0, σ_a² I): trace_cov → σ_a²·P and bias_sq → ‖μ_1 − μ_0‖² over many draws."""
    gen = torch.Generator().manual_seed(0)
    P, B, reps = 5, 6, 3000
    mu = torch.tensor([[1.0, 0, 0, 0, 0], [1.0, 0.3, 0, 0, 0]], dtype=torch.float64)
    sd = torch.tensor([0.5, 1.0], dtype=torch.float64)
    tr, bias = np.zeros((reps, 2)), np.zeros(reps)
    for i in range(reps):
        g = mu[:, None, :] + sd[:, None, None] * torch.randn(2, B, P, generator=gen, dtype=torch.float64)
        s = summarize(["a", "b"], g, "a")
        tr[i] = [s[0].trace_cov, s[1].trace_cov]
        bias[i] = s[1].bias_sq
    assert tr.mean(0) == pytest.approx([0.25 * P, 1.0 * P], rel=0.03)
    assert bias.mean() == pytest.approx(0.09, abs=4 * bias.std() / np.sqrt(reps))


def test_split_arms_keeps_bracketed_commas_and_rejects_junk():
    assert split_arms("advantage=group_zscore, advantage=opo aggregation=token_mean,train.betas=[0.9,0.99]") == {
        "advantage=group_zscore": ["advantage=group_zscore"],
        "advantage=opo aggregation=token_mean": ["advantage=opo", "aggregation=token_mean"],
        "train.betas=[0.9,0.99]": ["train.betas=[0.9,0.99]"]}


@pytest.mark.parametrize("argv,needle", [
    (["--arms", "advantage=nope"], "advantage"),
    (["--arms", "advantage=opo,,advantage=rloo"], "empty arm"),
    (["--arms", "advantage=opo,advantage=opo"], "given twice"),
    (["--arms", "advantage=opo,opo"], "not an override"),
    (["--arms", "advantage=opo", "--batches", "1"], "--batches"),
    (["--arms", "advantage=opo", "--reference", "x"], "--reference"),
    (["--arms", "advantage=opo,train.group_size=8"], "changes train.group_size"),
])
def test_cli_bad_input_is_one_line_exit_2_before_anything_is_built(tmp_path, capsys, argv, needle):
    out = tmp_path / "p" / "probe"
    assert main(["probe", *FAST, *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "\n" not in err
    assert not out.parent.exists()


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "p" / "probe"
    assert main(["probe", *FAST, "--arms", "advantage=constant,advantage=constant aggregation=token_mean",
                 "--batches", "2", "-q", "-o", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert [a["label"] for a in res["arms"]] == ["advantage=constant", "advantage=constant aggregation=token_mean"]
    assert res["reference"] == "advantage=constant" and len(res["arms"][1]["sq_dev"]) == 2
    assert "| `advantage=constant aggregation=token_mean` |" in out.with_suffix(".md").read_text()
    assert "tr Cov" in capsys.readouterr().out
