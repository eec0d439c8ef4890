"""Token arithmetic shared by PPO, evaluation, reasoning and the reward model (this module imports only torch).

Layout of a scored sequence: `[query (left-padded) | response (right-padded)]`. The logits at position
`query_len - 1 + t` predict response token `t`, so per-token outputs are `[batch, response_len]` and line
up with `response_ids` and `response_mask` from `alignment.core.generation.generate`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Log-probability of each given token: logits [batch, len, vocab], token_ids [batch, len] -> [batch, len].

    The logits must already be aligned (position t scores token_ids[:, t]); computed in float32 for a
    stable log-softmax whatever the model's dtype.
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return torch.gather(logprobs, 2, token_ids.unsqueeze(-1)).squeeze(-1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0..n-1 over each row's real tokens whatever the padding (pads are masked, so theirs do not matter).

    Left-padded prompts need this: HF `generate` counts positions this way, so a forward pass that did
    not would score a padded row at shifted positions.
    """
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)


def response_slice(per_position: torch.Tensor, query_len: int, response_len: int) -> torch.Tensor:
    """The positions whose outputs predict response tokens: [batch, seq, ...] -> [batch, response_len, ...]."""
    return per_position[:, query_len - 1 : query_len - 1 + response_len]


def scaled_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits divided by the sampling temperature (greedy decoding, temperature 0, counts as 1)."""
    return logits / temperature if temperature > 0 else logits


def concat_query_response(
    query_ids: torch.Tensor, query_mask: torch.Tensor, response_ids: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask and position_ids of `[query | response]`, each [batch, query_len + response_len]."""
    input_ids = torch.cat([query_ids, response_ids], dim=1)
    attention_mask = torch.cat([query_mask, response_mask], dim=1)
    return input_ids, attention_mask, position_ids_from_mask(attention_mask)


@torch.no_grad()
def response_logprobs(
    model: torch.nn.Module,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Log pi_T(response token | everything before it) under a causal LM, [batch, response_len] on the model's device.

    pi_T is the model's softmax at `temperature`. Positions where `response_mask` is 0 hold values for
    padding and must be masked by the caller.
    """
    device = next(model.parameters()).device
    input_ids, attention_mask, position_ids = (
        t.to(device) for t in concat_query_response(query_ids, query_mask, response_ids, response_mask)
    )
    response_len = response_ids.shape[1]
    # The LM head only where it predicts response tokens: the last response_len + 1 positions, but the last.
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        logits_to_keep=response_len + 1,
    ).logits[:, :-1]
    return token_logprobs(scaled_logits(logits, temperature), response_ids.to(device))


@contextmanager
def padding_side(tokenizer: Any, side: str) -> Iterator[Any]:
    """Temporarily set `tokenizer.padding_side` (generation pads left, training and scoring right)."""
    previous = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = previous
