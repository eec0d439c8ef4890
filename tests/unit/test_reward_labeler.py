"""The simulated labeler: rank ties, noise calibration, achieved agreement close to the target."""

import random

import pytest

from alignment.core.formats import validate_rows
from reward.labeler import (
    calibrate_noise,
    expected_agreement,
    judge_score_gaps,
    label_rows,
    measured_agreement,
    ranks_from_scores,
)


def test_ranks_from_scores_best_is_one_and_ties_share():
    assert ranks_from_scores([0.1, 0.9, 0.5, 0.9]) == [4, 1, 3, 1]


def test_calibration_hits_the_expected_agreement():
    gaps = judge_score_gaps([[0.0, 0.3, 1.0], [0.2, 0.2, -0.5]])
    assert sorted(gaps) == pytest.approx([0.3, 0.7, 0.7, 0.7, 1.0])  # the 0.2/0.2 tie is skipped
    for target in (0.6, 0.73, 0.9):
        sigma = calibrate_noise(gaps, target)
        assert expected_agreement(gaps, sigma) == pytest.approx(target, abs=1e-3)
    assert calibrate_noise(gaps, 1.0) == 0.0
    with pytest.raises(ValueError, match="target_agreement"):
        calibrate_noise(gaps, 0.5)


@pytest.mark.parametrize("target", [0.73, 0.9])
def test_achieved_agreement_close_to_target(target):
    rng = random.Random(0)
    words = {"good": 1.0, "great": 2.0, "bad": -1.0, "awful": -2.0, "fine": 0.3}

    def judge(text: str) -> float:  # any callable text -> float is a judge
        return sum(words.get(w, 0.0) for w in text.split())

    rows = [
        {"prompt": "p ", "completions": [" ".join(rng.choices(list(words) + ["x"], k=4)) for _ in range(4)]}
        for _ in range(600)
    ]
    labeled, stats = label_rows(rows, judge, target, seed=1)
    assert stats["expected_agreement"] == pytest.approx(target, abs=1e-3)
    assert stats["measured_agreement"] == pytest.approx(target, abs=0.03)
    scores = [[judge(r["prompt"] + c) for c in r["completions"]] for r in labeled]
    assert measured_agreement(scores, [r["ranks"] for r in labeled]) == pytest.approx(target, abs=0.03)
    import datasets

    validate_rows(datasets.Dataset.from_list(labeled), "rankings", "labeled")  # the rankings format, valid


def test_vader_judge_orders_sentiment():
    from alignment.core.judges import vader_compound

    judge = vader_compound
    assert judge("a wonderful, delightful film") > 0 > judge("a terrible, awful film")
