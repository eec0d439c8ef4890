"""Yardsticks for a pretraining run: a unigram baseline perplexity and model FLOPs utilization."""

from __future__ import annotations

import math
import time

import torch


def unigram_perplexity(train_tokens: torch.Tensor, heldout_tokens: torch.Tensor, vocab_size: int) -> float:
    """Perplexity of `heldout_tokens` under unigram frequencies of `train_tokens`, add-one smoothed.

    p(t) = (count(t) + 1) / (N + V) over a vocabulary of V; perplexity = exp(-mean log p(t)).
    A model that learned nothing beyond word frequencies scores this; anything useful is far below it.
    """
    counts = torch.bincount(train_tokens.reshape(-1), minlength=vocab_size).double()
    log_probs = torch.log(counts + 1) - math.log(train_tokens.numel() + vocab_size)
    return math.exp(-log_probs[heldout_tokens.reshape(-1)].mean().item())


def measure_matmul_peak(size: int = 1024, repeats: int = 5, device: str | torch.device = "cpu") -> float:
    """Peak fp32 matmul throughput of this machine in FLOP/s: the best of a few timed `size`^3 matmuls."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = math.inf
    for _ in range(repeats + 1):  # the first one warms up caches and thread pools
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def model_flops_utilization(num_parameters: int, tokens_per_second: float, peak_flops: float) -> float:
    """MFU: training FLOPs (6 per parameter per token: 2 forward, 4 backward) over the measured peak.

    Attention's own FLOPs (those not tied to parameters) are left out, as in Kaplan et al. (2020); they add
    12 * layers * d_model * block per token, about a tenth of 6N for the tiny recipe (4 x 128, block 128).
    """
    return 6 * num_parameters * tokens_per_second / peak_flops
