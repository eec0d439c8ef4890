"""Pure evaluation metrics: diversity, win rates, sequence KL and perplexity (imports only torch).

Everything here works on numbers, strings and tensors already computed, so each function can be
checked against values worked by hand. Running models to get those tensors is `measure.py`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / total n-grams, pooled over all `texts`.

    Words are whitespace-separated and case-sensitive; n-grams never cross from one text into the next.
    Returns 0.0 when no text has `n` words.
    """
    if n < 1:
        raise ValueError(f"n: expected >= 1, got {n}")
    total = 0
    unique: set[tuple[str, ...]] = set()
    for text in texts:
        words = text.split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def win_rate(scores: Sequence[float], baseline_scores: Sequence[float]) -> float:
    """Fraction of paired items where `scores` beats `baseline_scores`; ties count half.

    Item i of both sequences belongs to the same prompt. A model compared with itself gets exactly 0.5.
    """
    if len(scores) != len(baseline_scores):
        raise ValueError(f"win_rate: {len(scores)} scores against {len(baseline_scores)} baseline scores")
    if not scores:
        return float("nan")
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, baseline_scores))
    return wins / len(scores)


def sequence_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence KL estimate on the model's own samples: sum_t mask_t * (log p(y_t) - log p_ref(y_t)).

    All inputs [batch, response_len]; returns [batch]. Averaged over samples drawn from p, this is an
    unbiased estimate of KL(p || p_ref) over whole responses (the "k1" estimator; individual samples can
    be negative, the mean cannot be in expectation).
    """
    return ((logprobs - ref_logprobs) * mask.to(logprobs.dtype)).sum(dim=-1)


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(mean negative log-likelihood per predicted token)."""
    if total_tokens <= 0:
        raise ValueError("perplexity: no predicted tokens (every text was shorter than two tokens)")
    return math.exp(total_nll / total_tokens)


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN for an empty sequence (so a missing measure shows up, not a fake zero)."""
    return sum(values) / len(values) if len(values) else float("nan")


def follows_continuation_format(response: str, ended_with_eos: bool) -> bool:
    """The `continuation` format rule: stopped by itself, at least 3 words, no template marker, one line."""
    return (
        ended_with_eos
        and len(response.split()) >= 3
        and "<|" not in response
        and "\n" not in response.strip()
    )
