"""Aggregation YAMLs (conf/aggregation/) reproduce the numbers of peer_semantics §8.3."""

import pytest
import torch

from ablate import registry
from ablate.errors import ConfigError
from ablate.upge.aggregation import Aggregation, Normalizer

D = torch.float64
LOSS = torch.tensor([[1.0, 2.0, 7.0, 7.0], [3.0, 4.0, 5.0, 6.0]], dtype=D)  # 7s are padding
MASK = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=D)


def agg(name, **override):
    cfg = dict(registry.load_variant("aggregation", name), **override)
    return registry.build("aggregation", cfg)


@pytest.mark.parametrize("name,expected,peer", [
    ("token_mean", 3.5, "verl token-mean = TRL bnpo/dapo = OpenRLHF token"),
    ("seq_mean_token_mean", 3.0, "verl seq-mean-token-mean = TRL grpo/sapo"),
    ("seq_mean_token_sum", 10.5, "verl seq-mean-token-sum"),
    ("seq_mean_token_sum_norm", 2.625, "verl >= Feb 2026 Dr.GRPO, C = horizon 4 = TRL dr_grpo"),
    ("drgrpo_legacy", 5.25, "verl <= Jan 2026 / HPT loss_remove_token_mean"),
    ("token_sum", 21.0, "verl token-sum 2026"),
])
def test_aggregation_modes_match_peer_semantics_8_3(name, expected, peer):
    assert agg(name)(LOSS, MASK).item() == pytest.approx(expected, abs=1e-12), peer


def test_dr_grpo_constant_is_max_new_tokens_not_padded_horizon():
    padded_loss = torch.cat([LOSS, torch.zeros(2, 4, dtype=D)], dim=1)  # horizon 8
    padded_mask = torch.cat([MASK, torch.zeros(2, 4, dtype=D)], dim=1)
    assert agg("seq_mean_token_sum_norm")(padded_loss, padded_mask).item() == pytest.approx(10.5 / 8)
    fixed = agg("seq_mean_token_sum_norm", constant=4)
    assert fixed(padded_loss, padded_mask).item() == pytest.approx(2.625)  # TRL dr_grpo, max_completion_length 4
    assert agg("drgrpo_legacy", constant=4)(padded_loss, padded_mask).item() == pytest.approx(5.25)


def test_zero_length_rows_do_not_count_as_sequences_like_verl_global_batch_size():
    loss = torch.cat([LOSS, torch.full((1, 4), 99.0, dtype=D)])
    mask = torch.cat([MASK, torch.zeros(1, 4, dtype=D)])
    assert agg("seq_mean_token_mean")(loss, mask).item() == pytest.approx(3.0)
    assert agg("token_mean")(loss, mask).item() == pytest.approx(3.5)


def test_minibatch_normalizer_makes_microbatch_sum_equal_whole_batch():
    for name in registry.variant_names("aggregation"):
        a = agg(name)
        if a.scope == "microbatch":  # TRL's per-microbatch convention: the mean of the chunks' own losses
            norm = Normalizer.of(MASK, num_chunks=2)
            parts = a(LOSS[:1], MASK[:1], norm) + a(LOSS[1:], MASK[1:], norm)
            want = (a(LOSS[:1], MASK[:1]) + a(LOSS[1:], MASK[1:])) / 2
            assert parts.item() == pytest.approx(want.item()), name
            continue
        norm = Normalizer.of(MASK)
        parts = a(LOSS[:1], MASK[:1], norm) + a(LOSS[1:], MASK[1:], norm)
        assert parts.item() == pytest.approx(a(LOSS, MASK).item()), name


def test_expected_aggregation_variants_exist_and_build():
    assert {"token_mean", "token_sum", "seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm",
            "drgrpo_legacy"} <= set(registry.variant_names("aggregation"))
    for name in registry.variant_names("aggregation"):
        assert registry.build("aggregation", registry.load_variant("aggregation", name)).mode


def test_unknown_aggregation_parameter_and_mode_are_one_line_config_errors():
    with pytest.raises(ConfigError) as e:
        agg("token_mean", scale=2.0)
    assert "scale" in str(e.value) and "constant" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="seq-mean-token-mean") as e2:
        agg("token_mean", mode="mean")
    assert "\n" not in str(e2.value)


@pytest.mark.parametrize("mode", ["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum",
                                  "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("scope", ["minibatch", "microbatch"])
def test_given_row_lengths_change_nothing(mode, scope):
    g = torch.Generator().manual_seed(5)
    mask = (torch.rand(5, 7, generator=g) < 0.6).double()
    mask[2] = 0.0
    loss = torch.randn(5, 7, generator=g, dtype=torch.float64)
    agg, norm = Aggregation(mode, scope=scope), Normalizer.of(mask, num_chunks=2)
    lengths = mask.sum(-1).clamp_min(1.0)
    assert float(agg(loss, mask, norm, lengths=lengths)) == pytest.approx(float(agg(loss, mask, norm)), rel=1e-14)
