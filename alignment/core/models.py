"""Loading and building models and tokenizers, the same way for every stage.

Two rules every stage relies on (silent failures otherwise, see ../shared/STACK-NOTES.md):
- the pad token exists and differs from EOS, because masks after generation are computed on the pad id;
- a tokenizer without a chat template gets `DEFAULT_CHAT_TEMPLATE`, and it is saved with the model,
  so later stages and evaluation format conversations exactly the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

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
from transformers.utils import logging as hf_logging

from alignment.core.errors import ConfigError, ModelLoadError
from alignment.core.paths import resolve_path
from alignment.core.runs import safetensors_problem

PAD_TOKEN = "<|pad|>"
# A plain role-tagged template; the EOS after each turn is what teaches the model to stop.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def looks_like_hub_name(name: str) -> bool:
    """True for `org/name` or `name` as the hub spells repositories; False for anything shaped like a path."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name)) and not name.endswith(
        (".json", ".safetensors")
    )


def model_folder(name_or_path: str) -> str:
    """The local folder a model name refers to (a `cache://` path resolved), checked to be a model folder.

    Only a name shaped like a hub repository (`org/name`) that is not a folder here is passed on to the hub;
    anything else (`runs/demo/sft/model`, `./m`, `cache://...`) must be an existing folder with a config or
    tokenizer in it, and is refused with the path otherwise, before any library sees it.
    """
    path = resolve_path(name_or_path)
    if not Path(path).exists() and looks_like_hub_name(name_or_path):
        return path
    if not Path(path).is_dir():
        hint = " (run `alignment prepare` first)" if name_or_path.startswith("cache://") else ""
        hint = hint or (
            " (has the stage that writes it run?)" if "runs/" in path or path.startswith("runs") else ""
        )
        raise ModelLoadError(f"model folder {path} does not exist{hint}")
    files = {"config.json", "adapter_config.json", "tokenizer_config.json"}
    if not any((Path(path) / name).is_file() for name in files):
        raise ModelLoadError(f"{path} is not a model folder: no config.json or tokenizer files in it")
    for weights in sorted(Path(path).glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem:
            raise ModelLoadError(f"{weights}: {problem}; the model folder is damaged (save or copy it again)")
    return path


@contextmanager
def loading(what: str) -> Iterator[None]:
    """Turn a library's failure to load a model or tokenizer into a one-line `ModelLoadError` naming `what`.

    While loading, transformers' per-file progress bar and its load report are silenced: the report lists
    the fresh heads our stages put on purpose (a reward model's `score`), which reads like an error.
    """
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        message = " ".join(str(err).split())[:300]
        raise ModelLoadError(f"{what}: cannot be loaded ({type(err).__name__}: {message})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def load_tokenizer(
    name_or_path: str, padding_side: Literal["left", "right"] = "right"
) -> PreTrainedTokenizerBase:
    """Load a tokenizer with a pad token distinct from EOS and a chat template."""
    folder = model_folder(name_or_path)
    with loading(f"tokenizer {folder}"):
        tokenizer = AutoTokenizer.from_pretrained(folder)
    ensure_pad_token(tokenizer)
    if not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    tokenizer.padding_side = padding_side
    return tokenizer


def max_positions(config: Any) -> int | None:
    """The longest sequence a model's position embeddings cover (None when unbounded, e.g. T5's relative ones)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_length(length: int, key: str, model: Any, what: str = "the model") -> None:
    """Raise `ConfigError` naming `key` when `length` tokens do not fit the model's positions.

    Past its positions a learned-position model indexes outside its embedding table (an IndexError deep in
    a forward pass), so every stage checks its lengths at start-up instead.
    """
    limit = max_positions(model.config if hasattr(model, "config") else model)
    if limit is not None and length > limit:
        raise ConfigError(
            f"{key}: {length} tokens do not fit {what}, which has {limit} positions; use at most {limit}"
        )


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
    folder = model_folder(name_or_path)
    with loading(f"model {folder}"):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    fuse_activations(model)
    if tokenizer is not None:
        align_model_to_tokenizer(model, tokenizer)
    return model


def fuse_activations(model: torch.nn.Module) -> int:
    """Swap GPT-2's Python tanh-GELU for torch's fused kernel of the same formula; returns the modules swapped.

    `NewGELUActivation` spells 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) as seven elementwise ops, each
    with its own backward: 15% of a small GPT-2's PPO training step here. `GELUTanh` computes the same
    formula in one op (transformers documents the two as equivalent up to rounding). The saved config
    is not touched, so the model reloads as it was.
    """
    from transformers.activations import GELUTanh, NewGELUActivation

    swapped = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, NewGELUActivation):
                setattr(module, name, GELUTanh())
                swapped += 1
    return swapped


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
    fuse_activations(model)
    return model


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
