"""Character-level tokenizer for the tiny embedded policy, built with `tokenizers` (no hub).

One token per character of the task's alphabet plus ``<pad> <bos> <eos> <unk>``; encoding a text
with special tokens prepends ``<bos>`` (prompts); responses are encoded without special tokens and
end with ``<eos>`` (added by the caller).
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


def build_tokenizer(alphabet: str, model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """A char-level fast tokenizer over the distinct characters of ``alphabet`` (sorted)."""
    chars = sorted(set(alphabet))
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for c in chars:
        if c not in vocab:
            vocab[c] = len(vocab)
    # BPE without merges = one token per character; no pre-tokenizer, so spaces are kept as-is.
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", padding_side="left", model_max_length=model_max_length,
        clean_up_tokenization_spaces=False)
