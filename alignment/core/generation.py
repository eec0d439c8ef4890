"""Batched sampling shared by PPO rollouts, evaluation, the labeling app and the simulated labeler.

Prompts are left-padded so every response starts at the same column; the KV cache is on. The
response mask marks real response tokens: everything up to and including the first EOS, nothing
after it (HF `generate` keeps emitting pad after a sequence finishes, and a model whose pad id
equals its EOS id would make these masks wrong, which `models.ensure_pad_token` prevents).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignment.core.errors import ConfigError
from alignment.core.models import max_positions
from alignment.core.tokens import padding_side, position_ids_from_mask


@dataclass
class SamplingSettings:
    """How to sample; `temperature == 0` means greedy decoding."""

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_new_tokens: int = 0


@dataclass
class GeneratedBatch:
    """One batch of prompts and their sampled responses.

    Shapes: `query_ids`/`query_mask` [batch, query_len] (left-padded);
    `response_ids`/`response_mask` [batch, response_len] (right-padded, mask stops after the first EOS).
    """

    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    response_texts: list[str]
    ended_with_eos: torch.Tensor  # [batch] bool

    @property
    def sequence_ids(self) -> torch.Tensor:
        """Query and response side by side, [batch, query_len + response_len]."""
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def sequence_mask(self) -> torch.Tensor:
        """Attention mask over `sequence_ids`."""
        return torch.cat([self.query_mask, self.response_mask], dim=1)


def response_mask_from_ids(
    response_ids: torch.Tensor, eos_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of real response tokens (through the first EOS) and whether each row contains an EOS.

    `response_ids` is [batch, response_len]; returns (mask [batch, response_len] long, ended [batch] bool).
    """
    is_eos = response_ids == eos_token_id
    # Number of EOS tokens strictly before each position; a token is real while that count is 0.
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    mask = (eos_before == 0).long()
    return mask, is_eos.any(dim=1)


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    settings: SamplingSettings,
    max_prompt_length: int | None = None,
) -> GeneratedBatch:
    """Sample one response per prompt in a single batch (callers chunk large prompt lists).

    Prompt plus response must fit the model's positions: prompts are truncated to `max_prompt_length` and
    to what the positions leave after `max_new_tokens`; a response length that alone fills them is refused.
    """
    device = next(model.parameters()).device
    limit = max_positions(model.config)
    if limit is not None:
        if settings.max_new_tokens >= limit:
            raise ConfigError(
                f"max_new_tokens: {settings.max_new_tokens} new tokens leave no room for a prompt in a model "
                f"with {limit} positions"
            )
        room = limit - settings.max_new_tokens
        max_prompt_length = room if max_prompt_length is None else min(max_prompt_length, room)
    with padding_side(tokenizer, "left"):
        encoded = tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            truncation=max_prompt_length is not None,
            max_length=max_prompt_length,
            add_special_tokens=False,
        ).to(device)
    greedy = settings.temperature <= 0
    kwargs = dict(
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens,
        do_sample=not greedy,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=True,
    )
    if not greedy:
        kwargs.update(temperature=settings.temperature, top_k=settings.top_k or None, top_p=settings.top_p)
    was_training = model.training
    model.eval()
    output = model.generate(
        input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], **kwargs
    )
    model.train(was_training)
    query_len = encoded["input_ids"].shape[1]
    response_ids = output[:, query_len:]
    response_mask, ended = response_mask_from_ids(response_ids, tokenizer.eos_token_id)
    response_ids = response_ids.masked_fill(response_mask == 0, tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    return GeneratedBatch(
        query_ids=encoded["input_ids"],
        query_mask=encoded["attention_mask"],
        response_ids=response_ids,
        response_mask=response_mask,
        response_texts=texts,
        ended_with_eos=ended,
    )


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    settings: SamplingSettings,
    batch_size: int = 32,
    seed: int | None = None,
) -> list[str]:
    """Responses for any number of prompts, in order, in batches; seeded for repeatable evaluation."""
    if seed is not None:
        torch.manual_seed(seed)
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        texts.extend(generate(model, tokenizer, prompts[start : start + batch_size], settings).response_texts)
    return texts


def _prompt_rows(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], shared_prefix: str
) -> tuple[list[int], list[list[int]]]:
    """(prefix ids, each prompt's ids after the prefix); the prefix is dropped where tokenization disagrees.

    A prompt's own tokenization must begin with the prefix's tokens for the shared cache to be exact; a
    prefix ending inside a word can merge with what follows, and then every prompt is encoded whole.
    """
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    prefix = tokenizer(shared_prefix, add_special_tokens=False)["input_ids"] if shared_prefix else []
    shared = all(
        p.startswith(shared_prefix) and ids[: len(prefix)] == prefix and len(ids) > len(prefix)
        for p, ids in zip(prompts, encoded)
    )
    if not shared:
        return [], encoded
    return prefix, [ids[len(prefix) :] for ids in encoded]


