"""SIGKILL a real PPO process mid-run, run the same command again: the resumed run's steps equal an unbroken run's.

Single process and 2-process ZeRO-2, with sampling on (temperature 1), so the comparison also checks that
every process's random-number state came back. The kill lands right after a checkpoint is published, while
the next step (and perhaps the next checkpoint's save) is under way; the rerun must neither fail nor redo
a finished step. Launches: 2 single-process, 3 under ZeRO-2 (about 90 s on 2 CPU cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignment.core.logging import read_metrics

REPO = Path(__file__).resolve().parents[2]
KEYS = ("loss", "policy_loss", "value_loss", "reward/mean", "kl", "response/length", "entropy")


def ppo_args(model_dir: Path, prompts: Path, out: Path) -> list[str]:
    return [
        f"--model={model_dir}",
        "--reward_model=null",
        "--reward_fn=vader",
        f"--train_data={prompts}",
        "--eval_data=null",
        "--batch_size=8",
        "--mini_batch_size=4",
        "--ppo_epochs=2",
        "--max_new_tokens=8",
        "--temperature=1.0",
        "--learning_rate=1e-3",
        "--max_steps=6",
        "--save_steps=1",
        "--save_total_limit=3",
        "--value_model=policy_head",
        "--value_head_init=fresh",
        "--progress_bar=false",
        "--sample_steps=0",
        f"--output_dir={out}",
    ]


def launch(command: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: int = 400) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def kill_after_checkpoint(process: subprocess.Popen, out: Path, step: int) -> None:
    """SIGKILL the whole process group as soon as checkpoint-<step> is in place."""
    deadline = time.time() + 400
    while not (out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").exists():
        assert process.poll() is None, process.stdout.read()[-4000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def same_steps(resumed: Path, unbroken: Path) -> None:
    a = {r["step"]: r for r in read_metrics(unbroken) if "loss" in r}
    b = {r["step"]: r for r in read_metrics(resumed) if "loss" in r}
    assert sorted(b) == list(range(1, 7)) and sorted(a) == list(range(1, 7))
    for step in range(1, 7):
        for key in KEYS:
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-5, abs=1e-6), (step, key)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kill") / "prompts.jsonl"
    words = [
        "the movie was",
        "a dull film",
        "i loved every",
        "the worst movie",
        "an excellent cast",
        "boring slow",
    ]
    path.write_text("".join(json.dumps({"prompt": w}) + "\n" for w in words * 2))
    return path


@pytest.mark.distributed
@pytest.mark.parametrize("strategy", ["single", "zero2"])
def test_sigkill_then_rerun_matches_an_unbroken_run(strategy, tiny_model_dir, prompts, tmp_path):
    if strategy == "single":
        base = [sys.executable, "-m", "alignment.cli", "ppo"]
    else:
        base = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            "configs/accelerate/zero2.yaml",
        ]
        base += ["scripts/ppo.py"]
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    first = launch([*base, *ppo_args(tiny_model_dir, prompts, unbroken)])
    if strategy == "zero2":
        finish(first)  # two 2-process launches at once would not fit 2 cores
        first = None
    victim = launch([*base, *ppo_args(tiny_model_dir, prompts, broken)])
    kill_after_checkpoint(victim, broken, step=2)
    output = finish(launch([*base, *ppo_args(tiny_model_dir, prompts, broken)]))
    assert "resuming from" in output and "checkpoint-" in output
    if first is not None:
        finish(first)
    same_steps(broken, unbroken)
    assert (broken / "model" / "model.safetensors").exists()
