"""Which parameters train: peft adapters (LoRA, IA3, prompt tuning), layer freezing, gradual unfreezing.

Shared by every stage that fine-tunes (SFT, PPO's LoRA policy, fine-tuning), so a method means the same
everywhere.

- Adapters come from `peft`; with no target modules given, peft's per-architecture defaults apply
  (GPT-2: `c_attn`; Llama: `q_proj`, `v_proj` for LoRA).
- Freezing: the bottom k transformer blocks and/or the embeddings stop training. With tied embeddings
  (GPT-2, SmolLM2) the output head is the same tensor as the input embedding, so it freezes with it.
- Gradual unfreezing (ULMFiT, Howard & Ruder 2018, https://arxiv.org/abs/1801.06146, section 3.2): training
  starts with only the top block trainable and one more block below it is unfrozen every N steps.
"""

from __future__ import annotations

from typing import Literal

import torch
from peft import IA3Config, LoraConfig, PeftConfig, PromptTuningConfig, PromptTuningInit, TaskType
from transformers import PreTrainedModel, TrainerCallback
from transformers.pytorch_utils import Conv1D

PeftMethod = Literal["none", "lora", "ia3", "prompt_tuning"]
MERGEABLE = (
    "lora",
    "ia3",
)  # adapters that fold into the base weights; prompt tuning keeps its virtual tokens


def build_peft_config(
    method: PeftMethod,
    lora_r: int = 8,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    target_modules: list[str] | str | None = None,
    num_virtual_tokens: int = 8,
    model: torch.nn.Module | None = None,
    task_type: TaskType = TaskType.CAUSAL_LM,
) -> PeftConfig | None:
    """The peft config for `method`, or None for full fine-tuning.

    `target_modules` names the adapted modules (["all-linear"] or "all-linear" for every linear layer but the
    head); empty or None picks peft's default for the architecture. With `model`, LoRA is told whether the
    model keeps its projections transposed (GPT-2's Conv1D), which peft would otherwise fix with a warning
    per layer.
    """
    targets: list[str] | str | None = target_modules or None  # None: peft's defaults for the model type
    if targets == ["all-linear"]:
        targets = "all-linear"
    if method == "none":
        return None
    transposed = model is not None and any(isinstance(m, Conv1D) for m in model.modules())
    if method == "lora":
        return LoraConfig(
            task_type=task_type,
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=targets,
            fan_in_fan_out=transposed,
        )
    if method == "ia3":
        # IA3's feed-forward modules must be a subset of its targets; peft picks both when none are given.
        return IA3Config(
            task_type=task_type,
            target_modules=targets,
            feedforward_modules=[] if targets else None,
            fan_in_fan_out=transposed,
        )
    if method == "prompt_tuning":
        return PromptTuningConfig(
            task_type=task_type,
            num_virtual_tokens=num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )
    raise ValueError(f"peft: expected one of none, lora, ia3, prompt_tuning, got {method!r}")


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of transformer blocks, bottom first (GPT-2 `transformer.h`, Llama `model.layers`, ...).

    Found as the module list whose length is the config's layer count, so any decoder in transformers works.
    """
    n_layers = model.config.get_text_config().num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(f"{type(model).__name__}: found no list of {n_layers} transformer blocks to freeze")


def embedding_parameters(model: PreTrainedModel) -> list[torch.nn.Parameter]:
    """Token embeddings plus learned position embeddings where the architecture has them (GPT-2 `wpe`)."""
    params = list(model.get_input_embeddings().parameters())
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) and name.split(".")[-1] in ("wpe", "embed_positions"):
            params += list(module.parameters())
    return params


def freeze(model: PreTrainedModel, bottom_blocks: int = 0, embeddings: bool = False) -> int:
    """Stop gradients for the bottom `bottom_blocks` blocks and optionally the embeddings; return params frozen."""
    blocks = transformer_blocks(model)
    if bottom_blocks > len(blocks):
        raise ValueError(
            f"freeze_layers: expected at most {len(blocks)} (the model's block count), got {bottom_blocks}"
        )
    params = [p for block in blocks[:bottom_blocks] for p in block.parameters()]
    if embeddings:
        params += embedding_parameters(model)
    for param in params:
        param.requires_grad_(False)
    return sum(p.numel() for p in {id(p): p for p in params}.values())


class GradualUnfreezeCallback(TrainerCallback):
    """ULMFiT gradual unfreezing: only the top block trains at first; every `every` steps one more block below it.

    The trainable set is a function of the global step alone, so a resumed run picks up exactly where it
    stopped. Blocks below `floor` (the permanently frozen bottom blocks) are never unfrozen. The optimizer
    is built before `on_train_begin` with every block in it; frozen blocks simply get no gradient (AdamW
    skips parameters whose grad is None, including weight decay).
    """

    def __init__(self, model: PreTrainedModel, every: int, floor: int = 0):
        self.blocks = transformer_blocks(model)
        self.every = every
        self.floor = floor

    def trainable_blocks(self, step: int) -> int:
        """How many blocks, counted from the top, train at `step`."""
        return min(1 + step // self.every, len(self.blocks) - self.floor)

    def _apply(self, step: int) -> None:
        first_trainable = len(self.blocks) - self.trainable_blocks(step)
        for index, block in enumerate(self.blocks):
            block.requires_grad_(index >= first_trainable)

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: D102 (Trainer hook)
        self._apply(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: D102 (Trainer hook)
        self._apply(state.global_step)
