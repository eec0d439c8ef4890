"""Bradley-Terry loss and held-out pairwise metrics against hand-computed values."""

import math

import pytest
import torch

from reward.losses import bradley_terry_loss, center_rewards_penalty, pairwise_metrics


def softplus(x: float) -> float:  # -log sigmoid(z) == log(1 + exp(-z))
    return math.log1p(math.exp(-x))


def test_bradley_terry_loss_matches_hand_values():
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    # differences 1, 0, -2: -log sigmoid(1) = 0.31326, log 2 = 0.69315, -log sigmoid(-2) = 2.12693
    expected = (0.3132617 + 0.6931472 + 2.1269280) / 3
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, abs=1e-6)


def test_margin_is_subtracted_from_the_reward_gap():
    chosen, rejected = torch.tensor([2.0, 3.0]), torch.tensor([1.0, 0.0])
    margin = torch.tensor([0.5, 4.0])  # z = 0.5 and -1.0
    expected = (softplus(0.5) + softplus(-1.0)) / 2  # 0.474077 and 1.313262
    assert bradley_terry_loss(chosen, rejected, margin).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx((0.4740770 + 1.3132617) / 2, abs=1e-6)


def test_weights_scale_each_pair():
    chosen, rejected = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    weight = torch.tensor([2.0, 0.0])
    assert bradley_terry_loss(chosen, rejected, weight=weight).item() == pytest.approx(2 * softplus(1.0) / 2)


def test_loss_gradient_pushes_chosen_up():
    chosen = torch.tensor([0.0], requires_grad=True)
    bradley_terry_loss(chosen, torch.tensor([0.0])).backward()
    assert chosen.grad.item() == pytest.approx(-0.5)  # d/dz -log sigmoid(z) = sigmoid(z) - 1


def test_center_rewards_penalty():
    assert center_rewards_penalty(
        torch.tensor([1.0, 2.0]), torch.tensor([1.0, -2.0])
    ).item() == pytest.approx(2.0)


def test_pairwise_metrics_buckets_and_stats():
    chosen = torch.tensor([1.0, 0.0, 3.0, 2.0, 5.0])
    rejected = torch.tensor([0.0, 1.0, 1.0, 2.0, 0.0])
    gaps = torch.tensor([0.5, 1.5, 1.2, 3.0, math.nan])
    m = pairwise_metrics(chosen, rejected, gaps, [1.0, 2.0])
    assert m["accuracy"] == pytest.approx((1 + 0 + 1 + 0.5 + 1) / 5)  # the tie counts half
    assert m["accuracy_gap_lt_1"] == 1.0 and m["count_gap_lt_1"] == 1
    assert m["accuracy_gap_1_2"] == pytest.approx(0.5) and m["count_gap_1_2"] == 2
    assert m["accuracy_gap_ge_2"] == pytest.approx(0.5) and m["count_gap_ge_2"] == 1
    assert m["accuracy_gap_ge_1"] == pytest.approx(1.5 / 3) and m["count_gap_ge_1"] == 3  # NaN gap excluded
    diffs = torch.tensor([1.0, -1.0, 2.0, 0.0, 5.0])
    assert m["reward_gap_mean"] == pytest.approx(diffs.mean().item())
    assert m["reward_gap_std"] == pytest.approx(diffs.std(unbiased=False).item())
    assert m["reward_mean"] == pytest.approx(torch.cat([chosen, rejected]).mean().item())
