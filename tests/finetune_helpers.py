"""Tiny backbones and tiny task files for the fine-tuning tests: built from configs, nothing downloaded."""

from __future__ import annotations

import json
from pathlib import Path

from corpus import SENTENCES

POSITIVE = [s for i, s in enumerate(SENTENCES) if i % 2 == 0 and i != 6] + ["happy people tell good stories"]
NEGATIVE = [s for i, s in enumerate(SENTENCES) if i % 2 == 1]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def build_tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT (d=32) with the pretrain stage's masked-LM tokenizer ([CLS]/[SEP] post-processor)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from alignment.pretrain.tokenizer import train_bpe_tokenizer

    torch.manual_seed(0)
    tokenizer = train_bpe_tokenizer(SENTENCES * 4, 400, bert_specials=True)
    model = BertForMaskedLM(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_t5(folder: Path) -> Path:
    """A 2+2-layer T5 (d=32) with the pretrain stage's span-corruption tokenizer (sentinels, pad != EOS)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from alignment.pretrain.tokenizer import train_bpe_tokenizer

    torch.manual_seed(0)
    tokenizer = train_bpe_tokenizer(SENTENCES * 4, 400, num_sentinels=4)
    model = T5ForConditionalGeneration(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sentiment_rows(repeat: int = 6) -> list[dict]:
    rows = [{"text": t, "label": "positive"} for t in POSITIVE] + [
        {"text": t, "label": "negative"} for t in NEGATIVE
    ]
    return rows * repeat


def pair_rows(repeat: int = 6) -> list[dict]:
    """Pairs whose label the second text decides (a learnable task for a random tiny model)."""
    rows = []
    for text in SENTENCES:
        rows.append({"text": text, "text_pair": "yes it does", "label": "match"})
        rows.append({"text": text, "text_pair": "no it never did", "label": "other"})
    return rows * repeat
