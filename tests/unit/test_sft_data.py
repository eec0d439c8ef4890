"""SFT data: loss only on responses (checked on the collated batch), and bad rows fail loudly or are counted."""

import json

import pytest
import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from alignment.core.formats import DatasetFormatError
from alignment.sft.data import IGNORE_INDEX, tokenize_dataset


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def collate(dataset, tokenizer):
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    return collator([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in dataset])


def test_prompt_tokens_carry_no_loss(tmp_path, tiny_tokenizer):
    rows = [
        {"prompt": "the movie was", "completion": " wonderful and great"},
        {"prompt": "a dull film with a terrible", "completion": " plot"},
    ]
    dataset, report = tokenize_dataset(write_rows(tmp_path / "d.jsonl", rows), tiny_tokenizer, max_length=64)
    batch = collate(dataset, tiny_tokenizer)
    for i, row in enumerate(rows):
        n_prompt = len(tiny_tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
        completion = tiny_tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [
            tiny_tokenizer.eos_token_id
        ]
        labels = batch["labels"][i]
        assert (labels[:n_prompt] == IGNORE_INDEX).all()
        assert labels[n_prompt : n_prompt + len(completion)].tolist() == completion  # EOS is learned too
        assert (labels[n_prompt + len(completion) :] == IGNORE_INDEX).all()  # padding
        assert (
            batch["input_ids"][i, :n_prompt].tolist()
            == tiny_tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        )
    assert report.rows_kept == 2 and report.truncated == 0


def test_only_assistant_turns_carry_loss_in_conversations(tmp_path, tiny_tokenizer):
    messages = [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "the movie was"},
        {"role": "assistant", "content": "wonderful"},
        {"role": "user", "content": "and the plot"},
        {"role": "assistant", "content": "a dull film"},
    ]
    dataset, _ = tokenize_dataset(
        write_rows(tmp_path / "m.jsonl", [{"messages": messages}]), tiny_tokenizer, 128
    )
    batch = collate(dataset, tiny_tokenizer)
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    rendered = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert tiny_tokenizer.decode(ids) == rendered  # the chat template, applied once, exactly
    learned = tiny_tokenizer.decode(ids[labels != IGNORE_INDEX])
    eos = tiny_tokenizer.eos_token
    assert learned == f"wonderful{eos}\na dull film{eos}\n"
    assert dataset["prompt_text"][0].endswith("<|assistant|>\n")  # generation prompt for samples


def test_chat_prompt_format_wraps_prompt_completion_rows(tmp_path, tiny_tokenizer):
    path = write_rows(tmp_path / "d.jsonl", [{"prompt": "hi there", "completion": "good day"}])
    dataset, _ = tokenize_dataset(path, tiny_tokenizer, 64, prompt_format="chat")
    ids, labels = torch.tensor(dataset["input_ids"][0]), torch.tensor(dataset["labels"][0])
    assert tiny_tokenizer.decode(ids).startswith("<|user|>\nhi there")
    assert tiny_tokenizer.decode(ids[labels != IGNORE_INDEX]) == f"good day{tiny_tokenizer.eos_token}\n"


@pytest.mark.parametrize(
    "rows,message",
    [
        ([{"prompt": "the movie"}], r"SFT needs columns 'prompt' and 'completion'.*found \['prompt'\]"),
        (
            [{"prompt": "the movie", "completion": "   "}],
            "row 1: key 'completion': expected a non-empty string",
        ),
        ([{"prompt": "a", "completion": " b"}, {"prompt": "c"}], "row 2: key 'completion'"),
        ([{"prompt": 3, "completion": " b"}], "row 1: key 'prompt': expected a string"),
        ([{"prompt": "a", "completion": " b"}, {"prompt": "c", "completion": 7}], "row 2: key 'completion'"),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "row 1: key 'messages'"),
        ([{"prompt": "a", "chosen": "b", "rejected": "c"}], "SFT needs columns"),
    ],
)
def test_bad_rows_raise_naming_row_and_key(tmp_path, tiny_tokenizer, rows, message):
    with pytest.raises(DatasetFormatError, match=message):
        tokenize_dataset(write_rows(tmp_path / "bad.jsonl", rows), tiny_tokenizer, 64)


def test_bad_rows_skipped_and_counted_when_asked(tmp_path, tiny_tokenizer):
    rows = [
        {"prompt": "the movie", "completion": " was great"},
        {"prompt": "x", "completion": ""},
        {"prompt": "y", "completion": None},
        {"prompt": "a film", "completion": " bored me"},
    ]
    dataset, report = tokenize_dataset(
        write_rows(tmp_path / "d.jsonl", rows), tiny_tokenizer, 64, skip_bad_rows=True
    )
    assert len(dataset) == 2
    assert report.rows_in == 4 and report.rows_kept == 2 and report.skipped == {"bad 'completion'": 2}
    assert "2/4 rows used" in report.summary()


def test_rows_over_max_length_are_counted(tmp_path, tiny_tokenizer):
    long_completion = " the movie was wonderful and the acting was great" * 3
    rows = [
        {"prompt": "a dull film", "completion": " with bad acting"},
        {"prompt": "i loved", "completion": long_completion},
        {"prompt": "the worst movie i have seen in years " * 4, "completion": " truly"},
    ]
    path = write_rows(tmp_path / "d.jsonl", rows)
    dataset, report = tokenize_dataset(path, tiny_tokenizer, max_length=24, overlong="truncate")
    assert report.truncated == 1 and report.skipped == {"prompt fills max_length": 1}
    assert max(len(ids) for ids in dataset["input_ids"]) == 24
    _, report = tokenize_dataset(path, tiny_tokenizer, max_length=24, overlong="skip")
    assert report.rows_kept == 1 and report.skipped == {"over max_length": 2}
    with pytest.raises(DatasetFormatError, match=r"row 2: \d+ tokens, over max_length=24"):
        tokenize_dataset(path, tiny_tokenizer, max_length=24, overlong="error")
