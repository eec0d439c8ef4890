"""The pretrain stage end to end with very small models: causal LM, masked LM, span corruption, resume."""

from __future__ import annotations

import json
import math
import os
import random
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignment.core.config import ConfigError, build_config
from alignment.core.logging import read_metrics
from alignment.pretrain.train import Config, run

REPO = Path(__file__).resolve().parents[2]
NOUNS = ["movie", "film", "cast", "story", "plot", "actor", "scene", "ending"]
ADJECTIVES = ["great", "dull", "charming", "terrible", "slow", "funny", "sad", "bright"]
VERBS = ["was", "felt", "seemed", "became"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A small JSONL text corpus with learnable structure: short templated review sentences."""
    rng = random.Random(0)
    rows = []
    for _ in range(400):
        sentence = (
            f"the {rng.choice(NOUNS)} {rng.choice(VERBS)} {rng.choice(ADJECTIVES)} "
            f"and the {rng.choice(NOUNS)} {rng.choice(VERBS)} {rng.choice(ADJECTIVES)} ."
        )
        rows.append({"text": sentence})
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny(corpus: Path, out: Path, **overrides) -> Config:
    values = dict(
        train_data=str(corpus),
        eval_data=None,
        eval_fraction=0.1,
        output_dir=str(out),
        vocab_size=512,
        n_layer=1,
        d_model=32,
        n_head=2,
        block_size=32,
        per_device_train_batch_size=4,
        max_steps=30,
        warmup_ratio=0.1,
        learning_rate=1e-2,
        eval_steps=10,
        save_steps=10,
        logging_steps=5,
        max_eval_blocks=8,
        num_samples=2,
        sample_max_new_tokens=8,
    )
    values.update(overrides)
    return build_config(Config, values)


def _eval_losses(run_dir: Path) -> list[float]:
    return [row["eval_loss"] for row in read_metrics(run_dir) if "eval_loss" in row and not row.get("final")]


def test_causal_lm_trains_and_saves_a_loadable_model(corpus, tmp_path):
    from alignment.core.models import load_causal_lm, load_tokenizer

    out = tmp_path / "clm"
    metrics = run(tiny(corpus, out))
    rows = read_metrics(out)
    assert any("loss" in row for row in rows) and any("eval_loss" in row for row in rows)
    losses = _eval_losses(out)
    assert losses[-1] < losses[0] - 0.5
    # The model learned more than word frequencies, and all the reported numbers are there.
    assert metrics["perplexity"] < 0.5 * metrics["unigram_perplexity"]
    assert metrics["tokens_per_second"] > 0 and 0 < metrics["mfu"] < 1
    final = [row for row in rows if row.get("final")]
    assert final and final[0]["perplexity"] == pytest.approx(metrics["perplexity"])
    assert any(row.get("eval_perplexity") for row in rows)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} >= {10, 20, 30} and all("|" in s["text"] for s in samples)
    assert any((out / "tensorboard").iterdir())

    tokenizer = load_tokenizer(str(out / "model"))
    model = load_causal_lm(str(out / "model"), tokenizer)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id and tokenizer.chat_template
    assert model.config.n_layer == 1 and model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert "unigram" in (out / "model" / "README.md").read_text()
    # The parameters moved away from a fresh initialization with the same seed.
    torch.manual_seed(42)
    from alignment.pretrain.train import build_model

    fresh = build_model(tiny(corpus, tmp_path / "unused"), tokenizer)
    assert not torch.allclose(fresh.transformer.h[0].mlp.c_fc.weight, model.transformer.h[0].mlp.c_fc.weight)


def test_masked_lm_heldout_loss_falls(corpus, tmp_path):
    from transformers import AutoModelForMaskedLM

    out = tmp_path / "mlm"
    metrics = run(tiny(corpus, out, objective="masked_lm", architecture="bert", d_model=64, n_head=2))
    losses = _eval_losses(out)
    assert losses[-1] < losses[0] - 0.3
    assert metrics["perplexity"] < metrics["unigram_perplexity"]
    assert AutoModelForMaskedLM.from_pretrained(out / "model").config.model_type == "bert"


def test_span_corruption_heldout_loss_falls(corpus, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    out = tmp_path / "t5"
    metrics = run(tiny(corpus, out, objective="span_corruption", architecture="t5"))
    losses = _eval_losses(out)
    assert losses[-1] < losses[0] - 0.3
    assert metrics["eval_loss"] == pytest.approx(losses[-1])
    model = AutoModelForSeq2SeqLM.from_pretrained(out / "model")
    assert model.config.decoder_start_token_id == model.config.pad_token_id


def test_resume_after_kill_matches_uninterrupted_run(corpus, tmp_path):
    # Dropout on, so the restored RNG state matters as much as the data order and the LR schedule.
    settings = dict(max_steps=12, save_steps=6, eval_steps=6, logging_steps=1, dropout=0.1, warmup_ratio=0.1)
    full, parts = tmp_path / "full", tmp_path / "parts"
    run(tiny(corpus, full, **settings))
    stopped = run(tiny(corpus, parts, stop_after_step=6, **settings))
    assert stopped == {"stopped_at_step": 6} and not (parts / "model").exists()
    assert (parts / "checkpoints" / "checkpoint-6" / "trainer_state.json").exists()
    run(tiny(corpus, parts, **settings))  # resume="auto" picks up checkpoint-6

    def curve(run_dir):
        return {r["step"]: (r["loss"], r["learning_rate"]) for r in read_metrics(run_dir) if "loss" in r}

    full_curve, resumed_curve = curve(full), curve(parts)
    assert sorted(resumed_curve) == list(range(1, 13))
    for step in range(7, 13):
        assert resumed_curve[step][1] == pytest.approx(full_curve[step][1], rel=1e-9)
        assert resumed_curve[step][0] == pytest.approx(full_curve[step][0], rel=1e-5)
    with pytest.raises(ConfigError, match="learning_rate"):  # checkpoints of another config are not resumed
        run(tiny(corpus, parts, **{**settings, "learning_rate": 1e-3}))
    full_weights = load_file(full / "model" / "model.safetensors")
    resumed_weights = load_file(parts / "model" / "model.safetensors")
    for name, tensor in full_weights.items():
        assert torch.allclose(tensor, resumed_weights[name], atol=1e-6), name


def test_time_limit_stops_early_and_still_saves(corpus, tmp_path):
    out = tmp_path / "timed"
    metrics = run(tiny(corpus, out, max_steps=500, max_time_minutes=0.0001, eval_on_start=False))
    assert metrics["stopped_by_time_limit"] and metrics["steps"] < 500
    assert (out / "model" / "model.safetensors").exists()
    assert (out / "checkpoints" / f"checkpoint-{metrics['steps']}" / "trainer_state.json").exists()


def test_config_errors_name_the_key(corpus, tmp_path):
    with pytest.raises(ConfigError, match="architecture"):
        tiny(corpus, tmp_path, objective="masked_lm", architecture="gpt2")
    with pytest.raises(ConfigError, match="n_head"):
        tiny(corpus, tmp_path, d_model=30, n_head=4)
    with pytest.raises(ConfigError, match="stop_after_step"):
        tiny(corpus, tmp_path, stop_after_step=99)


def test_script_help_lists_options(monkeypatch, capsys):
    # In-process: the script is thin, so running it as __main__ exercises the real entry point.
    monkeypatch.setattr(sys, "argv", ["pretrain.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "scripts" / "pretrain.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--objective" in out and "--max_time_minutes" in out


@pytest.mark.distributed
def test_ddp_launch_trains_two_ranks_in_step(corpus, tmp_path):
    out = tmp_path / "ddp"
    command = [
        str(REPO / ".venv" / "bin" / "accelerate"), "launch", "--config_file", "configs/accelerate/ddp.yaml",
        "scripts/pretrain.py", "--train_data", str(corpus), "--eval_data", "null", "--output_dir", str(out),
        "--n_layer", "1", "--d_model", "32", "--n_head", "2", "--block_size", "32", "--per_device_train_batch_size", "4",
        "--max_steps", "6", "--warmup_ratio", "0.1", "--eval_steps", "3", "--save_steps", "3", "--logging_steps", "1",
        "--max_eval_blocks", "8", "--sample_max_new_tokens", "4",
        "--max_time_minutes", "60",  # runs the ranks' agreement on the deadline at every step
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(out)
    final = [row for row in rows if row.get("final")][0]
    assert final["train_tokens"] == 6 * 4 * 2 * 32  # both ranks' batches count in every step
    # A correct all-reduce keeps the loss a per-token mean: it starts near ln(vocab), not at twice that.
    first_eval = next(row["eval_loss"] for row in rows if "eval_loss" in row)
    assert first_eval < 1.2 * math.log(512)  # the vocabulary has at most 512 tokens
    assert (out / "model" / "model.safetensors").exists()
