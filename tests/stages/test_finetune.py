"""The fine-tuning stage end to end through its real entry point, on tiny BERT, T5 and GPT-2 models:
losses fall, the saved classifier reads like the trained one, the run resumes exactly, and the compare
command writes its table and plot."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from finetune_helpers import build_tiny_bert, build_tiny_t5, pair_rows, sentiment_rows, write_jsonl
from safetensors.torch import load_file

from alignment.core.errors import ConfigError
from alignment.core.judges import load_judge
from alignment.core.logging import read_metrics
from alignment.finetune.compare import Config as CompareConfig
from alignment.finetune.compare import run as run_compare
from alignment.finetune.train import main


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune-backbones")
    return {"bert": build_tiny_bert(folder / "bert"), "t5": build_tiny_t5(folder / "t5")}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune-data")
    ratings = [
        {"text": r["text"], "label": 2.0 if r["label"] == "positive" else -2.0} for r in sentiment_rows()
    ]
    choices = [
        {"text": r["text"], "choices": ["so good", "so bad"], "label": 0 if r["label"] == "positive" else 1}
        for r in sentiment_rows()
    ]
    return {
        "labels": write_jsonl(folder / "labels.jsonl", sentiment_rows()),
        "pairs": write_jsonl(folder / "pairs.jsonl", pair_rows()),
        "ratings": write_jsonl(folder / "ratings.jsonl", ratings),
        "choices": write_jsonl(folder / "choices.jsonl", choices),
    }


def finetune(model, data, out, *extra):
    main(
        ["--model", str(model), "--dataset", "files", "--train_data", data, "--output_dir", str(out)]
        + ["--max_length", "32", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3"]
        + ["--logging_steps", "2", "--max_steps", "24", "--save_steps", "0", "--warmup_ratio", "0", *extra]
    )
    return json.loads((out / "results.json").read_text())


def losses(out, key="loss"):
    return [row[key] for row in read_metrics(out) if key in row and "train_loss" not in row]


def test_tiny_bert_pairs_train_with_falling_loss(backbones, files, tmp_path):
    out = tmp_path / "bert"
    results = finetune(backbones["bert"], files["pairs"], out, "--layer_lr_decay", "0.8")
    curve = losses(out)
    assert curve[-1] < curve[0], curve
    assert results["kind"] == "encoder" and {"accuracy", "macro_f1", "mcc", "confusion"} <= set(
        results["model"]
    )
    assert results["baseline_name"] == "TF-IDF logistic regression" and "accuracy" in results["baseline"]
    assert (out / "report.md").read_text().count("| accuracy |") == 1
    assert (out / "model" / "README.md").is_file() and (out / "model" / "tokenizer.json").is_file()


def test_tiny_t5_text_to_text_trains_and_generates(backbones, files, tmp_path):
    out = tmp_path / "t5"
    results = finetune(
        backbones["t5"],
        files["labels"],
        out,
        "--task",
        "text_to_text",
        "--lr_scheduler_type",
        "slanted_triangular",
    )
    curve = losses(out)
    assert curve[-1] < curve[0], curve
    assert (
        results["kind"] == "seq2seq"
        and "exact_match" in results["model"]
        and "invalid_answers" in results["model"]
    )


@pytest.mark.parametrize("lm_loss_weight", [0.5, 0.0])
def test_gpt_classifier_with_and_without_the_lm_loss(tiny_model_dir, files, tmp_path, lm_loss_weight):
    out = tmp_path / f"gpt-{lm_loss_weight}"
    results = finetune(tiny_model_dir, files["labels"], out, "--lm_loss_weight", str(lm_loss_weight))
    task_curve = losses(out, "task_loss")
    assert task_curve[-1] < task_curve[0], task_curve
    assert bool(losses(out, "lm_loss")) == (lm_loss_weight > 0)
    # The saved model is a plain sequence classifier that reads the same last token the trained wrapper read.
    judge = load_judge(f"classifier:{out / 'model'}")
    texts = [json.loads(line)["text"] for line in open(files["labels"])][:4]
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    with torch.no_grad():
        direct = [
            torch.softmax(model(**tokenizer(t, return_tensors="pt")).logits, -1)[0, 1].item() for t in texts
        ]
    assert judge.score_texts(texts) == pytest.approx(direct, abs=1e-5)
    assert results["model"]["accuracy"] >= 0.5


def test_regression_and_multiple_choice(backbones, tiny_model_dir, files, tmp_path):
    regression = finetune(backbones["bert"], files["ratings"], tmp_path / "reg", "--task", "regression")
    assert {"pearson", "spearman", "mse"} <= set(regression["model"]) and regression[
        "baseline_name"
    ] == "bag-of-words ridge"
    choice = finetune(
        tiny_model_dir, files["choices"], tmp_path / "mc", "--task", "multiple_choice", "--max_steps", "4"
    )
    assert "accuracy" in choice["model"] and choice["baseline_name"] == "majority answer"
    with pytest.raises(SystemExit) as exit_info:
        finetune(backbones["bert"], files["choices"], tmp_path / "bad", "--task", "multiple_choice")
    assert exit_info.value.code == 2


def test_resume_continues_exactly(backbones, files, tmp_path):
    full = tmp_path / "full"
    finetune(backbones["bert"], files["labels"], full, "--max_steps", "8", "--save_steps", "4")
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    shutil.rmtree(resumed / "model")
    shutil.rmtree(resumed / "checkpoints" / "checkpoint-8")
    finetune(backbones["bert"], files["labels"], resumed, "--max_steps", "8", "--save_steps", "4")
    a, b = (
        load_file(str(full / "model" / "model.safetensors")),
        load_file(str(resumed / "model" / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_compare_writes_one_table_and_plot(backbones, files, tmp_path, monkeypatch):
    base = tmp_path / "base.yaml"
    base.write_text(
        f"model: {backbones['bert']}\ndataset: files\ntrain_data: {files['labels']}\nmax_length: 32\n"
        "max_steps: 3\nper_device_train_batch_size: 8\nsave_steps: 0\n"
    )
    config = CompareConfig(
        output_dir=str(tmp_path / "compare"),
        base_recipe=str(base),
        methods={"full": {}, "bitfit": {"peft": "bitfit", "learning_rate": 1e-2}},
        isolate=False,  # in this process: a fresh interpreter per method costs seconds each
    )
    rows = run_compare(config)
    assert (
        list(rows) == ["full", "bitfit"]
        and rows["bitfit"]["trainable_params"] < rows["full"]["trainable_params"]
    )
    report = (tmp_path / "compare" / "report.md").read_text()
    assert "| bitfit |" in report and (tmp_path / "compare" / "comparison.png").stat().st_size > 0
    with pytest.raises(ConfigError, match="methods.broken"):
        run_compare(
            CompareConfig(
                output_dir=str(tmp_path / "c2"),
                base_recipe=str(base),
                methods={"broken": {"peft": "adapters"}},
            )
        )
