"""Best-of-n against the reward model: the baseline that PPO's over-optimization curve is read against.

Sample N responses per prompt from one policy (usually the SFT model), keep the one the reward model likes
best, and score it with the gold judge. Gao et al. 2022 ("Scaling laws for reward model over-optimization")
put this on the same sqrt(KL) axis as RL: the KL of the best-of-n policy to the policy it samples from is, in
closed form, log n - (n - 1) / n.

Rather than one draw of n samples per prompt, each n uses every size-n subset of the N samples drawn: ranked
by reward-model score, the i-th lowest of N is the maximum of a random size-n subset with probability
C(i-1, n-1) / C(N, n). The expectation is the same, the noise far lower (Gao et al. do the same).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import comb


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || base) in nats: log n - (n - 1) / n (exact for a reward with no ties)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def subset_max_weights(num_samples: int, n: int) -> np.ndarray:
    """P(the i-th lowest of `num_samples` is the maximum of a uniform size-n subset), for i = 1..num_samples."""
    if not 1 <= n <= num_samples:
        raise ValueError(f"n must be in [1, {num_samples}], got {n}")
    ranks = np.arange(1, num_samples + 1)
    return comb(ranks - 1, n - 1, exact=False) / comb(num_samples, n, exact=False)


def best_of_n_curve(
    proxy_scores: np.ndarray | list, gold_scores: np.ndarray | list, ns: list[int]
) -> list[dict[str, float]]:
    """For each n: the expected proxy and gold score of the proxy's favourite of n, and its KL.

    `proxy_scores` and `gold_scores` are [prompts, N]: N samples per prompt, scored by the reward model
    (which picks) and by the gold judge (which grades the pick).
    """
    proxy, gold = np.asarray(proxy_scores, dtype=float), np.asarray(gold_scores, dtype=float)
    if proxy.shape != gold.shape or proxy.ndim != 2:
        raise ValueError(
            f"need two [prompts, samples] arrays of one shape, got {proxy.shape} and {gold.shape}"
        )
    order = np.argsort(proxy, axis=1, kind="stable")  # ascending: rank i is column i
    proxy_sorted = np.take_along_axis(proxy, order, axis=1)
    gold_sorted = np.take_along_axis(gold, order, axis=1)
    curve = []
    for n in ns:
        weights = subset_max_weights(proxy.shape[1], n)
        kl = best_of_n_kl(n)
        curve.append(
            {
                "n": n,
                "proxy": float((proxy_sorted @ weights).mean()),
                "gold": float((gold_sorted @ weights).mean()),
                "kl": kl,
                "sqrt_kl": math.sqrt(kl),
            }
        )
    return curve


def powers_of_two(largest: int) -> list[int]:
    """1, 2, 4, ... up to `largest` (included when it is a power of two)."""
    return [2**k for k in range(int(math.log2(largest)) + 1)]
