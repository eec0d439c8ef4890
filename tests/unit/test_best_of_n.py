"""Best-of-n: the subset-averaged curve against brute force, and its KL against numerical integration."""

import itertools
import math

import numpy as np
import pytest
from scipy.integrate import quad

from alignment.evaluate.best_of_n import best_of_n_curve, best_of_n_kl, powers_of_two, subset_max_weights


def brute_force(proxy: np.ndarray, gold: np.ndarray, n: int) -> tuple[float, float]:
    """Mean over prompts of the mean over every size-n subset of (proxy, gold) at the subset's RM maximum."""
    proxy_means, gold_means = [], []
    for p_row, g_row in zip(proxy, gold):
        picks = [
            max(subset, key=lambda j: p_row[j]) for subset in itertools.combinations(range(len(p_row)), n)
        ]
        proxy_means.append(np.mean([p_row[j] for j in picks]))
        gold_means.append(np.mean([g_row[j] for j in picks]))
    return float(np.mean(proxy_means)), float(np.mean(gold_means))


def test_curve_equals_brute_force_over_every_subset():
    rng = np.random.default_rng(0)
    proxy, gold = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    for point in best_of_n_curve(proxy, gold, [1, 2, 3, 4, 5, 6]):
        want_proxy, want_gold = brute_force(proxy, gold, point["n"])
        assert point["proxy"] == pytest.approx(want_proxy)
        assert point["gold"] == pytest.approx(want_gold)


def test_n_equal_to_all_samples_picks_the_reward_models_maximum():
    proxy = np.array([[0.1, 0.9, 0.3, 0.2], [2.0, -1.0, 0.5, 1.0]])
    gold = np.array([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]])
    (point,) = best_of_n_curve(proxy, gold, [4])
    assert point["gold"] == pytest.approx((20.0 + 1.0) / 2)  # the gold score at each row's RM argmax
    assert point["proxy"] == pytest.approx((0.9 + 2.0) / 2)
    (one,) = best_of_n_curve(proxy, gold, [1])  # n = 1 is the plain mean: no selection
    assert one["gold"] == pytest.approx(gold.mean()) and one["kl"] == 0.0


def test_subset_weights_are_a_distribution():
    for total in (1, 5, 16):
        for n in range(1, total + 1):
            weights = subset_max_weights(total, n)
            assert weights.sum() == pytest.approx(1.0) and (weights >= 0).all()


@pytest.mark.parametrize("n", [1, 2, 4, 8, 64])
def test_kl_matches_numerical_integration(n):
    # On the base's quantile scale u ~ U(0, 1) the best of n has density n u^(n-1); KL = E[log density].
    density = lambda u: n * u ** (n - 1)  # noqa: E731
    numeric, _ = quad(lambda u: density(u) * math.log(density(u)) if density(u) > 0 else 0.0, 0, 1)
    assert best_of_n_kl(n) == pytest.approx(numeric, abs=1e-7)


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError):
        best_of_n_kl(0)
    with pytest.raises(ValueError):
        best_of_n_curve(np.zeros((2, 3)), np.zeros((2, 4)), [1])
    assert powers_of_two(8) == [1, 2, 4, 8] and powers_of_two(12) == [1, 2, 4, 8]
