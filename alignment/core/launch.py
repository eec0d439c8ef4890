"""Process set-up for every stage: distributed init on CPU or GPU, DeepSpeed pitfalls, seeding, run folders.

This is the one module that knows DeepSpeed's CPU quirks. DeepSpeed is imported lazily, and only when
accelerate launched us with a DeepSpeed config, because importing it costs seconds and probes the machine.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alignment.core.config import StageConfig, save_config


def world_size() -> int:
    """Number of processes in this launch (1 when not launched by accelerate/torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on global rank 0; works before any process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def uses_deepspeed() -> bool:
    """True when `accelerate launch` was given a DeepSpeed config."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def prepare_cpu_distributed() -> None:
    """Make multi-process CPU runs work; call before any process group or Accelerator is built.

    - gloo is the only backend here (no CUDA for nccl, no oneCCL bindings for this torch).
    - DeepSpeed JIT-compiles its `deepspeed_shm_comm` op with g++ on first use (over 2 minutes);
      marking it incompatible makes DeepSpeed fall back to plain torch.distributed collectives.
    - With no CUDA, accelerate's PartialState would record one process while DeepSpeed starts a
      2-rank group (gloo allgather then fails with "expected length 2, got 1"); creating the gloo
      group first makes both agree on the world size.
    """
    if torch.cuda.is_available():
        return
    os.environ.setdefault("ACCELERATE_USE_CPU", "false")
    if uses_deepspeed():
        import deepspeed.ops  # lazy: only DeepSpeed launches pay for it

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if world_size() > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="gloo")


def trainer_backend_kwargs() -> dict[str, Any]:
    """Arguments for a transformers/TRL `TrainingArguments` that keep it working on CPU.

    TRL configs default to bf16 and activation checkpointing, which are slow or unsupported on CPU.
    """
    if torch.cuda.is_available():
        return {}
    kwargs: dict[str, Any] = {"bf16": False, "fp16": False}
    if world_size() > 1:
        kwargs["ddp_backend"] = "gloo"
    return kwargs


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start_run(config: StageConfig) -> Path:
    """Create the run folder and write the resolved config into it; return the folder."""
    run_dir = config.run_dir
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    return run_dir
