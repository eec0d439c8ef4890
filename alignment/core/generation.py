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
from alignment.core.tokens import padding_side, position_ids_from_mask, scaled_logits, token_logprobs


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
    # log pi_T(token) of each response token from the sampling pass itself (`return_logprobs`), else None
    logprobs: torch.Tensor | None = None

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
    return_logprobs: bool = False,
) -> GeneratedBatch:
    """Sample one response per prompt in a single batch (callers chunk large prompt lists).

    With `return_logprobs`, the log-probability of every sampled token under the temperature-scaled softmax
    pi_T = softmax(logits / T) comes from the logits of the sampling pass itself (HF's `output_logits`: the
    raw model logits, before any top-k/top-p or min-length processing), so no second forward pass is needed
    for them; tests/unit/test_generation.py checks they equal a separate forward pass.

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
    if return_logprobs:
        kwargs.update(output_logits=True, return_dict_in_generate=True)
    output = model.generate(
        input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], **kwargs
    )
    model.train(was_training)
    sequences = output.sequences if return_logprobs else output
    query_len = encoded["input_ids"].shape[1]
    response_ids = sequences[:, query_len:]
    logprobs = None
    if return_logprobs:
        logits = scaled_logits(torch.stack(output.logits, dim=1), settings.temperature)  # [batch, len, vocab]
        logprobs = token_logprobs(logits, response_ids)
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
        logprobs=logprobs,
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
    cache then repeated N times before sampling starts (`_decode` then drops each row from the batch as it
    ends). Rows are `[prefix | padding | prompt remainder]` (padding in the middle, masked, with positions
    counted over real tokens as `generate` counts them), so what each row attends to is exactly its own
    prompt. Output rows are prompt-major: row `i * N + j` is sample `j` of prompt `i`. Generation stops at
    EOS or at any of `stop_strings`; the response mask stops there too. Greedy decoding (temperature 0) with
    N > 1 gives N equal rows; greedy output equals `generate`'s (tests/unit/test_prefilled_generation.py).
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
    cache = _new_cache(model)
    if prefix:
        model(
            input_ids=input_ids[:1, : len(prefix)],
            attention_mask=attention_mask[:1, : len(prefix)],
            cache=cache,
            use_cache=True,
        )
        cache.batch_repeat_interleave(batch)
    logits = model(
        input_ids=input_ids[:, len(prefix) :],
        attention_mask=attention_mask,
        position_ids=position_ids[:, len(prefix) :],
        cache=cache,
        use_cache=True,
    ).logits[:, -1]  # [batch, vocab]: the distribution of each prompt's first response token
    if num_return_sequences > 1:
        cache.batch_repeat_interleave(num_return_sequences)
        logits = logits.repeat_interleave(num_return_sequences, dim=0)
        input_ids = input_ids.repeat_interleave(num_return_sequences, dim=0)
        attention_mask = attention_mask.repeat_interleave(num_return_sequences, dim=0)
        position_ids = position_ids.repeat_interleave(num_return_sequences, dim=0)
    response_ids = _decode(
        model, tokenizer, logits, cache, attention_mask, position_ids[:, -1], settings, stop_strings
    )
    model.train(was_training)
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


def _decode(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    logits: torch.Tensor,
    cache,
    attention_mask: torch.Tensor,
    last_position: torch.Tensor,
    settings: SamplingSettings,
    stop_strings: tuple[str, ...],
) -> torch.Tensor:
    """Sample token by token from `logits` [rows, vocab]; rows leave the batch (and the cache) when they end.

    HF's `generate` keeps every finished row in the batch until the last one ends, so a batch costs its
    longest response times its size; here a row that emits EOS (or completes a stop string) is dropped from
    the cache, and the remaining rows run on. Sampling is softmax(logits / T) after top-k and top-p (HF's own
    warpers); temperature 0 is greedy; EOS is barred for the first `min_new_tokens` tokens. Returns
    [rows, max_new_tokens] ids, padded after each row's end.
    """
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    rows, device = logits.shape[0], logits.device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    response = torch.full((rows, settings.max_new_tokens), pad, dtype=torch.long, device=device)
    greedy = settings.temperature <= 0
    warpers = []
    if not greedy:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k:
            warpers.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            warpers.append(TopPLogitsWarper(settings.top_p))
    active = torch.arange(rows, device=device)  # which output row each batch row is
    mask, position = attention_mask, last_position
    for step in range(settings.max_new_tokens):
        logits = logits.float()
        if step < settings.min_new_tokens:
            logits[:, eos] = float("-inf")
        if greedy:
            token = logits.argmax(dim=-1)
        else:
            for warp in warpers:
                logits = warp(None, logits)
            token = torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(1)
        response[active, step] = token
        done = token == eos
        if stop_strings:
            texts = tokenizer.batch_decode(response[active, : step + 1], skip_special_tokens=True)
            done |= torch.tensor([any(s in t for s in stop_strings) for t in texts], device=device)
        keep = (~done).nonzero().squeeze(1)
        if step == settings.max_new_tokens - 1 or keep.numel() == 0:
            break
        if keep.numel() < active.numel():
            cache.batch_select_indices(keep)
            active, mask, position, token = active[keep], mask[keep], position[keep], token[keep]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        position = position + 1
        logits = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=position[:, None],
            cache=cache,
            use_cache=True,
        ).logits[:, -1]
    return response
