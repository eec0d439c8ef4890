"""An independent count of what the reward stage should train on, shared by the iterate tests."""

from __future__ import annotations


def pair_count(rankings: list[dict]) -> int:
    """Non-tied pairs of K-way rankings (what the reward stage trains on)."""
    return sum(
        1
        for row in rankings
        for i in range(len(row["ranks"]))
        for j in range(i + 1, len(row["ranks"]))
        if row["ranks"][i] != row["ranks"][j]
    )
