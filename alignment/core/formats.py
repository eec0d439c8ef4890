"""Dataset formats every stage reads and writes, and their validation at load time.

The formats are the ones TRL and hub datasets use, so a user's own data drops in (see data/README.md):

| format            | columns                                              | read by            |
|-------------------|------------------------------------------------------|--------------------|
| text              | text                                                 | pretrain, ppo-ptx  |
| prompt_completion | prompt, completion                                   | sft                |
| messages          | messages: [{role, content}, ...]                     | sft                |
| pairs             | prompt, chosen, rejected (+ margin: float)           | reward             |
| rankings          | prompt, completions: [str, ...], ranks: [int, ...]   | reward             |
| prompts           | prompt                                               | ppo, evaluate      |
| labels            | text, label                                          | finetune           |
| label_pairs       | text, text_pair, label                               | finetune           |
| choices           | text, choices: [str, ...], label (the right index)   | finetune           |

A label is a class (an int or a string) or, for regression, a number. Ranks follow the convention "1 is
best"; equal ranks are ties. Bad rows raise `DatasetFormatError`
naming the source, the row and the key, unless the caller asks for bad rows to be skipped and counted.
Rows are numbered from 1, so in a JSONL file without blank lines row N is line N.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from alignment.core.errors import DatasetFormatError, one_line

FORMATS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "prompt_completion": ("prompt", "completion"),
    "messages": ("messages",),
    "pairs": ("prompt", "chosen", "rejected"),
    "rankings": ("prompt", "completions", "ranks"),
    "prompts": ("prompt",),
    "labels": ("text", "label"),
    "label_pairs": ("text", "text_pair", "label"),
    "choices": ("text", "choices", "label"),
}
MESSAGE_ROLES = ("system", "user", "assistant")
MAX_RANKED_COMPLETIONS = 9


@dataclass
class LoadReport:
    """What validation did to a dataset: rows kept and rows skipped, by reason."""

    source: str
    rows_in: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def rows_kept(self) -> int:
        """Rows that passed validation."""
        return self.rows_in - sum(self.skipped.values())

    def summary(self) -> str:
        """One line for logs."""
        reasons = ", ".join(f"{n} {why}" for why, n in self.skipped.items()) or "none"
        return f"{self.source}: {self.rows_kept}/{self.rows_in} rows kept; skipped: {reasons}"


# ---------------------------------------------------------------------------------------------
# Per-format row checks: return None when the row is fine, else (key, what was expected).


def _nonempty_str(row: dict, key: str) -> tuple[str, str] | None:
    value = row.get(key)
    if not isinstance(value, str):
        return key, f"a string, got {type(value).__name__}"
    if not value.strip():
        return key, "a non-empty string"
    return None


def _check_text(row: dict) -> tuple[str, str] | None:
    return _nonempty_str(row, "text")


def _check_prompt_completion(row: dict) -> tuple[str, str] | None:
    if not isinstance(row.get("prompt"), str):
        return "prompt", f"a string, got {type(row.get('prompt')).__name__}"
    return _nonempty_str(row, "completion")


def _check_messages(row: dict) -> tuple[str, str] | None:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages", "a non-empty list of {role, content} mappings"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES:
            return f"messages[{i}].role", f"one of {MESSAGE_ROLES}"
        if not isinstance(message.get("content"), str):
            return f"messages[{i}].content", "a string"
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        return "messages", "a last message from the assistant with non-empty content"
    return None


def _check_pairs(row: dict) -> tuple[str, str] | None:
    if not isinstance(row.get("prompt"), str):
        return "prompt", "a string"
    for key in ("chosen", "rejected"):
        problem = _nonempty_str(row, key)
        if problem:
            return problem
    if row["chosen"] == row["rejected"]:
        return "rejected", "a text different from chosen (identical pair teaches nothing)"
    margin = row.get("margin")
    if margin is not None and not isinstance(margin, (int, float)):
        return "margin", "a number"
    return None


def _check_rankings(row: dict) -> tuple[str, str] | None:
    if not isinstance(row.get("prompt"), str):
        return "prompt", "a string"
    completions, ranks = row.get("completions"), row.get("ranks")
    if not isinstance(completions, list) or not 2 <= len(completions) <= MAX_RANKED_COMPLETIONS:
        return "completions", f"a list of 2 to {MAX_RANKED_COMPLETIONS} strings"
    for i, text in enumerate(completions):
        if not isinstance(text, str) or not text.strip():
            return f"completions[{i}]", "a non-empty string"
    if not isinstance(ranks, list) or len(ranks) != len(completions):
        return "ranks", f"a list with one rank per completion ({len(completions)})"
    if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
        return "ranks", "integers >= 1 (1 is best, equal ranks are ties)"
    if len(set(ranks)) == 1:
        return "ranks", "at least two different ranks (all tied gives no preference)"
    return None


def _check_prompts(row: dict) -> tuple[str, str] | None:
    return _nonempty_str(row, "prompt")


def _check_labels(row: dict) -> tuple[str, str] | None:
    problem = _nonempty_str(row, "text")
    if problem:
        return problem
    label = row.get("label")
    # A float is a regression target; whether a stage wants a class or a number it checks itself.
    if not isinstance(label, (int, str, float)) or isinstance(label, bool):
        return (
            "label",
            f"an int or a string (a class) or a number (a regression target), got {type(label).__name__}",
        )
    if isinstance(label, float) and not math.isfinite(label):
        return "label", f"a finite number, got {label}"
    return None


def _check_label_pairs(row: dict) -> tuple[str, str] | None:
    return _check_labels(row) or _nonempty_str(row, "text_pair")


def _check_choices(row: dict) -> tuple[str, str] | None:
    problem = _nonempty_str(row, "text")
    if problem:
        return problem
    choices, label = row.get("choices"), row.get("label")
    if not isinstance(choices, list) or len(choices) < 2:
        return "choices", "a list of at least 2 strings"
    for i, choice in enumerate(choices):
        if not isinstance(choice, str) or not choice.strip():
            return f"choices[{i}]", "a non-empty string"
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
        return "label", f"the index of the right choice, an int in [0, {len(choices) - 1}], got {label!r}"
    return None


ROW_CHECKS: dict[str, Callable[[dict], tuple[str, str] | None]] = {
    "text": _check_text,
    "prompt_completion": _check_prompt_completion,
    "messages": _check_messages,
    "pairs": _check_pairs,
    "rankings": _check_rankings,
    "prompts": _check_prompts,
    "labels": _check_labels,
    "label_pairs": _check_label_pairs,
    "choices": _check_choices,
}


def detect_format(columns: Iterable[str]) -> str:
    """Name the format whose columns are all present (most specific first)."""
    columns = set(columns)
    for name in (
        "rankings",
        "pairs",
        "messages",
        "prompt_completion",
        "choices",
        "label_pairs",
        "labels",
        "text",
        "prompts",
    ):
        if set(FORMATS[name]) <= columns:
            return name
    raise DatasetFormatError(
        f"columns {sorted(columns)} match no known format; expected one of "
        + "; ".join(f"{n}: {', '.join(cols)}" for n, cols in FORMATS.items())
    )


def validate_rows(
    dataset: datasets.Dataset, fmt: str, source: str, skip_bad_rows: bool = False
) -> tuple[datasets.Dataset, LoadReport]:
    """Check every row of `dataset` against `fmt`.

    Raises `DatasetFormatError` naming `source`, the row number and the key on the first bad row,
    or, with `skip_bad_rows`, drops bad rows and counts them by reason in the returned report.
    """
    if fmt not in FORMATS:
        raise DatasetFormatError(f"unknown format {fmt!r}; expected one of {sorted(FORMATS)}")
    missing = [c for c in FORMATS[fmt] if c not in dataset.column_names]
    if missing:
        raise DatasetFormatError(
            f"{source}: format '{fmt}' needs columns {list(FORMATS[fmt])}; missing {missing} "
            f"(found {dataset.column_names})"
        )
    check = ROW_CHECKS[fmt]
    report = LoadReport(source=source, rows_in=len(dataset))
    keep: list[int] = []
    for index, row in enumerate(dataset):
        problem = check(row)
        if problem is None:
            keep.append(index)
            continue
        key, expected = problem
        if not skip_bad_rows:
            raise DatasetFormatError(f"{source}: row {index + 1}: key '{key}': expected {expected}")
        reason = f"bad '{key.split('[')[0]}'"
        report.skipped[reason] = report.skipped.get(reason, 0) + 1
    if len(keep) < len(dataset):
        dataset = dataset.select(keep)
    return dataset, report


def load_rows(source: str | Path, split: str = "train") -> datasets.Dataset:
    """Load a dataset from a JSONL/JSON/CSV/Parquet file, a `save_to_disk` folder, or a hub name.

    Hub names only work where the hub is reachable; locally everything comes from files.
    """
    path = Path(source)
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            loaded = datasets.load_from_disk(str(path))
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json", ".parquet", ".csv"))
        if not files:
            raise DatasetFormatError(f"{path}: folder holds no .jsonl/.json/.parquet/.csv files")
        return datasets.concatenate_datasets([load_rows(p) for p in files])
    if path.suffix in (".jsonl", ".json"):
        if not path.is_file():
            raise DatasetFormatError(f"{path}: file does not exist")
        return (
            _dataset_from_rows(read_jsonl(path), str(path)) if path.suffix == ".jsonl" else _read_json(path)
        )
    if path.suffix in (".csv", ".parquet"):
        if not path.is_file():
            raise DatasetFormatError(f"{path}: file does not exist")
        builder = "csv" if path.suffix == ".csv" else "parquet"
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as err:  # noqa: BLE001 - pyarrow and datasets raise many kinds; all mean "unreadable"
            raise DatasetFormatError(
                f"{path}: not a readable {builder} file ({one_line(str(err))[:200]})"
            ) from None
    if path.exists() or "/" not in str(source) or str(source).startswith((".", "/")):
        raise DatasetFormatError(
            f"{source}: not a dataset file or folder (expected .jsonl, .json, .csv, .parquet)"
        )
    return datasets.load_dataset(str(source), split=split)  # a hub name such as "org/dataset"


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a malformed line raises `DatasetFormatError` naming the file and line."""
    rows = []
    with Path(path).open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DatasetFormatError(
                    f"{path}: line {number}: not UTF-8 text (byte {err.start + 1} of the line); "
                    "save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetFormatError(f"{path}: line {number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise DatasetFormatError(f"{path}: line {number}: expected a JSON object")
            rows.append(row)
    if not rows:
        raise DatasetFormatError(f"{path}: no rows")
    return rows


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):  # Arrow needs one element type too: [1, 2] and ["1", "2"] do not mix
        kinds = sorted({_json_kind(v) for v in value if v is not None})
        return f"a list of {' and '.join(k.removeprefix('a ') + 's' for k in kinds)}" if kinds else "a list"
    return {str: "a string", dict: "a mapping"}.get(type(value), type(value).__name__)


def _dataset_from_rows(rows: list[dict[str, Any]], source: str) -> datasets.Dataset:
    """`Dataset.from_list`, but a value whose JSON type differs from its column's names the row and key.

    Arrow needs one type per column, so such a row cannot be loaded (nor skipped) and would otherwise
    surface as a bare `ArrowTypeError` with no row number.
    """
    try:
        return datasets.Dataset.from_list(rows)
    except (
        TypeError,
        ValueError,
        OverflowError,
    ) as err:  # pyarrow's ArrowTypeError/ArrowInvalid subclass these
        first_kind: dict[str, tuple[int, str]] = {}
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise DatasetFormatError(f"{source}: row {index + 1}: expected a JSON object") from None
            for key, value in row.items():
                if value is None:
                    continue
                kind = _json_kind(value)
                if " and " in kind:
                    raise DatasetFormatError(
                        f"{source}: row {index + 1}: key '{key}': expected a list of one kind, got {kind}"
                    ) from None
                if kind == "a list":  # an empty list fits any list column
                    continue
                seen = first_kind.setdefault(key, (index, kind))
                if seen[1] != kind:
                    raise DatasetFormatError(
                        f"{source}: row {index + 1}: key '{key}': expected {seen[1]} like row {seen[0] + 1}, "
                        f"got {kind}"
                    ) from None
        raise DatasetFormatError(
            f"{source}: rows do not fit one table ({one_line(str(err))[:200]})"
        ) from None


def _read_json(path: Path) -> datasets.Dataset:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise DatasetFormatError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
    if isinstance(data, dict):
        data = data.get("data", data.get("rows"))
    if not isinstance(data, list):
        raise DatasetFormatError(f"{path}: expected a JSON list of rows (or {{'data': [...]}})")
    return _dataset_from_rows(data, str(path))


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write rows to JSONL atomically; return the number written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    count = 0
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count


def load_dataset_as(
    source: str | Path, fmt: str | None = None, split: str = "train", skip_bad_rows: bool = False
) -> tuple[datasets.Dataset, LoadReport]:
    """Load `source` and validate it as `fmt` (detected from its columns when None)."""
    dataset = load_rows(source, split=split)
    fmt = fmt or detect_format(dataset.column_names)
    return validate_rows(dataset, fmt, str(source), skip_bad_rows=skip_bad_rows)
