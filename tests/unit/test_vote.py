"""Self-consistency's vote: majority, ties to the first seen, abstentions, and the n = 1..N curve."""

import random

from alignment.reason.vote import agreement, majority_vote, vote_curve


def test_majority_wins_and_unanswered_samples_do_not_vote():
    assert majority_vote(["3", "5", "5", None, None, None]) == "5"
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


def test_ties_go_to_the_answer_seen_first():
    assert majority_vote(["7", "3", "3", "7"]) == "7"
    assert majority_vote(["3", "7", "7", "3"]) == "3"
    assert majority_vote([None, "2", "9"]) == "2"
    # three-way tie among singletons: the first one
    assert majority_vote(["4", "1", "8"]) == "4"


def test_agreement_counts_every_sample():
    assert agreement(["5", "5", "3", None]) == 0.5
    assert agreement([None, None]) == 0.0


def test_curve_equals_the_vote_recomputed_on_the_first_n_samples():
    rng = random.Random(0)
    gold = [str(rng.randint(0, 3)) for _ in range(40)]
    samples = [[rng.choice(["0", "1", "2", "3", None]) for _ in range(8)] for _ in gold]
    curve = vote_curve(samples, lambda i, a: a == gold[i])
    assert len(curve) == 8
    for n in range(1, 9):
        by_hand = sum(majority_vote(s[:n]) == g for s, g in zip(samples, gold)) / len(gold)
        assert curve[n - 1] == by_hand
    assert curve[0] == sum(s[0] == g for s, g in zip(samples, gold)) / len(gold)  # @1 is the first sample
