"""The pretraining corpus: documents in, fixed-length token blocks out.

Documents come from any text dataset (`.jsonl`/`.json`/`.csv`/`.parquet` with a text column, a
`save_to_disk` folder, a hub name where the hub is reachable) or a plain `.txt` file (one document per
non-empty line). They are tokenized, joined with EOS after each document and cut into blocks of
`block_size` tokens (the ragged tail is dropped), so no compute is spent on padding.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from alignment.core.formats import DatasetFormatError, load_rows, validate_rows
from alignment.core.paths import resolve_path


def load_documents(source: str, text_column: str = "text") -> list[str]:
    """All non-empty documents of `source`; a missing column or file raises `DatasetFormatError`."""
    path = resolve_path(source)
    if path.endswith(".txt"):
        if not Path(path).is_file():
            raise DatasetFormatError(f"{path}: file does not exist")
        documents = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    else:
        rows = load_rows(path)
        if text_column not in rows.column_names:
            raise DatasetFormatError(
                f"{source}: expected a text column {text_column!r} (set text_column), found {rows.column_names}"
            )
        if text_column != "text":
            rows = rows.rename_column(text_column, "text")
        rows, report = validate_rows(rows.select_columns(["text"]), "text", source, skip_bad_rows=True)
        documents = list(rows["text"])
        skipped = sum(report.skipped.values())
        if skipped and documents:
            print(f"[pretrain] {source}: left out {skipped} empty or non-text rows", flush=True)
    if not documents:
        raise DatasetFormatError(f"{source}: no non-empty documents")
    return documents


def split_documents(documents: list[str], heldout_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Hold out a seeded random `heldout_fraction` of the documents (at least one each side)."""
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    n_heldout = min(max(round(len(documents) * heldout_fraction), 1), len(documents) - 1)
    heldout = sorted(order[:n_heldout])
    train = sorted(order[n_heldout:])
    return [documents[i] for i in train], [documents[i] for i in heldout]


def pack_documents(documents: list[str], tokenizer: PreTrainedTokenizerBase, block_size: int) -> torch.Tensor:
    """Token blocks [n_blocks, block_size]: documents joined with EOS after each, tail dropped."""
    token_lists = tokenizer(documents, add_special_tokens=False)["input_ids"]
    stream: list[int] = []
    for tokens in token_lists:
        stream.extend(tokens)
        stream.append(tokenizer.eos_token_id)
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise DatasetFormatError(
            f"corpus too small: {len(stream)} tokens do not fill one block of block_size={block_size}"
        )
    return torch.tensor(stream[: n_blocks * block_size], dtype=torch.long).view(n_blocks, block_size)
