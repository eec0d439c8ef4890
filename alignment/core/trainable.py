"""Which parameters train, and how fast: peft adapters, prefix tuning, BitFit, freezing, unfreezing, layer rates.

Shared by every stage that fine-tunes (SFT, PPO's LoRA policy, fine-tuning), so a method means the same
everywhere.

- Adapters come from `peft`; with no target modules given, peft's per-architecture defaults apply
  (GPT-2: `c_attn`; Llama: `q_proj`, `v_proj` for LoRA).
- Freezing: the bottom k transformer blocks and/or the embeddings stop training. With tied embeddings
  (GPT-2, SmolLM2) the output head is the same tensor as the input embedding, so it freezes with it.
- Gradual unfreezing (ULMFiT, Howard & Ruder 2018, https://arxiv.org/abs/1801.06146, section 3.2): training
  starts with only the top block trainable and one more block below it is unfrozen every N steps.
- Discriminative learning rates (ULMFiT section 3.2): the head trains at the base rate, each block below it
  at `decay` times the rate of the block above, the embeddings at `decay` times the bottom block's rate.
- BitFit (Ben Zaken et al. 2022, https://arxiv.org/abs/2106.10199): only the bias terms (and the task head)
  train. Feature extraction: only the head trains, on the frozen backbone's features.
- Prefix tuning (Li & Liang 2021, https://arxiv.org/abs/2101.00190): learned key and value vectors are put in
  front of every self-attention layer's own keys and values. Our own, because peft 0.21's prefix tuning
  needs a `past_key_values` argument that transformers 5's BERT no longer has (it is called `cache`, and
  the encoder's attention mask ignores it); here a registered attention function adds the prefix instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from peft import IA3Config, LoraConfig, PeftConfig, PromptTuningConfig, PromptTuningInit, TaskType
from transformers import PreTrainedModel, TrainerCallback
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface
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
        # GPT-2 `wpe`; BERT `position_embeddings` and `token_type_embeddings`.
        positional = ("wpe", "embed_positions", "position_embeddings", "token_type_embeddings")
        if isinstance(module, torch.nn.Embedding) and name.split(".")[-1] in positional:
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


# ---------------------------------------------------------------------------------------------
# Classifier fine-tuning: what trains besides (or instead of) everything


def head_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters outside the backbone: the task head (`classifier`, `score`) a stage put on top."""
    inner = getattr(model, "get_base_model", lambda: model)()  # a peft model's wrapped transformers model
    prefix = getattr(inner, "base_model_prefix", "")
    backbone = getattr(inner, prefix, None) if prefix else None
    if backbone is None or backbone is inner:
        raise ValueError(f"{type(inner).__name__}: no backbone under '{prefix}' to tell the head apart from")
    inside = {id(p) for p in backbone.parameters()}
    return {name for name, p in model.named_parameters() if id(p) not in inside}


def train_only(model: torch.nn.Module, keep: Callable[[str], bool]) -> int:
    """Freeze every parameter whose name `keep` rejects; return the number of parameters left trainable."""
    trainable = 0
    for name, param in model.named_parameters():
        param.requires_grad_(keep(name))
        trainable += param.numel() if param.requires_grad else 0
    return trainable


def bitfit(model: torch.nn.Module) -> int:
    """BitFit: only bias terms and the task head train; return the trainable parameter count."""
    head = head_parameter_names(model)
    return train_only(model, lambda name: name in head or name.endswith(".bias"))


def feature_extraction(model: torch.nn.Module) -> int:
    """Frozen backbone, trained head (the backbone's pooled features are fixed inputs to a classifier)."""
    head = head_parameter_names(model)
    return train_only(model, lambda name: name in head)


def layerwise_param_groups(
    model: torch.nn.Module, learning_rate: float, decay: float, weight_decay: float, no_decay: set[str]
) -> list[dict]:
    """Optimizer groups with discriminative learning rates (ULMFiT): the rate falls by `decay` per block downwards.

    With n blocks (0 = bottom), block i trains at `learning_rate * decay ** (n - i)`, the embeddings (and the
    embedding LayerNorm) at `learning_rate * decay ** (n + 1)`, and everything else (the head, a pooler, a
    final norm) at `learning_rate`. Parameters named in `no_decay` (biases, norms) get no weight decay. Only
    trainable parameters are grouped; each group is named (`head`, `block.<i>`, `embeddings`) for logs and tests.
    """
    blocks = transformer_blocks(model)
    n = len(blocks)
    layer_of = {id(p): f"block.{i}" for i, block in enumerate(blocks) for p in block.parameters()}
    embedding_ids = {id(p) for p in embedding_parameters(model)}
    rates = {"head": learning_rate, "embeddings": learning_rate * decay ** (n + 1)}
    rates.update({f"block.{i}": learning_rate * decay ** (n - i) for i in range(n)})
    grouped: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if id(param) in embedding_ids or ".embeddings." in f".{name}":
            layer = "embeddings"
        else:
            layer = layer_of.get(id(param), "head")
        grouped.setdefault((layer, name not in no_decay), []).append(param)
    return [
        {"params": params, "lr": rates[layer], "weight_decay": weight_decay if decays else 0.0, "name": layer}
        for (layer, decays), params in grouped.items()
    ]


