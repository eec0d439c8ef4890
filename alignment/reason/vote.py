"""Self-consistency's majority vote and the statistics drawn from one set of samples (pure: stdlib only).

Wang et al. (2022) sample N reasoning paths, extract each path's final answer and take the most frequent
one. Here ties go to the tied answer that appeared first among the samples (a rule that needs no random
numbers, so the same samples always give the same vote), and a sample without an extractable answer does
not vote. Because the vote over the first n samples is a valid self-consistency@n estimate, one run of N
samples gives the whole accuracy curve n = 1..N.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent non-None answer; ties go to the one seen first; None when no sample answered.

    Answers must already be normalised (`core.answers.extract_answer` returns canonical forms), so "5.0"
    and "5" count as one answer.
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def agreement(answers: Sequence[str | None]) -> float:
    """Share of all samples (unanswered ones included) that gave the voted answer; 0.0 when none answered."""
    winner = majority_vote(answers)
    if winner is None or not answers:
        return 0.0
    return sum(a == winner for a in answers) / len(answers)


def vote_curve(
    samples: Sequence[Sequence[str | None]], is_right: Callable[[int, str | None], bool]
) -> list[float]:
    """Accuracy of the vote over the first n samples of every item, for n = 1..N.

    `samples[i]` holds item i's N extracted answers in sampling order; `is_right(i, answer)` says whether an
    answer to item i is right. Returns [accuracy@1, ..., accuracy@N].
    """
    if not samples:
        return []
    n_max = min(len(s) for s in samples)
    return [
        sum(is_right(i, majority_vote(item[:n])) for i, item in enumerate(samples)) / len(samples)
        for n in range(1, n_max + 1)
    ]
