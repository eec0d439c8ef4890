"""SFT examples: rows (prompt/completion or messages) -> token ids with labels on the response tokens only.

We tokenize here rather than inside TRL's SFTTrainer for three reasons:
- the prompt is tokenized on its own, exactly as generation (PPO, evaluation) will tokenize it, and the
  response tokens follow; so the model learns the continuation of the very ids it will be prompted with;
- multi-turn conversations get loss on every assistant turn with any chat template (TRL's assistant mask
  needs `{% generation %}` markers that our default template and SmolLM2's lack);
- we know each example's length before truncation, so rows over `max_length` are counted and reported.
SFTTrainer then receives `input_ids` + `labels` and does what it does well: packing, collation, the loop.

Labels are the input ids with -100 (ignored by the loss) over prompt, system and user tokens.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import datasets
from transformers import PreTrainedTokenizerBase

from alignment.core.chat import IGNORE_INDEX, PromptFormat, tokenize_example
from alignment.core.formats import DatasetFormatError, LoadReport, detect_format, load_dataset_as
from alignment.core.paths import resolve_path

Overlong = Literal["truncate", "skip", "error"]


@dataclass
class DataReport:
    """What loading and tokenization did to one dataset: kept, skipped by reason, truncated."""

    source: str
    rows_in: int = 0
    rows_kept: int = 0
    truncated: int = 0
    unused: int = 0  # valid rows left out by a max_rows limit
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        """One line for logs and the model card."""
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
        unused = f", {self.unused} left out by the row limit" if self.unused else ""
        return (
            f"{self.source}: {self.rows_kept}/{self.rows_in} rows used{unused}, {self.truncated} truncated to "
            f"max_length; skipped: {reasons}"
        )

    def as_metrics(self, prefix: str) -> dict[str, int]:
        """Flat counts for metrics.jsonl and the model card."""
        metrics = {f"{prefix}/rows_in": self.rows_in, f"{prefix}/rows_kept": self.rows_kept}
        metrics[f"{prefix}/truncated"] = self.truncated
        metrics[f"{prefix}/skipped"] = sum(self.skipped.values())
        return metrics


def tokenize_dataset(
    source: str,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    overlong: Overlong = "truncate",
    prompt_format: PromptFormat = "plain",
    skip_bad_rows: bool = False,
    max_rows: int | None = None,
) -> tuple[datasets.Dataset, DataReport]:
    """Load, validate and tokenize an SFT dataset; return columns input_ids, labels, prompt_text and a report.

    Bad rows (missing keys, non-strings, empty completions) raise a `DatasetFormatError` naming the row,
    or with `skip_bad_rows` are dropped and counted. Rows longer than `max_length` tokens are truncated
    (keeping the start), skipped, or raise, per `overlong`; a row whose prompt alone fills `max_length`
    has no response token left to learn from and is always skipped and counted.
    """
    rows, load_report = _load_sft_rows(source, skip_bad_rows)
    report = DataReport(source=source, rows_in=load_report.rows_in, skipped=Counter(load_report.skipped))
    if max_rows is not None and len(rows) > max_rows:
        report.unused = len(rows) - max_rows
        rows = rows.select(range(max_rows))
    columns: dict[str, list] = {"input_ids": [], "labels": [], "prompt_text": []}
    for index, row in enumerate(rows):
        try:
            input_ids, labels, prompt_text = tokenize_example(row, tokenizer, prompt_format)
        except DatasetFormatError as err:
            raise DatasetFormatError(f"{source}: row {index + 1}: {err}") from None
        if len(input_ids) > max_length:
            if overlong == "error":
                raise DatasetFormatError(
                    f"{source}: row {index + 1}: {len(input_ids)} tokens, over max_length={max_length} "
                    "(raise max_length, or set overlong to 'truncate' or 'skip')"
                )
            if overlong == "skip":
                report.skipped["over max_length"] += 1
                continue
            input_ids, labels = input_ids[:max_length], labels[:max_length]
            if all(label == IGNORE_INDEX for label in labels):
                report.skipped["prompt fills max_length"] += 1
                continue
            report.truncated += 1
        columns["input_ids"].append(input_ids)
        columns["labels"].append(labels)
        columns["prompt_text"].append(prompt_text)
    report.rows_kept = len(columns["input_ids"])
    if not report.rows_kept:
        raise DatasetFormatError(f"{source}: no usable rows left ({report.summary()})")
    return datasets.Dataset.from_dict(columns), report


def _load_sft_rows(source: str, skip_bad_rows: bool) -> tuple[datasets.Dataset, LoadReport]:
    """Load and validate `source` (a cache:// path, file, folder or hub name) as messages or prompt/completion."""
    rows, report = load_dataset_as(resolve_path(source), skip_bad_rows=skip_bad_rows)
    fmt = detect_format(rows.column_names)
    if fmt not in ("messages", "prompt_completion"):
        raise DatasetFormatError(
            f"{source}: SFT needs columns 'prompt' and 'completion', or 'messages'; found {rows.column_names}"
        )
    return rows, report
