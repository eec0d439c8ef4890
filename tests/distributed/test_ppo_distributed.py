"""PPO under 2-process DDP, ZeRO-2 and ZeRO-3 gives the losses of a single process with the same global batch.

Greedy decoding with a fixed response length makes the rollouts identical however the batch is split,
so step 1 checks the forward passes (sharded reference and reward model under ZeRO-3, gathered generation)
and step 2 checks that gradients were averaged across processes exactly like one big batch.
Each launch costs 15-60 s on 2 CPU cores: one per strategy, nothing else.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignment.core.config import build_config
from alignment.core.logging import read_metrics
from alignment.ppo.config import Config

REPO = Path(__file__).resolve().parents[2]
PROMPTS = [
    "the movie was",
    "a dull film",
    "i loved every",
    "the worst movie",
    "an excellent cast",
    "boring slow",
    "happy people tell",
    "sad news came",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    from reward.model import build_reward_model

    folder = tmp_path_factory.mktemp("ppo-dist")
    with (folder / "prompts.jsonl").open("w") as f:
        for prompt in PROMPTS:
            f.write(json.dumps({"prompt": prompt}) + "\n")
    torch.manual_seed(0)
    rm, rm_tokenizer = build_reward_model(str(tiny_model_dir))
    rm.save_pretrained(folder / "rm")
    rm_tokenizer.save_pretrained(folder / "rm")
    (folder / "rm" / "reward_stats.json").write_text(
        json.dumps({"mean": 0.1, "std": 0.5, "eval_accuracy": 0.6})
    )
    overrides = {
        "model": str(tiny_model_dir),
        "reward_model": str(folder / "rm"),
        "train_data": str(folder / "prompts.jsonl"),
        "eval_data": None,
        "batch_size": 8,
        "mini_batch_size": 8,
        "ppo_epochs": 1,
        "max_steps": 2,
        "max_new_tokens": 8,
        "min_new_tokens": 8,
        "temperature": 0.0,
        "learning_rate": 1e-3,
        "value_model": "separate",
        "progress_bar": False,
    }
    single = folder / "single"
    from alignment.ppo.train import run

    run(build_config(Config, {**overrides, "output_dir": str(single)}))
    return folder, overrides, read_metrics(single)


@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["ddp", "zero2", "zero3"])
def test_two_processes_match_one(setup, strategy):
    folder, overrides, single_rows = setup
    out = folder / strategy
    args = [f"--{k}={'null' if v is None else v}" for k, v in overrides.items()]
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        f"configs/accelerate/{strategy}.yaml",
        "scripts/ppo.py",
        f"--output_dir={out}",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 process(es)" in result.stdout + result.stderr
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    for mine, theirs in zip(rows, single_rows):
        for key in ("loss", "value_loss", "reward/mean", "score/raw_mean", "kl"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-5), (strategy, mine["step"], key)
    assert (out / "model" / "model.safetensors").exists()
    assert (out / "value_model" / "value_head.safetensors").exists()
