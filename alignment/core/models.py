"""Loading and building models and tokenizers, the same way for every stage.

Two rules every stage relies on (silent failures otherwise, see ../shared/STACK-NOTES.md):
- the pad token exists and differs from EOS, because masks after generation are computed on the pad id;
- a tokenizer without a chat template gets `DEFAULT_CHAT_TEMPLATE`, and it is saved with the model,
  so later stages and evaluation format conversations exactly the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from alignment.core.paths import resolve_path

PAD_TOKEN = "<|pad|>"
# A plain role-tagged template; the EOS after each turn is what teaches the model to stop.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


class ModelLoadError(ValueError):
    """A model or tokenizer folder is missing or unusable; the message names it."""


def _check_local(name_or_path: str) -> str:
    path = resolve_path(name_or_path)
    looks_local = path.startswith((".", "/")) or Path(path).exists() or name_or_path.startswith("cache://")
    if looks_local and not Path(path).is_dir():
        hint = " (run `alignment prepare` first)" if name_or_path.startswith("cache://") else ""
        raise ModelLoadError(f"model folder {path} does not exist{hint}")
    if (
        looks_local
        and not (Path(path) / "config.json").exists()
        and not (Path(path) / "adapter_config.json").exists()
    ):
        if not (Path(path) / "tokenizer_config.json").exists():
            raise ModelLoadError(f"{path} is not a model folder: no config.json or tokenizer files in it")
    return path


def load_tokenizer(
    name_or_path: str, padding_side: Literal["left", "right"] = "right"
) -> PreTrainedTokenizerBase:
    """Load a tokenizer with a pad token distinct from EOS and a chat template."""
    tokenizer = AutoTokenizer.from_pretrained(_check_local(name_or_path))
    ensure_pad_token(tokenizer)
    if not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    tokenizer.padding_side = padding_side
    return tokenizer


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Give the tokenizer a pad token that is not EOS; return True if a token was added (resize the model)."""
    if tokenizer.eos_token is None:
        raise ModelLoadError(
            f"tokenizer {tokenizer.name_or_path!r} has no EOS token; generation could never stop"
        )
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return False
    if PAD_TOKEN in tokenizer.get_vocab():
        tokenizer.pad_token = PAD_TOKEN
        return False
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return True


def load_causal_lm(
    name_or_path: str, tokenizer: PreTrainedTokenizerBase | None = None, dtype: torch.dtype = torch.float32
) -> PreTrainedModel:
    """Load a causal LM; if `tokenizer` grew a pad token, resize embeddings and record the pad id."""
    model = AutoModelForCausalLM.from_pretrained(_check_local(name_or_path), dtype=dtype)
    if tokenizer is not None:
        align_model_to_tokenizer(model, tokenizer)
    return model


def align_model_to_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Resize embeddings to cover the tokenizer and copy its special-token ids into the configs."""
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None:
            config.pad_token_id = tokenizer.pad_token_id
            config.eos_token_id = tokenizer.eos_token_id
            if tokenizer.bos_token_id is not None:
                config.bos_token_id = tokenizer.bos_token_id


def build_causal_lm(
    architecture: Literal["gpt2", "llama"],
    vocab_size: int,
    n_layer: int = 2,
    d_model: int = 64,
    n_head: int = 4,
    max_length: int = 128,
    dropout: float = 0.0,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> PreTrainedModel:
    """A freshly initialized decoder: GPT-2 style (learned positions, GELU) or Llama style (RoPE, SwiGLU, RMSNorm)."""
    # GPT-2's config defaults to its own special ids (50256), out of range for a small vocabulary.
    special_ids = {"bos_token_id": None, "eos_token_id": None}
    if tokenizer is not None:
        special_ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if architecture == "gpt2":
        config = GPT2Config(
            **special_ids,
            vocab_size=vocab_size,
            n_positions=max_length,
            n_embd=d_model,
            n_layer=n_layer,
            n_head=n_head,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
        )
        model = GPT2LMHeadModel(config)
    elif architecture == "llama":
        config = LlamaConfig(
            **special_ids,
            vocab_size=vocab_size,
            hidden_size=d_model,
            intermediate_size=int(d_model * 8 / 3 + 63) // 64 * 64,
            num_hidden_layers=n_layer,
            num_attention_heads=n_head,
            num_key_value_heads=n_head,
            max_position_embeddings=max_length,
            attention_dropout=dropout,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(config)
    else:
        raise ValueError(f"architecture: expected 'gpt2' or 'llama', got {architecture!r}")
    if tokenizer is not None:
        align_model_to_tokenizer(model, tokenizer)
    return model


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
