"""Items to label: a prompt and 2 to 9 candidates, read from JSONL or generated from checkpoints.

Rows are `{"prompt", "completions": [...]}` (ready to label) or `{"prompt"}` alone (candidates are sampled
from the configured checkpoints with `alignment.core.generation.generate_texts`, the same code evaluation
uses). Identical candidates are dropped: two copies of a text at different ranks would contradict each
other in the reward data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alignment.core.formats import MAX_RANKED_COMPLETIONS, DatasetFormatError, read_jsonl
from alignment.core.paths import resolve_path

MIN_CANDIDATES = 2


def read_item_rows(path: str | Path) -> list[dict]:
    """Read and check item rows; errors name the file, the row and the key."""
    rows = read_jsonl(resolve_path(str(path)))
    for index, row in enumerate(rows):
        where = f"{path}: row {index + 1}"
        if not isinstance(row.get("prompt"), str):
            raise DatasetFormatError(f"{where}: key 'prompt': expected a string")
        completions = row.get("completions")
        if completions is None:
            continue
        if (
            not isinstance(completions, list)
            or not MIN_CANDIDATES <= len(completions) <= MAX_RANKED_COMPLETIONS
        ):
            raise DatasetFormatError(
                f"{where}: key 'completions': expected a list of {MIN_CANDIDATES} to {MAX_RANKED_COMPLETIONS} strings"
            )
        for i, text in enumerate(completions):
            if not isinstance(text, str) or not text.strip():
                raise DatasetFormatError(f"{where}: key 'completions[{i}]': expected a non-empty string")
    return rows


def distinct_candidates(completions: Sequence[str]) -> list[str]:
    """Candidates without empty texts and repeats, first occurrence kept."""
    seen: dict[str, None] = {}
    for text in completions:
        if text.strip():
            seen.setdefault(text, None)
    return list(seen)


def generate_candidates(
    prompts: list[str],
    checkpoints: list[str],
    samples_per_checkpoint: int,
    sampling: dict,
    seed: int,
    template: str | None = None,
    chat: bool = False,
) -> list[list[str]]:
    """Sample `samples_per_checkpoint` candidates per prompt from each checkpoint, in checkpoint order.

    `sampling` holds `SamplingSettings` fields (max_new_tokens, temperature, top_k, top_p); each checkpoint is
    asked the prompt in `template` (and its chat template with `chat`), as PPO and evaluation ask it.
    """
    # Imported here so serving a ready-made item file never pays for torch and transformers.
    from alignment.core.chat import format_prompt
    from alignment.core.generation import SamplingSettings, generate_texts
    from alignment.core.models import load_causal_lm, load_tokenizer

    candidates: list[list[str]] = [[] for _ in prompts]
    for checkpoint in checkpoints:
        tokenizer = load_tokenizer(checkpoint, padding_side="left")
        model = load_causal_lm(checkpoint, tokenizer=tokenizer)
        asked = [format_prompt(tokenizer, p, template, chat) for p in prompts]
        repeated = [p for p in asked for _ in range(samples_per_checkpoint)]
        texts = generate_texts(model, tokenizer, repeated, SamplingSettings(**sampling), seed=seed)
        for index, text in enumerate(texts):
            candidates[index // samples_per_checkpoint].append(text)
        del model
    return candidates


def build_items(
    rows: list[dict],
    checkpoints: list[str],
    samples_per_checkpoint: int,
    sampling: dict,
    seed: int,
    template: str | None = None,
    chat: bool = False,
) -> tuple[list[tuple[str, list[str]]], int]:
    """Turn rows into (prompt, candidates) items, generating where needed; returns (items, rows dropped).

    A row is dropped when fewer than two distinct non-empty candidates remain.
    """
    need = [i for i, row in enumerate(rows) if row.get("completions") is None]
    generated: dict[int, list[str]] = {}
    if need:
        if not checkpoints:
            raise DatasetFormatError(
                f"row {need[0] + 1}: key 'completions': missing, and no `checkpoints` are configured to generate them"
            )
        sampled = generate_candidates(
            [rows[i]["prompt"] for i in need],
            checkpoints,
            samples_per_checkpoint,
            sampling,
            seed,
            template,
            chat,
        )
        generated = dict(zip(need, sampled))
    items, dropped = [], 0
    for i, row in enumerate(rows):
        candidates = distinct_candidates(generated.get(i, row.get("completions") or []))
        if len(candidates) < MIN_CANDIDATES:
            dropped += 1
            continue
        items.append((row["prompt"], candidates))
    return items, dropped
