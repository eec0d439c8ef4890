"""Process set-up for every stage: distributed init on CPU or GPU, DeepSpeed pitfalls, seeding, run folders.

This is the one module that knows DeepSpeed's CPU quirks. DeepSpeed is imported lazily, and only when
accelerate launched us with a DeepSpeed config, because importing it costs seconds and probes the machine.
"""

from __future__ import annotations

import copy
import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import numpy as np
import torch

from alignment.core.runs import is_main_process, world_size

__all__ = ["is_main_process", "world_size"]  # re-exported: the process facts every launch-aware module reads


def uses_deepspeed() -> bool:
    """True when `accelerate launch` was given a DeepSpeed config."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def prepare_cpu_distributed() -> None:
    """Make multi-process CPU runs work; call before any process group or Accelerator is built.

    - gloo is the only backend here (no CUDA for nccl, no oneCCL bindings for this torch).
    - DeepSpeed JIT-compiles its `deepspeed_shm_comm` op with g++ on first use (over 2 minutes);
      marking it incompatible makes DeepSpeed fall back to plain torch.distributed collectives.
    - With no CUDA, accelerate's PartialState finds no backend: under DeepSpeed it records one process
      while DeepSpeed starts a 2-rank group (gloo allgather then fails with "expected length 2, got 1"),
      and without DeepSpeed each process trains alone. Building the shared state first with gloo (and
      `cpu=True` outside DeepSpeed) makes accelerate, DeepSpeed and the Trainer agree on the world size.
    """
    if torch.cuda.is_available():
        return
    set_cpu_threads()
    from accelerate import PartialState

    if uses_deepspeed():
        import deepspeed.ops  # lazy: only DeepSpeed launches pay for it

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        if world_size() > 1:
            PartialState(backend="gloo")
    elif world_size() > 1:
        PartialState(cpu=True)


def set_cpu_threads() -> int:
    """Give each process its share of the cores: cores // processes on this machine (OMP_NUM_THREADS wins).

    torch starts every process with one thread per core, so N processes on a machine run N x cores threads;
    OpenMP regions with more threads than free cores stall on each other (measured in STACK-NOTES: a small
    matmul 66x slower with 2 threads at load 4 than with 1).
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
    threads = max(1, (os.cpu_count() or 1) // max(local, 1))
    torch.set_num_threads(threads)
    return threads


def accelerator_kwargs() -> dict[str, Any]:
    """Arguments for our own `Accelerator(...)` (PPO) that make several CPU processes one gloo group.

    Without `cpu=True`, accelerate on a machine without CUDA ignores LOCAL_RANK and runs every
    process as a separate single-process job (world size 1), silently training N unsynced copies.
    """
    return {} if torch.cuda.is_available() or uses_deepspeed() else {"cpu": True}


def fill_deepspeed_batch_sizes(
    accelerator: Any, micro_batch_size: int, gradient_accumulation_steps: int = 1
) -> None:
    """Resolve the DeepSpeed config's "auto" batch sizes for loops that feed tensors, not a dataloader.

    accelerate fills "auto" only from a prepared DataLoader; DeepSpeed then asserts
    train_batch_size == micro_batch * accumulation * world_size.
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    ds_config = plugin.deepspeed_config
    ds_config["train_micro_batch_size_per_gpu"] = micro_batch_size
    ds_config["gradient_accumulation_steps"] = gradient_accumulation_steps
    ds_config["train_batch_size"] = micro_batch_size * gradient_accumulation_steps * accelerator.num_processes


def resolve_precision(precision: str) -> str:
    """'auto' -> 'bf16' where bfloat16 is fast (a CUDA GPU, or a CPU with AVX-512 BF16 or AMX), else 'fp32'.

    On an AVX2-only CPU bf16 matmuls are emulated and far slower than fp32, so a recipe that should run
    anywhere asks for 'auto'. (torch exposes the CPU checks only under private names; missing means no.)
    """
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16"
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    fast = any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return "bf16" if fast else "fp32"


def trainer_backend_kwargs(precision: str = "fp32") -> dict[str, Any]:
    """Arguments for a transformers/TRL `TrainingArguments` that keep it working on CPU.

    TRL configs default to bf16 and activation checkpointing, which are slow or unsupported on CPU.
    `precision` ('fp32', 'bf16' or 'auto', see `resolve_precision`) can ask for bfloat16 autocast on CPU too.
    """
    if precision == "auto":
        precision = resolve_precision(precision)
        if precision == "bf16" and uses_deepspeed() and not torch.cuda.is_available():
            # The Trainer hands bf16 to DeepSpeed, whose bf16 is not autocast: weights are held and saved
            # in bf16 (an fp32 master copy lives in the optimizer). Not measured faster on CPU: keep fp32.
            precision = "fp32"
        if is_main_process():
            print(f"[precision] auto: {precision}", flush=True)
    if torch.cuda.is_available():
        return {"bf16": True} if precision == "bf16" else {}
    kwargs: dict[str, Any] = {"bf16": precision == "bf16", "fp16": False}
    if precision == "bf16":
        kwargs["use_cpu"] = True  # transformers refuses bf16 without a GPU unless told the CPU is meant
    if world_size() > 1:
        kwargs["ddp_backend"] = "gloo"
        if not uses_deepspeed():
            # Without it the Trainer's Accelerator records DistributedType.NO beside num_processes=2: no
            # gradient all-reduce (each rank trains its own copy) and un-gathered token counts double the loss.
            kwargs["use_cpu"] = True
    return kwargs


def exit_launched_process(exit_code: int) -> NoReturn:
    """End one process of a multi-process launch, its outputs written, without the interpreter's teardown.

    On success every rank first meets the others and the process group is destroyed. Even so, gloo's C++
    teardown at interpreter exit aborted a finished 2-process ZeRO-3 run in CI ("terminate called without an
    active exception", SIGABRT on rank 0), so `accelerate launch` reported a failure for a run whose outputs
    were all saved. `os._exit` skips that teardown; logging and the standard streams are flushed first.
    """
    import logging

    import torch.distributed as dist

    if exit_code == 0 and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# DeepSpeed helpers for trainers that drive accelerate themselves (PPO): generation under ZeRO-3,
# frozen models, and full weights for saving. All take the accelerator and import deepspeed lazily.


def deepspeed_zero_stage(accelerator: Any) -> int:
    """The ZeRO stage accelerate runs with, or -1 when DeepSpeed is not in use."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return -1
    return int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0))


