"""Dataset formats: the samples in data/samples/ load as their format; bad rows are named or skipped."""

from __future__ import annotations

import json

import pytest

from alignment.core.formats import (
    FORMATS,
    DatasetFormatError,
    detect_format,
    load_dataset_as,
    read_jsonl,
    validate_rows,
    write_jsonl,
)
from alignment.core.paths import REPO_ROOT

SAMPLES = REPO_ROOT / "data" / "samples"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_has_a_sample_that_loads_and_is_detected(fmt):
    path = SAMPLES / f"{fmt}.jsonl"
    dataset, report = load_dataset_as(path, fmt)
    assert 3 <= len(dataset) <= 5
    assert report.rows_kept == report.rows_in == len(dataset) and not report.skipped
    assert detect_format(dataset.column_names) == fmt
    # Loading without naming the format detects it from the columns.
    assert len(load_dataset_as(path)[0]) == len(dataset)


def test_samples_show_optional_margin_and_tied_ranks():
    pairs = read_jsonl(SAMPLES / "pairs.jsonl")
    assert any("margin" in row for row in pairs) and any("margin" not in row for row in pairs)
    rankings = read_jsonl(SAMPLES / "rankings.jsonl")
    assert any(len(set(row["ranks"])) < len(row["ranks"]) for row in rankings)


GOOD = {
    "text": {"text": "a fine film"},
    "prompt_completion": {"prompt": "The film", "completion": " was fine."},
    "messages": {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    "pairs": {"prompt": "", "chosen": "great film", "rejected": "bad film", "margin": 1.5},
    "rankings": {"prompt": "The film", "completions": [" was great.", " was bad."], "ranks": [1, 2]},
    "prompts": {"prompt": "The film"},
    "labels": {"text": "a fine film", "label": "positive"},
}

# (format, bad row, the key the error must name). Every bad row keeps the column types of the good
# row, so the file still loads as a table and the row check is what catches it.
BAD = [
    ("text", {"text": "   "}, "text"),
    ("text", {"text": None}, "text"),
    ("prompt_completion", {"prompt": "The film", "completion": ""}, "completion"),
    ("prompt_completion", {"prompt": None, "completion": " was fine."}, "prompt"),
    ("prompt_completion", {"prompt": "The film"}, "completion"),  # missing key in this row
    (
        "messages",
        {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}]},
        "messages",
    ),
    (
        "messages",
        {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]},
        "messages[0].role",
    ),
    ("pairs", {"prompt": "", "chosen": "same", "rejected": "same", "margin": 1.0}, "rejected"),
    ("pairs", {"prompt": "", "chosen": "great film", "rejected": "", "margin": 1.0}, "rejected"),
    ("rankings", {"prompt": "p", "completions": [" a", " b", " c"], "ranks": [1, 2]}, "ranks"),
    ("rankings", {"prompt": "p", "completions": [" only one"], "ranks": [1]}, "completions"),
    ("rankings", {"prompt": "p", "completions": [" a", " b"], "ranks": [1, 1]}, "ranks"),
    ("rankings", {"prompt": "p", "completions": [" a", " b"], "ranks": [0, 1]}, "ranks"),
    ("rankings", {"prompt": "p", "completions": [" a", " "], "ranks": [1, 2]}, "completions[1]"),
    ("prompts", {"prompt": ""}, "prompt"),
    ("labels", {"text": "", "label": "positive"}, "text"),
    ("labels", {"text": "a film", "label": None}, "label"),
]


@pytest.mark.parametrize(("fmt", "bad", "key"), BAD, ids=[f"{f}-{k}-{i}" for i, (f, _, k) in enumerate(BAD)])
def test_bad_row_is_named_or_skipped_and_counted(tmp_path, fmt, bad, key):
    path = tmp_path / f"{fmt}.jsonl"
    write_jsonl([GOOD[fmt], GOOD[fmt], bad, GOOD[fmt]], path)
    with pytest.raises(DatasetFormatError) as error:
        load_dataset_as(path, fmt)
    message = str(error.value)
    assert str(path) in message and "row 3" in message and f"key '{key}'" in message  # rows count from 1
    dataset, report = load_dataset_as(path, fmt, skip_bad_rows=True)
    assert len(dataset) == 3 and report.rows_in == 4 and sum(report.skipped.values()) == 1
    assert list(report.skipped) == [f"bad '{key.split('[')[0]}'"]
    assert "3/4 rows kept" in report.summary()


def test_missing_column_names_the_columns(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_jsonl([{"prompt": "", "chosen": "good"}], path)
    with pytest.raises(DatasetFormatError, match=r"format 'pairs' needs columns .* missing \['rejected'\]"):
        load_dataset_as(path, "pairs")
    odd = tmp_path / "odd.jsonl"
    write_jsonl([{"foo": 1}], odd)
    with pytest.raises(DatasetFormatError, match="match no known format"):
        load_dataset_as(odd)


def test_value_of_another_json_type_names_row_and_key(tmp_path):
    # Arrow cannot put a number in a string column; the error must still say where.
    path = tmp_path / "text.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"text": "a"}, {"text": "b"}, {"text": 5}]) + "\n")
    with pytest.raises(
        DatasetFormatError, match=r"row 3: key 'text': expected a string like row 1, got a number"
    ):
        load_dataset_as(path, "text")


def test_validate_rows_works_on_in_memory_datasets():
    import datasets

    dataset = datasets.Dataset.from_list([GOOD["rankings"], {**GOOD["rankings"], "ranks": [2, 2]}])
    with pytest.raises(DatasetFormatError, match="mine: row 2: key 'ranks'"):
        validate_rows(dataset, "rankings", "mine")
    kept, report = validate_rows(dataset, "rankings", "mine", skip_bad_rows=True)
    assert len(kept) == 1 and report.skipped == {"bad 'ranks'": 1}


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine"}\n{"text": \n')
    with pytest.raises(DatasetFormatError, match="broken.jsonl: line 2: not valid JSON"):
        load_dataset_as(path, "text")
