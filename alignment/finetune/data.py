"""Fine-tuning examples: the built-in tasks derived from the prepared assets, and user files in the same columns.

An example is a dict with `text`, optionally `text_pair` (sentence pairs) or `choices` (multiple choice),
`label` (a class index, or a float for regression) and, for text-to-text, `target` (the words to generate).

Built-in tasks (data/README.md, "Fine-tuning tasks"):
- sentiment_binary: human-rated snippets with |mean rating| >= `neutral_margin` (1.0 by default, on -4..4;
  near-neutral texts are dropped), negative / positive; the snippets' own fixed train/heldout split.
- sentiment_5way: the mean rating in 5 buckets (edges -2, -0.5, 0.5, 2), very negative .. very positive.
- sentiment_rating: the mean rating itself as a regression target (STS-B-like).
- chatterbot_qnli: does this reply answer this prompt? Each true (prompt, reply) pair against the same prompt
  with a reply drawn from another prompt's pairs (QNLI-style); prompts are held out by seed, so no question is
  on both sides.
- arithmetic: reasoning-gym problems ("Calculate -5 * -6.") with their answers, for text-to-text generation.

Every bad row raises `DatasetFormatError` naming the file, the row (from 1) and the key, unless
`skip_bad_rows` drops and counts it.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignment.core.errors import DatasetFormatError
from alignment.core.formats import ROW_CHECKS, LoadReport, load_rows, read_jsonl
from alignment.core.paths import resolve_path
from alignment.finetune.config import Config

SENTIMENT_CLASSES = ["negative", "positive"]
BUCKET_CLASSES = ["very negative", "negative", "neutral", "positive", "very positive"]
QNLI_CLASSES = ["unrelated", "reply"]
# text_to_text: what is put before each input when the config gives no task_prefix.
DEFAULT_PREFIXES = {
    "sentiment_binary": "sentiment: ",
    "sentiment_5way": "sentiment: ",
    "chatterbot_qnli": "reply: ",
    "arithmetic": "",
    "files": "",
}


@dataclass
class TaskData:
    """Train and held-out examples, the class names (empty for regression and free text), and where they came from."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    classes: list[str]
    origin: str
    reports: list[LoadReport] = field(default_factory=list)

    @property
    def pairs(self) -> bool:
        """True when the examples are sentence pairs."""
        return "text_pair" in self.train[0]


def load_task(config: Config) -> TaskData:
    """The examples `config` names, sampled to the configured sizes; text-to-text examples get their targets."""
    if config.dataset in ("sentiment_binary", "sentiment_5way", "sentiment_rating"):
        data = sentiment_task(config)
    elif config.dataset == "chatterbot_qnli":
        rows = read_rows(config.chatterbot_file, "prompt_completion", config.skip_bad_rows)
        train, evaluation = qnli_examples(rows, config.eval_fraction, config.seed)
        data = TaskData(
            train, evaluation, list(config.labels or QNLI_CLASSES), f"{config.chatterbot_file} (QNLI-style)"
        )
    elif config.dataset == "arithmetic":
        rows = read_rows(config.arithmetic_file, "prompt_completion", config.skip_bad_rows)
        examples = [{"text": r["prompt"], "target": r["completion"], "label": None} for r in rows]
        train, evaluation = split_examples(examples, config.eval_fraction, config.seed)
        data = TaskData(train, evaluation, [], config.arithmetic_file)
    else:
        data = file_task(config)
    data.train = sample(data.train, config.max_train_samples, config.seed)
    data.eval = sample(data.eval, config.max_eval_samples, config.seed)
    if not data.train or not data.eval:
        raise DatasetFormatError(
            f"{data.origin}: {len(data.train)} training and {len(data.eval)} held-out examples; need both "
            "(add rows, give eval_data, or raise eval_fraction)"
        )
    if config.task == "text_to_text":
        for example in data.train + data.eval:
            if "target" not in example:
                example["target"] = data.classes[example["label"]]
    return data


# ---------------------------------------------------------------------------------------------
# Built-in tasks


