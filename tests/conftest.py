"""Shared fixtures: a tiny byte-level BPE tokenizer and tiny models built from configs, once per test run.

Nothing here downloads anything: the tokenizer is trained on a few sentences, the models are random.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from corpus import SENTENCES  # noqa: E402  (a plain module: two conftest.py files share one import name)


def build_tiny_tokenizer(vocab_size: int = 320):
    """Byte-level BPE with distinct pad/eos/bos tokens and the default chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from alignment.core.models import DEFAULT_CHAT_TEMPLATE

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|pad|>", "<|bos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(SENTENCES * 4, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|pad|>", bos_token="<|bos|>"
    )
    hf.chat_template = DEFAULT_CHAT_TEMPLATE
    return hf


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved tiny GPT-2 (2 layers, d=64) with its tokenizer: loadable by every stage."""
    import torch

    from alignment.core.models import build_causal_lm

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    model = build_causal_lm(
        "gpt2", len(tiny_tokenizer), n_layer=2, d_model=64, n_head=4, max_length=128, tokenizer=tiny_tokenizer
    )
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A saved tiny Llama-style decoder (RoPE, SwiGLU, RMSNorm) with its tokenizer."""
    import torch

    from alignment.core.models import build_causal_lm

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model = build_causal_lm(
        "llama",
        len(tiny_tokenizer),
        n_layer=2,
        d_model=64,
        n_head=4,
        max_length=128,
        tokenizer=tiny_tokenizer,
    )
    model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def sentences() -> list[str]:
    return list(SENTENCES)
