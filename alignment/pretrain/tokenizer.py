"""Byte-level BPE tokenizer trained on the pretraining corpus with the `tokenizers` library.

Byte-level means every string is encodable (no unknown characters), like GPT-2's tokenizer. The special
tokens every later stage relies on come first in the vocabulary (ids 0..k-1), so "regular" ids form one
range that MLM can draw random replacements from:

- `<|endoftext|>` EOS (also the separator between packed documents), `<|pad|>` (distinct from EOS, see
  alignment/core/models.py), `<|bos|>`, `<|unk|>`;
- `<|mask|>` for masked LM and `<extra_id_0>`, `<extra_id_1>`, ... sentinels for span corruption;
- for BERT-style encoders (`bert_specials`), `<|cls|>` and `<|sep|>`, and a post-processor that encodes a
  text as `<|cls|> A <|sep|>` and a pair as `<|cls|> A <|sep|> B <|sep|>` with token type 0 for the first
  segment and 1 for the second, as BERT's tokenizer does: a classifier pools the `<|cls|>` state. Pretraining
  packs documents with `add_special_tokens=False`, so the blocks it trains on are unchanged.

The result is a standard `PreTrainedTokenizerFast` with `DEFAULT_CHAT_TEMPLATE`, saved with `save_pretrained`.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from alignment.core.models import DEFAULT_CHAT_TEMPLATE, PAD_TOKEN

EOS_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|bos|>"
UNK_TOKEN = "<|unk|>"
MASK_TOKEN = "<|mask|>"
CLS_TOKEN = "<|cls|>"
SEP_TOKEN = "<|sep|>"


def sentinel_tokens(count: int) -> list[str]:
    """The span-corruption sentinels, T5's names: `<extra_id_0>` marks the first dropped span."""
    return [f"<extra_id_{i}>" for i in range(count)]


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    num_sentinels: int = 0,
    min_frequency: int = 2,
    bert_specials: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; `vocab_size` counts the special tokens and the 256 byte symbols.

    `bert_specials` adds `<|cls|>`/`<|sep|>` and the BERT post-processor (see the module docstring).
    """
    bert = [CLS_TOKEN, SEP_TOKEN] if bert_specials else []
    specials = [
        EOS_TOKEN,
        PAD_TOKEN,
        BOS_TOKEN,
        UNK_TOKEN,
        MASK_TOKEN,
        *bert,
        *sentinel_tokens(num_sentinels),
    ]
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
    if bert_specials:
        cls_sep = [
            (CLS_TOKEN, tokenizer.token_to_id(CLS_TOKEN)),
            (SEP_TOKEN, tokenizer.token_to_id(SEP_TOKEN)),
        ]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{CLS_TOKEN} $A {SEP_TOKEN}",
            pair=f"{CLS_TOKEN} $A:0 {SEP_TOKEN}:0 $B:1 {SEP_TOKEN}:1",
            special_tokens=cls_sep,
        )
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        unk_token=UNK_TOKEN,
        mask_token=MASK_TOKEN,
        additional_special_tokens=sentinel_tokens(num_sentinels),
        # BERT takes the segment ids; other models must not get them (GPT-2 would add wte[0] at every position).
        **(
            {
                "cls_token": CLS_TOKEN,
                "sep_token": SEP_TOKEN,
                "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
            }
            if bert_specials
            else {}
        ),
    )
    hf_tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return hf_tokenizer
