"""Byte-level BPE tokenizer trained on the pretraining corpus with the `tokenizers` library.

Byte-level means every string is encodable (no unknown characters), like GPT-2's tokenizer. The special
tokens every later stage relies on come first in the vocabulary (ids 0..k-1), so "regular" ids form one
range that MLM can draw random replacements from:

- `<|endoftext|>` EOS (also the separator between packed documents), `<|pad|>` (distinct from EOS, see
  alignment/core/models.py), `<|bos|>`, `<|unk|>`;
- `<|mask|>` for masked LM and `<extra_id_0>`, `<extra_id_1>`, ... sentinels for span corruption.

The result is a standard `PreTrainedTokenizerFast` with `DEFAULT_CHAT_TEMPLATE`, saved with `save_pretrained`.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from alignment.core.models import DEFAULT_CHAT_TEMPLATE, PAD_TOKEN

EOS_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|bos|>"
UNK_TOKEN = "<|unk|>"
MASK_TOKEN = "<|mask|>"


def sentinel_tokens(count: int) -> list[str]:
    """The span-corruption sentinels, T5's names: `<extra_id_0>` marks the first dropped span."""
    return [f"<extra_id_{i}>" for i in range(count)]


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, num_sentinels: int = 0, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; `vocab_size` counts the special tokens and the 256 byte symbols."""
    specials = [EOS_TOKEN, PAD_TOKEN, BOS_TOKEN, UNK_TOKEN, MASK_TOKEN, *sentinel_tokens(num_sentinels)]
    if vocab_size < 256 + len(specials):
        raise ValueError(
            f"vocab_size: expected at least {256 + len(specials)} (256 bytes + special tokens), got {vocab_size}"
        )
    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    # add_prefix_space=False: " great" and "great" stay different tokens, as in GPT-2; completions in the
    # prepared demos start with a space for exactly this reason.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        unk_token=UNK_TOKEN,
        mask_token=MASK_TOKEN,
        additional_special_tokens=sentinel_tokens(num_sentinels),
    )
    hf_tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return hf_tokenizer