PREFIX_ATTENTION = "prefix_sdpa"
PREFIX_CONFIG_KEY = "prefix_tuning_tokens"  # recorded in config.json, so a loader can put the prefix back


def _attention_with_prefix(module, query, key, value, attention_mask, **kwargs):
    """Scaled dot-product attention with the module's learned prefix keys and values in front of its own (always attended)."""
    prefix_key = getattr(module, "prefix_key", None)
    if prefix_key is not None:
        batch, n_prefix = key.shape[0], prefix_key.shape[1]
        # prefix_key, prefix_value: [heads, n_prefix, head_dim]; key, value: [batch, heads, length, head_dim]
        key = torch.cat([prefix_key.to(key.dtype).expand(batch, -1, -1, -1), key], dim=2)
        value = torch.cat([module.prefix_value.to(value.dtype).expand(batch, -1, -1, -1), value], dim=2)
        if attention_mask is not None:  # [batch, 1, q_len, k_len]: bool (True = attend) or additive float
            attend = True if attention_mask.dtype == torch.bool else 0.0
            prefix_mask = attention_mask.new_full((*attention_mask.shape[:-1], n_prefix), attend)
            attention_mask = torch.cat([prefix_mask, attention_mask], dim=-1)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(PREFIX_ATTENTION, _attention_with_prefix)
AttentionMaskInterface.register(PREFIX_ATTENTION, sdpa_mask)


def self_attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The self-attention modules of a BERT-family encoder (they have `key`, `value` and a head size)."""
    found = [
        m
        for m in model.modules()
        if hasattr(m, "attention_head_size")
        and isinstance(getattr(m, "key", None), torch.nn.Linear)
        and "Cross" not in type(m).__name__
    ]
    if not found:
        raise ValueError(
            f"{type(model).__name__}: prefix tuning here supports BERT-family encoders (no self-attention "
            "module with key/value projections found)"
        )
    return found


def add_prefix_tuning(model: PreTrainedModel, num_virtual_tokens: int, seed: int = 0) -> int:
    """Give every self-attention layer `num_virtual_tokens` learned key/value vectors; freeze all else but the head.

    Initialized from real activations (Li & Liang, section 4.3, found this more stable than random): the
    layer's own key/value projections of the embeddings of randomly drawn vocabulary tokens. Returns the
    trainable parameter count. The prefix lives in the model's state dict, so checkpoints carry it, and the
    count is recorded in the config (`restore_prefix_tuning` puts it back after loading).
    """
    head = head_parameter_names(model)
    embeddings = model.get_input_embeddings().weight.detach()
    generator = torch.Generator().manual_seed(seed)
    for module in self_attention_modules(model):
        token_ids = torch.randint(0, embeddings.shape[0], (num_virtual_tokens,), generator=generator)
        with torch.no_grad():
            keys = module.key(embeddings[token_ids]).view(num_virtual_tokens, -1, module.attention_head_size)
            values = module.value(embeddings[token_ids]).view(
                num_virtual_tokens, -1, module.attention_head_size
            )
        module.prefix_key = torch.nn.Parameter(
            keys.transpose(0, 1).contiguous()
        )  # [heads, n_prefix, head_dim]
        module.prefix_value = torch.nn.Parameter(values.transpose(0, 1).contiguous())
    model.set_attn_implementation(PREFIX_ATTENTION)
    setattr(model.config, PREFIX_CONFIG_KEY, num_virtual_tokens)
    return train_only(model, lambda name: name in head or ".prefix_" in name)


def restore_prefix_tuning(model: PreTrainedModel, state_dict: dict[str, torch.Tensor]) -> None:
    """Put a saved prefix back into a freshly loaded model (from_pretrained drops the prefix tensors it does not know)."""
    count = getattr(model.config, PREFIX_CONFIG_KEY, None)
    if not count:
        return
    add_prefix_tuning(model, int(count))
    prefix = {name: tensor for name, tensor in state_dict.items() if ".prefix_" in name}
    missing, _ = model.load_state_dict(prefix, strict=False)
    if any(".prefix_" in name for name in missing):
        raise ValueError(
            f"saved weights lack the prefix tensors the config promises ({PREFIX_CONFIG_KEY}={count})"
        )
