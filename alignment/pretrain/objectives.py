"""Pretraining objectives as pure functions on token id tensors (imports only torch).

- Causal LM needs nothing here: the labels are the inputs, and the model shifts them by one.
- Masked LM (BERT, Devlin et al. 2019, section 3.1): choose 15% of the tokens; of those, replace 80% by
  [MASK], 10% by a random token and leave 10% unchanged; the loss is computed on the chosen tokens only.
- Span corruption (T5, Raffel et al. 2020, section 3.1.4): drop contiguous spans covering `noise_density`
  of the tokens (mean span length 3, density 0.15 in the paper), replace each span in the input by one
  sentinel token, and train the decoder to emit each sentinel followed by the span it stands for:

      original: Thank you for inviting me to your party last week .
      inputs:   Thank you <X> me to your party <Y> week . </s>
      targets:  <X> for inviting <Y> last </s>

Every random draw takes an optional `torch.Generator`, so callers can make corruption repeatable.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # the label value torch's cross-entropy (and every HF model) skips


def mask_tokens(
    input_ids: torch.Tensor,
    mask_token_id: int,
    random_token_range: tuple[int, int],
    mlm_probability: float = 0.15,
    special_tokens_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: returns `(inputs, labels)`, both shaped like `input_ids` ([batch, seq]).

    Each token is chosen independently with probability `mlm_probability` (never where
    `special_tokens_mask` is True). A chosen token becomes `mask_token_id` with probability 0.8, a token
    drawn uniformly from `[random_token_range[0], random_token_range[1])` with probability 0.1, and stays
    as it is with probability 0.1. `labels` holds the original id at chosen positions and -100 elsewhere.
    """
    probabilities = torch.full(input_ids.shape, mlm_probability)
    if special_tokens_mask is not None:
        probabilities.masked_fill_(special_tokens_mask.bool(), 0.0)
    chosen = torch.bernoulli(probabilities, generator=generator).bool()
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)

    # One uniform draw per token splits the chosen ones 80 / 10 / 10.
    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    low, high = random_token_range
    random_ids = torch.randint(low, high, input_ids.shape, generator=generator, dtype=input_ids.dtype)

    inputs = input_ids.clone()
    inputs[to_mask] = mask_token_id
    inputs[to_random] = random_ids[to_random]
    return inputs, labels


def span_corruption_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(number of noise tokens, number of noise spans) for a sequence of `length` tokens.

    As in T5: round(length * density) noise tokens, at least 1 and at most length - 1, cut into
    round(noise / mean_span_length) spans (at least 1). Fixed counts make every corrupted row of a
    batch the same length, so no padding is needed.
    """
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_span_length), 1)
    return num_noise, num_spans


def span_corruption_lengths(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(input length, target length) after corruption, each including the final EOS."""
    num_noise, num_spans = span_corruption_counts(length, noise_density, mean_span_length)
    return length - num_noise + num_spans + 1, num_noise + num_spans + 1


def _random_composition(total: int, parts: int, generator: torch.Generator | None) -> torch.Tensor:
    """Split `total` into `parts` positive integers, uniformly over all such splits ([parts] long)."""
    # Choose parts - 1 distinct cut points among the total - 1 gaps between items.
    cuts = torch.randperm(total - 1, generator=generator)[: parts - 1] + 1
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), cuts.sort().values, torch.tensor([total])])
    return bounds[1:] - bounds[:-1]


def random_spans_noise_mask(
    length: int, noise_density: float, mean_span_length: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Bool mask [length]: True on dropped (noise) tokens, laid out as alternating kept and noise spans.

    The sequence starts with a kept span and ends with a noise span; kept and noise tokens are each
    split into `num_spans` positive-length spans at random.
    """
    num_noise, num_spans = span_corruption_counts(length, noise_density, mean_span_length)
    num_spans = min(num_spans, num_noise, length - num_noise)  # every span needs at least one token
    noise_lengths = _random_composition(num_noise, num_spans, generator)
    kept_lengths = _random_composition(length - num_noise, num_spans, generator)
    # [kept_0, noise_0, kept_1, noise_1, ...] -> a 0/1 value per span, repeated over its length.
    span_lengths = torch.stack([kept_lengths, noise_lengths], dim=1).reshape(-1)
    span_is_noise = torch.tensor([False, True]).repeat(num_spans)
    return torch.repeat_interleave(span_is_noise, span_lengths)


def span_corruption(
    input_ids: torch.Tensor,
    sentinel_ids: list[int],
    eos_token_id: int,
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """T5 span corruption of each row of `input_ids` [batch, length].

    Returns `(inputs [batch, input_len], targets [batch, target_len])` (lengths from
    `span_corruption_lengths`): in `inputs` the i-th dropped span is replaced by `sentinel_ids[i]`;
    `targets` is `sentinel_ids[0], span_0, sentinel_ids[1], span_1, ...`; both end with `eos_token_id`.
    """
    inputs, targets = [], []
    for row in input_ids:
        noise = random_spans_noise_mask(row.numel(), noise_density, mean_span_length, generator)
        inputs.append(_replace_spans(row, noise, sentinel_ids, eos_token_id))
        targets.append(_replace_spans(row, ~noise, sentinel_ids, eos_token_id))
    return torch.stack(inputs), torch.stack(targets)


def _replace_spans(
    row: torch.Tensor, drop: torch.Tensor, sentinel_ids: list[int], eos_token_id: int
) -> torch.Tensor:
    """Replace each run of `drop` tokens in `row` by the next sentinel, drop the rest of the run, add EOS."""
    span_starts = drop & ~torch.cat([torch.tensor([False]), drop[:-1]])
    num_spans = int(span_starts.sum())
    if num_spans > len(sentinel_ids):
        raise ValueError(
            f"{num_spans} spans need {num_spans} sentinel tokens, only {len(sentinel_ids)} given"
        )
    out = row.clone()
    out[span_starts] = torch.tensor(sentinel_ids[:num_spans], dtype=row.dtype)
    keep = ~drop | span_starts
    return torch.cat([out[keep], torch.tensor([eos_token_id], dtype=row.dtype)])


def reconstruct_from_spans(
    inputs: torch.Tensor, targets: torch.Tensor, sentinel_ids: list[int]
) -> torch.Tensor:
    """Undo `span_corruption` for one row: put each span of `targets` back where its sentinel sits in `inputs`."""
    # Drop the final EOS of each; EOS tokens inside (document boundaries of packed blocks) are data.
    sentinel_set = set(sentinel_ids)
    spans: dict[int, list[int]] = {}
    current: int | None = None
    for token in targets[:-1].tolist():
        if token in sentinel_set:
            current = token
            spans[current] = []
        elif current is not None:
            spans[current].append(token)
    out: list[int] = []
    for token in inputs[:-1].tolist():
        out.extend(spans[token] if token in sentinel_set else [token])
    return torch.tensor(out, dtype=inputs.dtype)
