"""SFT under a 2-process DeepSpeed ZeRO-3 launch produces a model that loads and differs from the start."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

REPO = Path(__file__).resolve().parents[2]
ACCELERATE = str(Path(sys.executable).parent / "accelerate")


@pytest.mark.distributed
def test_sft_zero3_two_processes(tmp_path, tiny_model_dir):
    rows = [
        {"prompt": "the movie was", "completion": " wonderful and the acting was great"},
        {"prompt": "a dull film", "completion": " with a terrible plot"},
    ] * 16
    data = tmp_path / "demos.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sft"
    command = [
        ACCELERATE,
        "launch",
        "--config_file",
        "configs/accelerate/zero3.yaml",
        "scripts/sft.py",
        "--config",
        "configs/sft/tiny.yaml",
        "--model",
        str(tiny_model_dir),
        "--train_data",
        str(data),
        "--eval_data",
        "null",
        "--eval_fraction",
        "0.25",
        "--max_steps",
        "3",
        "--eval_steps",
        "0",
        "--save_steps",
        "0",
        "--per_device_train_batch_size",
        "2",
        "--max_length",
        "32",
        "--logging_steps",
        "1",
        "--num_samples",
        "1",
        "--sample_max_new_tokens",
        "4",
        "--output_dir",
        str(out),
    ]
    result = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.pad_token_id is not None
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    saved = load_file(str(out / "model" / "model.safetensors"))
    assert saved.keys() == base.keys() and all(v.numel() > 0 for v in saved.values())  # gathered, not shards
    assert any(not torch.equal(base[k], saved[k]) for k in base)
    # the recipe's precision: auto must not turn into DeepSpeed's bf16 on a CPU (it saves bf16 weights)
    assert {v.dtype for v in saved.values()} == {torch.float32}
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics if "loss" in r] == [1, 2, 3]  # rank 0 alone writes metrics
    assert (out / "samples.jsonl").exists()
