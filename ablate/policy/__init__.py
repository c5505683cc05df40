"""Policy building: tiny transformers LM + char tokenizer from config (or a local HF checkpoint),
the cached SFT warm start, and the shared token log-prob / entropy forward."""

from ablate.policy.forward import (encode_pairs, logprobs_of_logits, pack, position_ids_from_mask,
                                   response_logits, response_outputs, token_logprobs)
from ablate.policy.model import Policy, build_policy, count_params
from ablate.policy.tokenizer import build_tokenizer

__all__ = ["Policy", "build_policy", "build_tokenizer", "count_params", "encode_pairs",
           "logprobs_of_logits", "pack", "position_ids_from_mask", "response_logits", "response_outputs",
           "token_logprobs"]
