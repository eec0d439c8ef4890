"""Agreement statistics against numbers worked out by hand and against Krippendorff's published example."""

from __future__ import annotations

import math

import pytest

from reward.app.agreement import agreement_report, kendall_tau_b, krippendorff_alpha, pairwise_agreement


def test_kendall_tau_b_by_hand():
    # x=[1,2,3,4], y=[1,3,2,4]: 5 concordant pairs, 1 discordant (candidates 2,3), no ties: (5-1)/6.
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # Ties: x=[1,1,2,3], y=[1,2,2,3]; C=4, D=0, n0=6, one tie in each: 4/sqrt(5*5) = 0.8.
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None  # everything tied: undefined


def test_pairwise_agreement_by_hand():
    # Pairs (0,1) (0,2) (1,2): signs a = (<, <, <), b = (<, <, =): two agree, the tie disagrees.
    assert pairwise_agreement([1, 2, 3], [1, 2, 2]) == (2, 3)
    assert pairwise_agreement([1, 1, 2], [2, 2, 3]) == (3, 3)  # a tie agrees with a tie


def test_krippendorff_interval_by_hand():
    # Two coders, units (1,1), (2,2), (3,4). Coincidences: o11=2, o22=2, o34=o43=1; n = (2,2,1,1), n=6.
    # Observed: sum o*d2 = 2 (the 3-4 pair both ways). Expected: sum n_c n_k (c-k)^2 over ordered pairs
    # = 2*(2*2*1 + 2*1*4 + 2*1*9 + 2*1*1 + 2*1*4 + 1*1*1) = 82. alpha = 1 - 5*2/82 = 36/41.
    assert krippendorff_alpha([[1, 1], [2, 2], [3, 4]], "interval") == pytest.approx(36 / 41)
    # Ordinal on the same data: levels 1..4 with n = (2,2,1,1). d2(3,4) = (n3+n4 - (n3+n4)/2)^2 = 1,
    # d2(1,2) = (4-2)^2 = 4, d2(1,3) = (5-1.5)^2 = 12.25, d2(1,4) = (6-1.5)^2 = 20.25, d2(2,3) = (3-1.5)^2
    # = 2.25, d2(2,4) = (4-1.5)^2 = 6.25. Expected = 2*(4*4 + 2*12.25 + 2*20.25 + 2*2.25 + 2*6.25 + 1*1)
    # = 2*99 = 198; observed = 2*1 = 2. alpha = 1 - 5*2/198.
    assert krippendorff_alpha([[1, 1], [2, 2], [3, 4]], "ordinal") == pytest.approx(1 - 10 / 198)


def test_krippendorff_published_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", 4 observers x 12 units with
    # missing values; the paper gives nominal 0.743, ordinal 0.815, interval 0.849.
    n = None
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ]
    units = [[v for v in column if v is not None] for column in zip(*observers)]
    assert round(krippendorff_alpha(units, "nominal"), 3) == 0.743
    assert round(krippendorff_alpha(units, "ordinal"), 3) == 0.815
    assert round(krippendorff_alpha(units, "interval"), 3) == 0.849


def test_krippendorff_perfect_and_degenerate():
    assert krippendorff_alpha([[1, 1], [2, 2], [3, 3]], "ordinal") == pytest.approx(1.0)
    assert krippendorff_alpha([[1], [2]], "ordinal") is None  # nothing pairable
    assert krippendorff_alpha([[2, 2], [2, 2]], "interval") is None  # no expected disagreement
    with pytest.raises(ValueError, match="metric"):
        krippendorff_alpha([[1, 2]], "ratio")


def test_agreement_report_per_labeler():
    rows = [
        {"labeler": "a", "item_id": 1, "ranks": [1, 2, 3]},
        {"labeler": "b", "item_id": 1, "ranks": [1, 2, 3]},
        {"labeler": "c", "item_id": 1, "ranks": [3, 2, 1]},
        {"labeler": "a", "item_id": 2, "ranks": [1, 2]},  # no overlap on item 2
    ]
    report = agreement_report(rows, metric="interval")
    overall = report["overall"]
    assert overall["items"] == 2 and overall["items_with_overlap"] == 1
    # Labeler pairs on item 1: a-b agree on 3/3, a-c and b-c on 0/3 -> 3/9; taus 1, -1, -1.
    assert overall["pairwise_agreement"] == pytest.approx(3 / 9)
    assert overall["kendall_tau"] == pytest.approx(-1 / 3)
    per = report["per_labeler"]
    assert per["a"]["pairwise_agreement"] == pytest.approx(3 / 6)
    assert per["c"]["pairwise_agreement"] == 0 and per["c"]["kendall_tau"] == -1
    # Leaving out the contrarian c leaves perfect agreement; leaving out a does not.
    assert per["c"]["alpha_interval_without"] == pytest.approx(1.0)
    assert per["a"]["alpha_interval_without"] < 0
    assert math.isclose(per["a"]["shared_items"], 1)