def _new_cache(model: PreTrainedModel):
    from transformers import DynamicCache  # with the models: only the prefilled path needs it

    return DynamicCache(config=model.config)


@torch.no_grad()
def generate_prefilled(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    settings: SamplingSettings,
    num_return_sequences: int = 1,
    shared_prefix: str = "",
    stop_strings: tuple[str, ...] = (),
) -> GeneratedBatch:
    """`num_return_sequences` responses per prompt, each prompt (and a prefix all prompts share) prefilled once.

    HF's own `num_return_sequences` copies every prompt before the first forward pass, so a prompt is encoded
    N times; few-shot prompts share their exemplars, which plain batching encodes once per prompt. Here the
    shared prefix is run once, its KV cache copied to every row, each prompt's remainder run once, and the
    cache then repeated N times before sampling starts. Rows are `[prefix | padding | prompt remainder]`
    (padding in the middle, masked, with positions counted over real tokens as `generate` counts them), so
    what each row attends to is exactly its own prompt. Output rows are prompt-major: row `i * N + j` is
    sample `j` of prompt `i`. Generation stops at EOS or at any of `stop_strings`; the response mask stops
    there too. Greedy decoding (temperature 0) with N > 1 gives N equal rows.
    """
    if num_return_sequences < 1:
        raise ConfigError(f"num_return_sequences: expected an int >= 1, got {num_return_sequences}")
    device = next(model.parameters()).device
    prefix, remainders = _prompt_rows(tokenizer, prompts, shared_prefix)
    width = len(prefix) + max(len(r) for r in remainders)
    limit = max_positions(model.config)
    if limit is not None and width + settings.max_new_tokens > limit:
        raise ConfigError(
            f"max_new_tokens: a prompt of {width} tokens plus {settings.max_new_tokens} new tokens does not fit "
            f"a model with {limit} positions"
        )
    batch = len(prompts)
    input_ids = torch.full((batch, width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    input_ids[:, : len(prefix)] = torch.tensor(prefix, dtype=torch.long)
    attention_mask[:, : len(prefix)] = 1
    for row, remainder in enumerate(remainders):
        input_ids[row, width - len(remainder) :] = torch.tensor(remainder, dtype=torch.long)
        attention_mask[row, width - len(remainder) :] = 1
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    position_ids = position_ids_from_mask(attention_mask)
    was_training = model.training
    model.eval()
    # Prefill everything but the last column: `generate` needs one uncached token to produce its first logits.
    cache = _new_cache(model)
    if prefix:
        model(
            input_ids=input_ids[:1, : len(prefix)],
            attention_mask=attention_mask[:1, : len(prefix)],
            cache=cache,
            use_cache=True,
        )
        cache.batch_repeat_interleave(batch)
    if width - 1 > len(prefix):
        model(
            input_ids=input_ids[:, len(prefix) : width - 1],
            attention_mask=attention_mask[:, : width - 1],
            position_ids=position_ids[:, len(prefix) : width - 1],
            cache=cache,
            use_cache=True,
        )
    if num_return_sequences > 1:
        cache.batch_repeat_interleave(num_return_sequences)
        input_ids = input_ids.repeat_interleave(num_return_sequences, dim=0)
        attention_mask = attention_mask.repeat_interleave(num_return_sequences, dim=0)
    greedy = settings.temperature <= 0
    kwargs = dict(
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens,
        do_sample=not greedy,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=True,
    )
    if not greedy:
        kwargs.update(temperature=settings.temperature, top_k=settings.top_k or None, top_p=settings.top_p)
    if stop_strings:
        kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
    if cache.get_seq_length() > 0:
        kwargs.update(cache=cache)
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    model.train(was_training)
    response_ids = output[:, width:]
    response_mask, ended = response_mask_from_ids(response_ids, tokenizer.eos_token_id)
    if stop_strings:  # a row stopped by a string is padded after it, without an EOS
        response_mask = response_mask * (response_ids != tokenizer.pad_token_id).long()
    response_ids = response_ids.masked_fill(response_mask == 0, tokenizer.pad_token_id)
    return GeneratedBatch(
        query_ids=input_ids,
        query_mask=attention_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        response_texts=tokenizer.batch_decode(response_ids, skip_special_tokens=True),
        ended_with_eos=ended,
    )
