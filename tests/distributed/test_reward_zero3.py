"""Stage 2 under DeepSpeed ZeRO-3 with 2 processes: the real entry point, launched with the shipped config."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ACCELERATE = str(Path(sys.executable).parent / "accelerate")
sys.path.insert(0, str(REPO / "tests" / "stages"))


@pytest.mark.distributed
def test_reward_trains_under_zero3_with_two_processes(tmp_path, tiny_model_dir):
    from test_reward import write_fake_snippets

    out = tmp_path / "rm"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            ACCELERATE,
            "launch",
            "--config_file",
            "configs/accelerate/zero3.yaml",
            "scripts/reward_modeling.py",
            "--config",
            "configs/reward/tiny.yaml",
            "--model",
            str(tiny_model_dir),
            "--snippets_file",
            str(write_fake_snippets(tmp_path / "s.jsonl")),
            "--output_dir",
            str(out),
            "--max_train_pairs",
            "128",
            "--max_eval_pairs",
            "64",
            "--max_steps",
            "6",
            "--logging_steps",
            "2",
            "--per_device_train_batch_size",
            "8",
            "--learning_rate",
            "3e-3",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "loss" in r]) >= 3 and any("eval_pairwise_accuracy" in r for r in rows)
    stats = json.loads((out / "model" / "reward_stats.json").read_text())
    assert stats["std"] > 0 and 0 <= stats["eval_accuracy"] <= 1
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1

    from reward.model import load_reward_model, score_texts

    model, tokenizer = load_reward_model(str(out / "model"))  # ZeRO-3 gathered full weights on save
    assert score_texts(model, tokenizer, ["a good film", "a bad film"]).shape == (2,)
