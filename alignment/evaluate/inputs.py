"""What evaluation reads: prompts, perplexity texts, models, and what earlier stages left in the run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from alignment.core.formats import DatasetFormatError, load_dataset_as, load_rows
from alignment.core.models import load_causal_lm, load_tokenizer
from alignment.core.paths import resolve_path

# Pipeline order, so the timing table reads like the run did; other stage folders follow alphabetically.
STAGE_ORDER = ("prepare", "pretrain", "sft", "reward", "ppo", "evaluate")


def load_prompts(source: str, max_prompts: int) -> list[str]:
    """The first `max_prompts` prompts of a .txt file (one per line) or a dataset with a `prompt` column."""
    path = resolve_path(source)
    hint = " (run `alignment prepare` first)" if source.startswith("cache://") else ""
    if not Path(path).exists():
        raise DatasetFormatError(f"prompts: {path} does not exist{hint}")
    if path.endswith(".txt"):
        prompts = [line.rstrip("\n") for line in Path(path).read_text().splitlines() if line.strip()]
        if not prompts:
            raise DatasetFormatError(f"prompts: {path} has no non-empty lines")
    else:
        dataset, _ = load_dataset_as(path, fmt="prompts")
        prompts = list(dataset["prompt"])
    return prompts[:max_prompts]


def load_perplexity_texts(source: str, only_source: str | None, max_rows: int) -> list[str]:
    """Held-out natural text: the `text` column (or prompt + completion), optionally one `source` only."""
    path = resolve_path(source)
    if not Path(path).exists():
        hint = " (run `alignment prepare` first)" if source.startswith("cache://") else ""
        raise DatasetFormatError(f"perplexity_data: {path} does not exist{hint}")
    rows = load_rows(path)
    if only_source is not None and "source" in rows.column_names:
        rows = rows.filter(lambda row: row["source"] == only_source)
    rows = rows.select(range(min(max_rows, len(rows))))
    if "text" in rows.column_names:
        texts = list(rows["text"])
    elif {"prompt", "completion"} <= set(rows.column_names):
        texts = [p + c for p, c in zip(rows["prompt"], rows["completion"])]
    else:
        raise DatasetFormatError(
            f"perplexity_data: {path}: expected a `text` column (or prompt and completion), got {rows.column_names}"
        )
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise DatasetFormatError(f"perplexity_data: {path}: no texts (source filter {only_source!r})")
    return texts


def load_model(path: str, device: torch.device):
    """A causal LM and its tokenizer, ready for left-padded generation."""
    tokenizer = load_tokenizer(path, padding_side="left")
    model = load_causal_lm(path, tokenizer).to(device)
    model.eval()
    return model, tokenizer


def read_stage_timings(run_root: Path) -> dict[str, float]:
    """Wall seconds per stage from each stage folder's `timing.json` (written by the pipeline)."""
    timings: dict[str, float] = {}
    folders = [p for p in run_root.iterdir() if p.is_dir()] if run_root.is_dir() else []
    rank = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    for folder in sorted(folders, key=lambda p: (rank.get(p.name, len(rank)), p.name)):
        timing_file = folder / "timing.json"
        if timing_file.is_file():
            try:
                timing = json.loads(timing_file.read_text())
                # Only a stage's own marker counts (the pipeline's summary file has no "stage" key).
                if timing.get("stage") == folder.name:
                    timings[folder.name] = float(timing["wall_s"])
            except (ValueError, KeyError, TypeError, AttributeError):
                print(f"evaluate: ignoring unreadable {timing_file}")
    return timings


def read_reward_stats(reward_model: str) -> dict[str, Any]:
    """`reward_stats.json` of a reward model folder ({} when absent)."""
    stats_file = Path(resolve_path(reward_model)) / "reward_stats.json"
    return json.loads(stats_file.read_text()) if stats_file.is_file() else {}