def raw_rows(source: str) -> tuple[str, list[dict[str, Any]]]:
    """(resolved path, rows) of a JSONL file, or of any file or folder `load_rows` reads.

    JSONL is read row by row rather than through Arrow, so a regression file mixing 3 and 2.5 loads, and a
    row's number in an error is its place among the file's rows.
    """
    path = resolve_path(source)
    if path.endswith(".jsonl"):
        if not Path(path).is_file():
            hint = " (run `alignment prepare` first)" if source.startswith("cache://") else ""
            raise DatasetFormatError(f"{path}: file does not exist{hint}")
        return path, read_jsonl(path)
    return path, load_rows(path).to_list()


def checked_rows(path: str, rows: list[dict], fmt: str, skip_bad_rows: bool, extra_check=None) -> list[dict]:
    """The rows that pass the format's check and `extra_check`; the first bad one raises unless skipped."""
    kept = []
    for number, row in enumerate(rows, start=1):
        problem = ROW_CHECKS[fmt](row) or (extra_check(row) if extra_check else None)
        if problem is None:
            kept.append(row)
            continue
        key, expected = problem
        if not skip_bad_rows:
            raise DatasetFormatError(f"{path}: row {number}: key '{key}': expected {expected}")
    if len(kept) < len(rows):
        print(
            f"[finetune] {path}: {len(kept)}/{len(rows)} rows kept; {len(rows) - len(kept)} bad rows skipped"
        )
    return kept


def read_rows(source: str, fmt: str, skip_bad_rows: bool, extra_check=None) -> list[dict[str, Any]]:
    """Rows of `source`, each checked as `fmt` and by `extra_check`."""
    path, rows = raw_rows(source)
    return checked_rows(path, rows, fmt, skip_bad_rows, extra_check)


def _check_snippet(row: dict) -> tuple[str, str] | None:
    rating = row.get("mean_rating")
    if not isinstance(rating, (int, float)) or isinstance(rating, bool):
        return "mean_rating", "a number (the mean human rating, -4..4)"
    if row.get("split") not in ("train", "heldout"):
        return "split", "'train' or 'heldout'"
    return None


def sentiment_task(config: Config) -> TaskData:
    """Binary, 5-way or rating examples from the human-rated snippets, on their own train/heldout split."""
    rows = read_rows(config.snippets_file, "text", config.skip_bad_rows, _check_snippet)
    rows = [r for r in rows if r.get("source") in config.sources]
    sides: dict[str, list[dict[str, Any]]] = {"train": [], "heldout": []}
    for row in rows:
        rating = float(row["mean_rating"])
        if config.dataset == "sentiment_rating":
            label: int | float = rating
        elif config.dataset == "sentiment_binary":
            if abs(rating) < config.neutral_margin:
                continue  # near-neutral: humans barely agree on a side
            label = int(rating > 0)
        else:
            label = bisect.bisect_right(config.bucket_edges, rating)
        sides[row["split"]].append({"text": row["text"], "label": label})
    classes = {"sentiment_binary": SENTIMENT_CLASSES, "sentiment_5way": BUCKET_CLASSES}.get(
        config.dataset, []
    )
    threshold = f", |mean rating| >= {config.neutral_margin}" if config.dataset == "sentiment_binary" else ""
    origin = f"{config.snippets_file} ({config.dataset}; sources {', '.join(config.sources)}{threshold})"
    return TaskData(sides["train"], sides["heldout"], list(config.labels or classes), origin)


