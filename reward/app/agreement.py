"""Agreement between labelers on K-way rankings: pairwise agreement, Kendall's tau-b, Krippendorff's alpha.

Pure functions over plain lists (no I/O), each checked in tests against hand-computed numbers. Ranks use
"1 is best"; equal ranks are ties.

- Pairwise agreement: for two labelers and one item, every pair of candidates (i, j) is a comparison; the
  labelers agree when sign(r_i - r_j) is the same for both (a tie agrees only with a tie). This is the
  "agreement rate" InstructGPT reports between labelers (Ouyang et al. 2022, sec. 5.1 and appendix B).
- Kendall's tau-b between two labelers' ranks of one item (tau-b corrects for ties; Kendall 1945), from scipy:
  tau_b = (C - D) / sqrt((n0 - n1) (n0 - n2)), n0 = K(K-1)/2, n1 and n2 the tied pairs of each ranking.
  Undefined (None) when either ranking ties everything. Krippendorff's alpha is our own: no maintained
  library in our stack computes it over rank units with these difference functions.
- Krippendorff's alpha (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"): units are
  (item, candidate), values the ranks given. With the coincidence matrix o_ck (each unit with m_u >= 2
  values adds 1/(m_u - 1) for every ordered pair of its values), n_c = sum_k o_ck and n = sum_c n_c:
      alpha = 1 - (n - 1) * sum_ck o_ck d2(c, k) / sum_ck n_c n_k d2(c, k)
  with d2 = [c != k] (nominal), (c - k)^2 (interval) or (sum_{g from c to k} n_g - (n_c + n_k) / 2)^2 (ordinal).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from itertools import combinations
from typing import Any

METRICS = ("nominal", "ordinal", "interval")


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def pairwise_agreement(ranks_a: Sequence[float], ranks_b: Sequence[float]) -> tuple[int, int]:
    """(agreeing candidate pairs, candidate pairs) for two rankings of the same candidates."""
    agree = total = 0
    for i, j in combinations(range(len(ranks_a)), 2):
        total += 1
        agree += _sign(ranks_a[i] - ranks_a[j]) == _sign(ranks_b[i] - ranks_b[j])
    return agree, total


def kendall_tau_b(ranks_a: Sequence[float], ranks_b: Sequence[float]) -> float | None:
    """Kendall's tau-b of two rankings of the same candidates; None when either has no untied pair.

    scipy's `kendalltau` (variant "b") computes it; it returns NaN where tau-b is undefined.
    """
    from scipy.stats import kendalltau

    tau = kendalltau(ranks_a, ranks_b, variant="b").statistic
    return None if math.isnan(tau) else float(tau)


def krippendorff_alpha(units: Iterable[Sequence[float]], metric: str = "ordinal") -> float | None:
    """Krippendorff's alpha over units, each the list of values its coders gave (missing values left out).

    Units with fewer than two values are not pairable and are ignored. Returns None when nothing is
    pairable or every pairable value is the same (no expected disagreement).
    """
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    coincidence: dict[tuple[float, float], float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for a, b in combinations(range(m), 2):
            coincidence[values[a], values[b]] += 1 / (m - 1)
            coincidence[values[b], values[a]] += 1 / (m - 1)
    if not coincidence:
        return None
    levels = sorted({c for c, _ in coincidence})
    n_c = {c: sum(o for (x, _), o in coincidence.items() if x == c) for c in levels}
    n = sum(n_c.values())
    position = {c: i for i, c in enumerate(levels)}
    cumulative = [0.0]
    for c in levels:
        cumulative.append(cumulative[-1] + n_c[c])

    def d2(c: float, k: float) -> float:
        if metric == "nominal":
            return float(c != k)
        if metric == "interval":
            return (c - k) ** 2
        lo, hi = sorted((position[c], position[k]))
        between = cumulative[hi + 1] - cumulative[lo]  # n_g summed over the levels from c to k, both included
        return (between - (n_c[c] + n_c[k]) / 2) ** 2

    observed = sum(o * d2(c, k) for (c, k), o in coincidence.items())
    expected = sum(n_c[c] * n_c[k] * d2(c, k) for c in levels for k in levels)
    if expected == 0:
        return None
    return 1 - (n - 1) * observed / expected


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def agreement_report(rankings: Iterable[dict[str, Any]], metric: str = "ordinal") -> dict[str, Any]:
    """Agreement statistics, overall and per labeler, from `{labeler, item_id, ranks}` rows.

    Per labeler: agreement rate and mean tau with the other labelers on shared items, and the overall
    alpha with that labeler left out (`alpha_without`; a labeler whose removal raises alpha disagrees
    with the rest).
    """
    by_item: dict[Any, dict[str, list[int]]] = defaultdict(dict)
    for row in rankings:
        by_item[row["item_id"]][row["labeler"]] = list(row["ranks"])
    labelers = sorted({name for votes in by_item.values() for name in votes})
    agree = defaultdict(int)
    compared = defaultdict(int)
    taus: dict[str, list[float]] = defaultdict(list)
    all_taus: list[float] = []
    shared_items = defaultdict(int)
    total_agree = total_compared = 0
    for votes in by_item.values():
        if len(votes) < 2:
            continue
        for name in votes:
            shared_items[name] += 1
        for a, b in combinations(sorted(votes), 2):
            same, pairs = pairwise_agreement(votes[a], votes[b])
            tau = kendall_tau_b(votes[a], votes[b])
            total_agree += same
            total_compared += pairs
            for name in (a, b):
                agree[name] += same
                compared[name] += pairs
                if tau is not None:
                    taus[name].append(tau)
            if tau is not None:
                all_taus.append(tau)

    def alpha(excluded: str | None = None) -> float | None:
        units = []
        for votes in by_item.values():
            kept = [ranks for name, ranks in votes.items() if name != excluded]
            if len(kept) >= 2:
                units.extend([ranks[i] for ranks in kept] for i in range(len(kept[0])))
        return krippendorff_alpha(units, metric)

    return {
        "overall": {
            "items": len(by_item),
            "items_with_overlap": sum(len(v) >= 2 for v in by_item.values()),
            "pairwise_agreement": total_agree / total_compared if total_compared else None,
            "kendall_tau": _mean(all_taus),
            f"krippendorff_alpha_{metric}": alpha(),
        },
        "per_labeler": {
            name: {
                "shared_items": shared_items[name],
                "pairwise_agreement": agree[name] / compared[name] if compared[name] else None,
                "kendall_tau": _mean(taus[name]),
                f"alpha_{metric}_without": alpha(name),
            }
            for name in labelers
        },
    }
