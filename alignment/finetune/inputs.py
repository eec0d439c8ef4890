"""Examples -> model inputs for the three kinds of backbone, and the collators that pad them.

- encoder (BERT family): the tokenizer's own pair encoding, `[CLS] text [SEP] text_pair [SEP]` with
  `token_type_ids` 0 then 1; the classifier pools the [CLS] state;
- decoder (GPT-1 classifier): plain token ids, pairs as `text <delimiter> text_pair`, similarity as both
  orders, multiple choice as `text <delimiter> choice` per option: input_ids [sequences, length] per example;
- encoder-decoder (T5): `task_prefix + text` (pairs: `text | text_pair`) with EOS as the input, the target
  words with EOS as the labels (teacher forcing; the model shifts them right).

Each builder returns the features and how many examples had to be cut to max_length.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from alignment.core.errors import ModelLoadError


def check_encoder_tokenizer(tokenizer: PreTrainedTokenizerBase, model_name: str) -> None:
    """Refuse an encoder tokenizer that adds no [CLS] in front: the classifier would pool the first word instead."""
    ids = tokenizer("a b")["input_ids"]
    if tokenizer.cls_token_id is None or ids[0] != tokenizer.cls_token_id:
        raise ModelLoadError(
            f"{model_name}: its tokenizer does not start a text with a [CLS] token, so the classifier head would "
            "pool the first word; pretrain it again (`alignment pretrain` now gives masked-LM tokenizers "
            "<|cls|>/<|sep|> and a post-processor) or use a BERT tokenizer"
        )


def encoder_features(
    examples: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[list[dict[str, Any]], int]:
    """input_ids, token_type_ids (where the tokenizer makes them), attention_mask and labels per example."""
    texts = [e["text"] for e in examples]
    pairs = [e["text_pair"] for e in examples] if "text_pair" in examples[0] else None
    full = tokenizer(texts, pairs)["input_ids"]
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    features = [
        {key: encoded[key][i] for key in encoded.keys()} | {"labels": examples[i]["label"]}
        for i in range(len(examples))
    ]
    return features, sum(len(ids) > max_length for ids in full)


def _join(
    first: list[int], delimiter: list[int], second: list[int], max_length: int
) -> tuple[list[int], bool]:
    """Join first + delimiter + second, trimming the longer side's end until it fits."""
    first, second = list(first), list(second)
    cut = False
    while len(first) + len(delimiter) + len(second) > max_length:
        cut = True
        if len(first) >= len(second):
            first.pop()
        else:
            second.pop()
    return first + delimiter + second, cut


def decoder_features(
    examples: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    transform: str,
    delimiter: str,
) -> tuple[list[dict[str, Any]], int]:
    """`sequences` (lists of token ids, one or more per example) and labels, after GPT-1's input transformations."""

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    delimiter_ids = ids(delimiter) if delimiter else []
    features, cut_count = [], 0
    for example in examples:
        text = ids(example["text"])
        if "choices" in example:
            joined = [_join(text, delimiter_ids, ids(c), max_length) for c in example["choices"]]
        elif "text_pair" in example:
            pair = ids(example["text_pair"])
            joined = [_join(text, delimiter_ids, pair, max_length)]
            if transform == "similarity":
                joined.append(_join(pair, delimiter_ids, text, max_length))
        else:
            joined = [(text[:max_length], len(text) > max_length)]
        cut_count += any(cut for _, cut in joined)
        features.append({"sequences": [seq for seq, _ in joined], "labels": example["label"]})
    return features, cut_count


def seq2seq_features(
    examples: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_target_length: int,
    prefix: str,
) -> tuple[list[dict[str, Any]], int]:
    """input_ids (prefix + text, EOS) and labels (the target words, EOS) per example."""
    eos = tokenizer.eos_token_id
    features, cut_count = [], 0
    for example in examples:
        text = prefix + example["text"] + (f" | {example['text_pair']}" if "text_pair" in example else "")
        source = tokenizer(text, add_special_tokens=False)["input_ids"]
        target = tokenizer(example["target"], add_special_tokens=False)["input_ids"]
        cut_count += len(source) >= max_length or len(target) >= max_target_length
        features.append(
            {"input_ids": source[: max_length - 1] + [eos], "labels": target[: max_target_length - 1] + [eos]}
        )
    return features, cut_count


class SequencesCollator:
    """Pads decoder features into input_ids and attention_mask [batch, sequences, length] (right padding)."""

    def __init__(self, pad_token_id: int, regression: bool = False):
        self.pad_token_id = pad_token_id
        self.regression = regression

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:  # noqa: D102
        sequences = len(features[0]["sequences"])
        length = max(len(seq) for f in features for seq in f["sequences"])
        input_ids = torch.full((len(features), sequences, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), sequences, length), dtype=torch.long)
        for i, feature in enumerate(features):
            for j, seq in enumerate(feature["sequences"]):
                input_ids[i, j, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                attention_mask[i, j, : len(seq)] = 1
        dtype = torch.float32 if self.regression else torch.long
        labels = torch.tensor([f["labels"] for f in features], dtype=dtype)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
