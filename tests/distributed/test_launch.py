"""The shipped accelerate configs really start 2 processes on CPU, and DDP, ZeRO-2 and ZeRO-3 train."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ACCELERATE = str(Path(sys.executable).parent / "accelerate")


@pytest.mark.distributed
@pytest.mark.parametrize(
    "strategy,expected_type",
    [
        ("ddp", "MULTI_CPU"),
        ("zero2", "DEEPSPEED"),
        ("zero3", "DEEPSPEED"),
    ],
)
def test_two_process_training_step(strategy, expected_type, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            ACCELERATE,
            "launch",
            "--config_file",
            f"configs/accelerate/{strategy}.yaml",
            "tests/distributed/train_step.py",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(path.read_text()) for path in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    for report in reports:
        assert report["world_size"] == 2
        assert report["distributed_type"].endswith(expected_type)
        assert report["losses"][-1] < report["losses"][0]