def qnli_examples(
    rows: list[dict[str, Any]], eval_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out) QNLI-style examples: each true pair (label 1) and the prompt with a foreign reply (label 0).

    Prompts are split by seed; a foreign reply comes from the same side, from another prompt, and is never one
    of this prompt's own replies.
    """
    prompts = sorted({row["prompt"] for row in rows})
    rng = random.Random(seed)
    rng.shuffle(prompts)
    n_eval = min(max(round(len(prompts) * eval_fraction), 1), len(prompts) - 1)
    held_out = set(prompts[:n_eval])
    sides = []
    for side_rows in (
        [r for r in rows if r["prompt"] not in held_out],
        [r for r in rows if r["prompt"] in held_out],
    ):
        replies: dict[str, set[str]] = {}
        for row in side_rows:
            replies.setdefault(row["prompt"], set()).add(row["completion"])
        examples = []
        for row in side_rows:
            examples.append({"text": row["prompt"], "text_pair": row["completion"], "label": 1})
            for _ in range(20):  # a few draws find a foreign reply unless one prompt owns nearly all rows
                other = side_rows[rng.randrange(len(side_rows))]
                if other["prompt"] != row["prompt"] and other["completion"] not in replies[row["prompt"]]:
                    examples.append({"text": row["prompt"], "text_pair": other["completion"], "label": 0})
                    break
        sides.append(examples)
    return sides[0], sides[1]


def split_examples(
    examples: list[dict[str, Any]], eval_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A seeded (train, held-out) split with at least one example on each side."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = min(max(round(len(examples) * eval_fraction), 1), max(len(examples) - 1, 0))
    held_out = set(order[:n_eval])
    return (
        [e for i, e in enumerate(examples) if i not in held_out],
        [e for i, e in enumerate(examples) if i in held_out],
    )


def sample(examples: list[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    """At most `limit` examples, a seeded sample kept in file order."""
    if limit is None or len(examples) <= limit:
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


# ---------------------------------------------------------------------------------------------
# User files


def file_format(task: str, columns: set[str]) -> str:
    """The row format a task reads from a file with these columns."""
    if task == "multiple_choice":
        return "choices"
    if task == "text_to_text" and {"prompt", "completion"} <= columns:
        return "prompt_completion"
    return "label_pairs" if "text_pair" in columns else "labels"


def label_check(task: str, fmt: str, classes: list[str] | None):
    """The task's own check of a row's label, on top of the format's: a known class, or a number for regression."""

    def check(row: dict) -> tuple[str, str] | None:
        label = row.get("label")
        if fmt in ("prompt_completion", "choices"):
            return None  # no label, or an index the format checked
        if task == "regression":
            if not isinstance(label, (int, float)) or isinstance(label, bool):
                return "label", f"a number (a regression target), got {label!r}"
        elif not isinstance(label, (int, str)) or isinstance(label, bool):
            return "label", f"a class (an int or a string), got {label!r}"
        elif classes is not None and str(label) not in classes:
            return (
                "label",
                f"one of the classes {', '.join(classes)}, got unknown class {label!r} (the labels option lists them)",
            )
        return None

    return check


def class_names(labels: list[int | str]) -> list[str]:
    """Class names from the training labels: ints in numeric order, strings sorted."""
    distinct = set(labels)
    if all(isinstance(v, int) for v in distinct):
        return [str(v) for v in sorted(distinct)]
    return sorted(str(v) for v in distinct)


def file_examples(
    source: str, config: Config, classes: list[str] | None
) -> tuple[list[dict[str, Any]], list[str] | None]:
    """Examples of one file and the class names (taken from this file when `classes` is None)."""
    path, rows = raw_rows(source)
    fmt = file_format(config.task, {key for row in rows for key in row})
    rows = checked_rows(path, rows, fmt, config.skip_bad_rows, label_check(config.task, fmt, classes))
    if fmt == "prompt_completion":
        return [{"text": r["prompt"], "target": r["completion"], "label": None} for r in rows], classes
    if fmt == "choices":
        return [
            {"text": r["text"], "choices": list(r["choices"]), "label": r["label"]} for r in rows
        ], classes
    if config.task != "regression" and classes is None:
        classes = class_names([r["label"] for r in rows])
    examples = []
    for row in rows:
        example: dict[str, Any] = {"text": row["text"]}
        if fmt == "label_pairs":
            example["text_pair"] = row["text_pair"]
        is_class = config.task != "regression"
        example["label"] = classes.index(str(row["label"])) if is_class else float(row["label"])
        examples.append(example)
    return examples, classes


def file_task(config: Config) -> TaskData:
    """Examples from train_data (and eval_data, or a held-out share of train_data)."""
    classes = list(config.labels) or None
    train, classes = file_examples(config.train_data, config, classes)
    if config.eval_data:
        evaluation, _ = file_examples(config.eval_data, config, classes)
    else:
        train, evaluation = split_examples(train, config.eval_fraction, config.seed)
    choices = {len(e["choices"]) for e in train + evaluation if "choices" in e}
    if len(choices) > 1:
        raise DatasetFormatError(
            f"{config.train_data}: every row needs the same number of choices, found {sorted(choices)}"
        )
    origin = config.train_data + (f" / {config.eval_data}" if config.eval_data else "")
    return TaskData(train, evaluation, classes or [], origin)