def zero3_enabled() -> bool:
    """Whether the Trainer of this process runs under ZeRO-3 (valid once its TrainingArguments exist)."""
    if not uses_deepspeed():
        return False
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def set_gradient_clipping(accelerator: Any, max_grad_norm: float) -> None:
    """Clip gradients at `max_grad_norm`: DeepSpeed clips inside its engine, from its config, before `prepare`."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        plugin.deepspeed_config["gradient_clipping"] = max_grad_norm


def forward_module(model: torch.nn.Module) -> torch.nn.Module:
    """The callable module of a frozen model: a DeepSpeed inference engine's `.module`, else the model itself."""
    return getattr(model, "module", model) if type(model).__name__ == "DeepSpeedEngine" else model


@contextmanager
def accumulation_step(accelerator: Any, model: torch.nn.Module, last: bool) -> Iterator[None]:
    """Forward and backward of one micro-batch of a mini-batch; `last` marks the one that ends it.

    Gradients are all-reduced only after the last micro-batch (DDP's `no_sync` before it), `optimizer.step()`
    applies only then, and under DeepSpeed the engine's own accumulation boundary follows the same flag.
    This is what `accelerator.accumulate` does by counting calls; PPO marks the boundary itself so that its
    mini-batch loop stays explicit (and a mini-batch never straddles two PPO epochs).
    """
    accelerator.gradient_state._set_sync_gradients(last)  # the flag accumulate() sets; no public setter
    if last:
        yield
        return
    with accelerator.no_sync(model):
        yield


@contextmanager
def gathered_parameters(module: torch.nn.Module, accelerator: Any, modify: bool = False) -> Iterator[None]:
    """Inside, every parameter of `module` holds its full tensor (a collective under ZeRO-3: all ranks enter).

    Changes made inside are discarded on exit unless `modify` (then rank 0's values are partitioned back).
    """
    if deepspeed_zero_stage(accelerator) != 3:
        yield
        return
    import deepspeed  # lazy: only DeepSpeed launches pay for it

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=0 if modify else None):
        yield


@contextmanager
def unwrapped_for_generation(model: Any, accelerator: Any) -> Iterator[torch.nn.Module]:
    """Yield the bare module of a prepared model, ready for `generate` (all ranks must enter together).

    Under ZeRO-3 each rank holds a shard of every weight, and DeepSpeed's forward hooks gather and release
    them around each submodule: token-by-token generation would then all-gather every layer for every token,
    and ranks whose batches stop at different lengths would wait on each other forever. So the weights are
    gathered once, the hooks are taken off for the duration, then put back (the trace DeepSpeed uses to
    prefetch parameters is invalidated, because generation ran modules in a different order).
    """
    unwrapped = accelerator.unwrap_model(model)
    if deepspeed_zero_stage(accelerator) != 3:
        yield unwrapped
        return
    import deepspeed  # lazy: only DeepSpeed launches pay for it

    offload = (
        model.optimizer.parameter_offload
        if hasattr(model.optimizer, "parameter_offload")
        else model.optimizer
    )
    with deepspeed.zero.GatheredParameters(list(unwrapped.parameters())):
        for param in unwrapped.parameters():
            param.ds_active_sub_modules.clear()
        for hook in offload.forward_hooks + offload.backward_hooks:
            hook.remove()
        offload.forward_hooks, offload.backward_hooks = [], []
        try:
            yield unwrapped
        finally:
            coordinator = getattr(offload, "param_coordinator", None)
            if coordinator is not None and not coordinator.is_invalid_trace():
                coordinator._invalidate_trace()
            offload._register_deepspeed_module(offload.module)


def prepare_frozen_model(model: torch.nn.Module, accelerator: Any) -> torch.nn.Module:
    """Put a model that is never trained (PPO's reference and reward models) on the device, in eval mode.

    Under ZeRO-3 it is sharded like the trained model (an inference-only DeepSpeed engine, no optimizer);
    call the returned engine's `.module` for forward passes (all ranks, the same number of calls).
    Otherwise it is simply moved to the device: a frozen copy needs no gradient or optimizer sharding.
    """
    model.requires_grad_(False)
    model.eval()
    if deepspeed_zero_stage(accelerator) != 3:
        return model.to(accelerator.device)
    import deepspeed  # lazy: only DeepSpeed launches pay for it

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    # Training-only blocks would make DeepSpeed build an optimizer or scheduler for a model with none.
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    config["zero_optimization"].pop("offload_optimizer", None)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine
