"""A simulated labeler: ranks K samples per prompt with a judge plus noise tuned to a target agreement rate.

Real labelers agree with each other (and with any gold standard) only part of the time; InstructGPT reports
about 73% inter-labeler agreement. To study that, a labeler here adds Gaussian noise N(0, sigma^2) to the
judge's score of every completion and ranks by the noisy scores. For two completions whose judge scores
differ by d, the noisy order agrees with the judge's with probability Phi(|d| / (sigma * sqrt(2))), so the
expected pairwise agreement over a set of comparisons is a decreasing function of sigma (1 at sigma = 0,
1/2 as sigma grows). `calibrate_noise` finds the sigma giving the target agreement by bisection on that
closed form, and `SimulatedLabeler` writes the same K-way rankings format as human labels.

The judge is any `Callable[[str], float]` applied to `prompt + completion` (VADER's compound score by
default for sentiment, a reasoning-gym verifier, a reward model...).

    python -m reward.labeler --input samples.jsonl --output rankings.jsonl --target_agreement 0.73
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable, Sequence
from statistics import NormalDist

from alignment.core.formats import DatasetFormatError, read_jsonl, write_jsonl
from alignment.core.judges import vader_compound

Judge = Callable[[str], float]


_STANDARD_NORMAL = NormalDist()


def judge_score_gaps(score_groups: Sequence[Sequence[float]]) -> list[float]:
    """|s_i - s_j| for every non-tied pair of completions within each prompt's group of judge scores."""
    gaps = []
    for scores in score_groups:
        for i in range(len(scores)):
            for j in range(i + 1, len(scores)):
                if scores[i] != scores[j]:
                    gaps.append(abs(scores[i] - scores[j]))
    return gaps


def expected_agreement(gaps: Sequence[float], noise_std: float) -> float:
    """Expected share of judge-ordered pairs the noisy labeler orders the same way: mean Phi(d / (sigma sqrt 2))."""
    if not gaps:
        raise ValueError("no comparisons with different judge scores: agreement is undefined")
    if noise_std == 0:
        return 1.0
    return sum(_STANDARD_NORMAL.cdf(gap / (noise_std * math.sqrt(2.0))) for gap in gaps) / len(gaps)


def calibrate_noise(gaps: Sequence[float], target_agreement: float, tolerance: float = 1e-4) -> float:
    """The noise std whose expected agreement equals `target_agreement` (in (0.5, 1]), found by bisection."""
    if not 0.5 < target_agreement <= 1.0:
        raise ValueError(f"target_agreement: expected a number in (0.5, 1], got {target_agreement}")
    if target_agreement == 1.0:
        return 0.0
    low, high = 0.0, max(gaps) if gaps else 1.0
    while expected_agreement(gaps, high) > target_agreement:  # widen until the target is bracketed
        high *= 2.0
    while high - low > tolerance * max(high, 1e-12):
        middle = (low + high) / 2.0
        if expected_agreement(gaps, middle) > target_agreement:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def ranks_from_scores(scores: Sequence[float]) -> list[int]:
    """Competition ranks, 1 = highest score; equal scores share a rank (a tie)."""
    return [1 + sum(other > score for other in scores) for score in scores]


class SimulatedLabeler:
    """Ranks completions by judge score plus Gaussian noise of a fixed std (see `calibrate_noise`)."""

    def __init__(self, judge: Judge, noise_std: float, seed: int = 0):
        self.judge = judge
        self.noise_std = noise_std
        self.rng = random.Random(seed)

    def rank(self, prompt: str, completions: Sequence[str]) -> list[int]:
        """Ranks (1 = best) for `completions` of `prompt`."""
        scores = [self.judge(prompt + completion) for completion in completions]
        return self.rank_scores(scores)

    def rank_scores(self, scores: Sequence[float]) -> list[int]:
        """Ranks from precomputed judge scores (noise added here)."""
        noisy = [s + self.rng.gauss(0.0, self.noise_std) if self.noise_std > 0 else s for s in scores]
        return ranks_from_scores(noisy)


def measured_agreement(
    score_groups: Sequence[Sequence[float]], rank_groups: Sequence[Sequence[int]]
) -> float:
    """Share of judge-ordered pairs that the rankings order the same way (a tie in the ranking counts half)."""
    agree, total = 0.0, 0
    for scores, ranks in zip(score_groups, rank_groups):
        for i in range(len(scores)):
            for j in range(i + 1, len(scores)):
                if scores[i] == scores[j]:
                    continue
                total += 1
                if ranks[i] == ranks[j]:
                    agree += 0.5
                elif (scores[i] > scores[j]) == (ranks[i] < ranks[j]):
                    agree += 1.0
    if total == 0:
        raise ValueError("no comparisons with different judge scores: agreement is undefined")
    return agree / total


def label_rows(
    rows: Sequence[dict], judge: Judge, target_agreement: float, seed: int = 0
) -> tuple[list[dict], dict[str, float]]:
    """Rank each row's completions; return K-way ranking rows and {noise_std, expected/measured agreement}.

    `rows` hold {"prompt": str, "completions": [str, ...]} (for instance K policy samples per prompt). The noise
    is calibrated on these rows' own judge scores, so the expected agreement is the target for this data.
    """
    for index, row in enumerate(rows):
        if (
            not isinstance(row.get("prompt"), str)
            or not isinstance(row.get("completions"), list)
            or len(row["completions"]) < 2
        ):
            raise DatasetFormatError(
                f"row {index + 1}: expected prompt (str) and completions (a list of >= 2 strings)"
            )
    score_groups = [[judge(row["prompt"] + c) for c in row["completions"]] for row in rows]
    gaps = judge_score_gaps(score_groups)
    noise_std = calibrate_noise(gaps, target_agreement)
    labeler = SimulatedLabeler(judge, noise_std, seed)
    rank_groups = [labeler.rank_scores(scores) for scores in score_groups]
    labeled = [
        {"prompt": row["prompt"], "completions": list(row["completions"]), "ranks": ranks}
        for row, ranks in zip(rows, rank_groups)
        if len(set(ranks)) > 1  # an all-tied ranking states no preference (and is not a valid rankings row)
    ]
    stats = {
        "noise_std": noise_std,
        "expected_agreement": expected_agreement(gaps, noise_std),
        "measured_agreement": measured_agreement(score_groups, rank_groups),
        "rows": float(len(labeled)),
    }
    return labeled, stats


def main(argv: list[str] | None = None) -> None:
    """Label a JSONL file of {prompt, completions} with the VADER judge into a rankings file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="JSONL with prompt and completions (K samples).")
    parser.add_argument(
        "--output", required=True, help="Rankings JSONL to write (prompt, completions, ranks)."
    )
    parser.add_argument(
        "--target_agreement", type=float, default=0.73, help="Pairwise agreement with the judge."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the labeling noise.")
    args = parser.parse_args(argv)
    labeled, stats = label_rows(read_jsonl(args.input), vader_compound, args.target_agreement, args.seed)
    write_jsonl(labeled, args.output)
    print({k: round(v, 4) for k, v in stats.items()})


if __name__ == "__main__":
    main()
