"""Pairwise reward-model math: the Bradley-Terry loss and held-out pairwise metrics. Imports only torch.

Bradley-Terry (Christiano et al. 2017; InstructGPT, Ouyang et al. 2022, eq. 1) models the probability that a
labeler prefers `chosen` over `rejected` as sigmoid(r_chosen - r_rejected), so the negative log-likelihood is

    loss = -log sigmoid(r_chosen - r_rejected - margin)

with an optional margin (Llama 2, Touvron et al. 2023, eq. 2) that asks clearly-better answers to win by more.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted mean of -log sigmoid(r_c - r_r - margin) over a batch of pairs.

    Args:
        chosen_rewards: [batch] scalar rewards of the preferred texts.
        rejected_rewards: [batch] scalar rewards of the other texts.
        margin: [batch] or None; the reward gap each pair should exceed.
        weight: [batch] or None; per-pair weights. The data pipeline normalises them to mean 1 over the
            training set, so mean(weight * loss) is an unbiased batch estimate of the prompt-weighted objective
            (every pair of one K-way ranking gets 1/C(K,2), as in InstructGPT, so one prompt does not dominate).

    Returns:
        A scalar tensor.
    """
    logits = chosen_rewards - rejected_rewards  # [batch]
    if margin is not None:
        logits = logits - margin
    per_pair = -F.logsigmoid(logits)  # [batch]
    if weight is not None:
        per_pair = per_pair * weight
    return per_pair.mean()


def center_rewards_penalty(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """mean((r_c + r_r)^2): pulls rewards towards zero mean (Eisenstein et al. 2023), since BT fixes only differences."""
    return ((chosen_rewards + rejected_rewards) ** 2).mean()


def bucket_name(low: float | None, high: float | None) -> str:
    """Metric-friendly name of the rating-gap bucket [low, high): 'gap_lt_1', 'gap_1_2', 'gap_ge_2'."""

    def fmt(x: float) -> str:
        return f"{x:g}".replace(".", "p").replace("-", "m")

    if low is None:
        return f"gap_lt_{fmt(high)}"
    if high is None:
        return f"gap_ge_{fmt(low)}"
    return f"gap_{fmt(low)}_{fmt(high)}"


def pairwise_metrics(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, gaps: torch.Tensor, edges: list[float]
) -> dict[str, float]:
    """Held-out metrics of a reward model on preference pairs.

    Args:
        chosen_rewards: [n] rewards of the preferred texts.
        rejected_rewards: [n] rewards of the other texts.
        gaps: [n] known preference strength of each pair (e.g. difference of mean human ratings); NaN where unknown.
        edges: increasing bucket edges, e.g. [1.0, 2.0] gives buckets gap<1, 1<=gap<2, gap>=2.

    Returns:
        accuracy (ties count as half), mean/std of r_c - r_r, reward mean/std over all scored texts (for PPO
        normalisation), and per bucket the accuracy and count (`accuracy_gap_1_2`, `count_gap_1_2`), plus the
        accuracy on every pair with gap >= each edge (`accuracy_gap_ge_1`).
    """
    chosen_rewards, rejected_rewards = chosen_rewards.double(), rejected_rewards.double()
    diff = chosen_rewards - rejected_rewards  # [n]
    correct = (diff > 0).double() + 0.5 * (diff == 0).double()  # a tie is a coin flip
    all_rewards = torch.cat([chosen_rewards, rejected_rewards])
    metrics = {
        "accuracy": correct.mean().item(),
        "reward_gap_mean": diff.mean().item(),
        "reward_gap_std": diff.std(unbiased=False).item(),
        "reward_mean": all_rewards.mean().item(),
        "reward_std": all_rewards.std(unbiased=False).item(),
        "num_pairs": float(diff.numel()),
    }
    gaps = gaps.double()
    known = ~torch.isnan(gaps)
    bounds = [None, *edges, None]
    for low, high in zip(bounds[:-1], bounds[1:]):
        in_bucket = known.clone()
        if low is not None:
            in_bucket &= gaps >= low
        if high is not None:
            in_bucket &= gaps < high
        name = bucket_name(low, high)
        count = int(in_bucket.sum())
        metrics[f"count_{name}"] = float(count)
        metrics[f"accuracy_{name}"] = correct[in_bucket].mean().item() if count else math.nan
    for low in edges[:-1]:  # the last edge's ">=" bucket was written above
        at_least = known & (gaps >= low)
        count = int(at_least.sum())
        metrics[f"accuracy_{bucket_name(low, None)}"] = correct[at_least].mean().item() if count else math.nan
        metrics[f"count_{bucket_name(low, None)}"] = float(count)
    return metrics
