"""The SFT stage end to end on the tiny model: trains, evaluates, samples, saves, resumes exactly, merges LoRA."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.core.logging import read_metrics
from alignment.sft.train import main

DEMOS = [
    ("the movie was", " wonderful and the acting was great"),
    ("a dull film", " with a terrible plot and bad acting"),
    ("i loved every", " minute of this charming story"),
    ("the worst movie", " i have seen in years"),
    ("an excellent cast", " makes this a delightful comedy"),
    ("boring slow and", " far too long"),
]
OVERLONG = ("happy people tell", " good stories about good days" * 12)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sft-data")
    rows = DEMOS * 10 + [OVERLONG]
    (folder / "train.jsonl").write_text(
        "".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in rows)
    )
    (folder / "heldout.jsonl").write_text(
        "".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in DEMOS)
    )
    return folder


def args(model_dir, data, out, *extra):
    return [
        "--model",
        str(model_dir),
        "--train_data",
        str(data / "train.jsonl"),
        "--output_dir",
        str(out),
        "--max_length",
        "32",
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "3e-3",
        "--logging_steps",
        "2",
        *extra,
    ]


def weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_sft_trains_evaluates_samples_and_saves(tmp_path, tiny_model_dir, data):
    out = tmp_path / "sft"
    main(
        args(
            tiny_model_dir,
            data,
            out,
            "--eval_data",
            str(data / "heldout.jsonl"),
            "--max_steps",
            "24",
            "--eval_steps",
            "12",
            "--num_samples",
            "2",
            "--sample_max_new_tokens",
            "8",
        )
    )
    rows = read_metrics(out)
    losses = [r["loss"] for r in rows if "loss" in r]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert len(losses) >= 5 and len(evals) >= 3  # before training, at step 12, at step 24 (+ final)
    assert evals[-1] < evals[0] - 0.5, evals  # held-out loss falls
    assert any("eval_perplexity" in r for r in rows)
    data_row = next(r for r in rows if "data/train/truncated" in r)
    assert data_row["data/train/truncated"] == 1 and data_row["data/train/rows_kept"] == len(DEMOS) * 10 + 1
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["tag"] for s in samples} == {"eval_sample/0", "eval_sample/1"} and len(samples) >= 6
    assert any(list((out / "tensorboard").iterdir()))

    model_dir = out / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.chat_template and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    base = weights(tiny_model_dir)
    assert any(not torch.equal(base[k], v) for k, v in weights(model_dir).items())
    card = (model_dir / "README.md").read_text()
    assert "1 truncated to max_length" in card and "eval_loss" in card


def test_resume_continues_exactly(tmp_path, tiny_model_dir, data, capsys):
    out = tmp_path / "sft"
    common = [
        "--eval_data",
        "null",
        "--eval_fraction",
        "0",
        "--max_steps",
        "6",
        "--save_steps",
        "3",
        "--num_samples",
        "0",
    ]
    main(args(tiny_model_dir, data, out, *common))
    uninterrupted = weights(out / "model")
    # Simulate a crash right after the step-3 checkpoint: later checkpoints and the final model never existed.
    shutil.rmtree(out / "checkpoints" / "checkpoint-6")
    shutil.rmtree(out / "model")
    (out / "checkpoints" / "checkpoint-5").mkdir()  # a half-written checkpoint (no trainer state) is ignored
    capsys.readouterr()
    main(args(tiny_model_dir, data, out, *common))
    assert "resuming from " + str(out / "checkpoints" / "checkpoint-3") in capsys.readouterr().out
    resumed = weights(out / "model")
    for key, value in uninterrupted.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6)
    steps = [r["step"] for r in read_metrics(out) if "loss" in r]
    assert steps == [1, 2, 4, 6]  # the resumed run did not redo steps 1-3, and steps 4-6 are logged once


def test_lora_is_merged_into_a_plain_model(tmp_path, tiny_model_dir, data):
    out = tmp_path / "sft"
    main(
        args(
            tiny_model_dir,
            data,
            out,
            "--eval_data",
            "null",
            "--eval_fraction",
            "0.1",
            "--eval_steps",
            "0",
            "--max_steps",
            "4",
            "--peft",
            "lora",
            "--num_samples",
            "1",
            "--sample_max_new_tokens",
            "4",
        )
    )
    saved = weights(out / "model")
    assert not any("lora" in key or "base_layer" in key for key in saved)
    assert not (out / "model" / "adapter_config.json").exists()
    base = weights(tiny_model_dir)
    changed = {k for k in base if not torch.equal(base[k], saved[k])}
    assert changed and all(".attn.c_attn." in k for k in changed)  # only LoRA's targets moved
    AutoModelForCausalLM.from_pretrained(out / "model")
