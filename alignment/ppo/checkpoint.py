"""Atomic PPO checkpoints and exact resume.

A checkpoint `<run_dir>/checkpoints/checkpoint-<step>/` holds what `accelerator.save_state` writes (policy
and value model weights, optimizer state, every process's RNG state; under DeepSpeed its sharded engine
files) plus `trainer_state.json` (the step, which is also the data position, and the KL controller). It is
written under a temporary name and renamed into place, so a run killed mid-save keeps the previous one;
`alignment.core.runs.latest_checkpoint` finds the newest complete one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignment.core.runs import CHECKPOINT_PREFIX, STATE_FILE, checkpoint_dir, checkpoint_step


def save_checkpoint(
    accelerator: Any,
    run_dir: str | Path,
    step: int,
    state: dict[str, Any],
    keep: int,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Save on every process (a collective), publish from the main one, keep the `keep` newest (0: all).

    `write_extra(folder)` adds files of the caller's own on the main process before the checkpoint is published.
    """
    folder = checkpoint_dir(run_dir)
    final = folder / f"{CHECKPOINT_PREFIX}{step}"
    tmp = folder / f".tmp-{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "world_size": accelerator.num_processes, **state}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        if write_extra is not None:
            write_extra(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        older = sorted(
            (p for p in folder.iterdir() if checkpoint_step(p) is not None and p != final),
            key=checkpoint_step,
        )
        if keep > 0:
            for stale in older[: max(0, len(older) - (keep - 1))]:
                shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: str | Path) -> dict[str, Any]:
    """Restore weights, optimizer and RNG states on every process; return the trainer state (step, ...)."""
    accelerator.load_state(str(path))
    return json.loads((Path(path) / STATE_FILE).read_text())
