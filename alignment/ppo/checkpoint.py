"""Atomic PPO checkpoints and exact resume.

A checkpoint folder `<run_dir>/checkpoints/step-000012/` holds what `accelerator.save_state` writes (policy
and value model weights, optimizer state, per-process RNG states; under DeepSpeed its sharded engine files)
plus `trainer_state.json` (step = data position, KL controller). It is written to a temporary folder and
renamed into place, so a run killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
PREFIX = "step-"


def checkpoints_dir(run_dir: str | Path) -> Path:
    """Where a run's checkpoints live."""
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (highest step), or None."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return None
    done = [p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return max(done, key=lambda p: int(p.name[len(PREFIX) :]), default=None)


def save_checkpoint(
    accelerator: Any, run_dir: str | Path, step: int, state: dict[str, Any], keep: int
) -> Path:
    """Save on every process (a collective), publish atomically from the main one, keep the `keep` newest."""
    folder = checkpoints_dir(run_dir)
    final = folder / f"{PREFIX}{step:06d}"
    tmp = folder / f".tmp-{PREFIX}{step:06d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        older = sorted(
            (p for p in folder.iterdir() if p.name.startswith(PREFIX) and p != final),
            key=lambda p: int(p.name[len(PREFIX) :]),
        )
        if keep > 0:  # 0 keeps every checkpoint
            for stale in older[: max(0, len(older) - (keep - 1))]:
                shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: str | Path) -> dict[str, Any]:
    """Restore weights, optimizer and RNG states on every process; return the trainer state (step, ...)."""
    accelerator.load_state(str(path))
    return json.loads((Path(path) / STATE_FILE).read_text())
