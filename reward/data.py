"""Comparison data for the reward model: pairs, K-way rankings, the human-rated default, start-up checks.

Everything becomes a list of pairs, one dict each:
    {"prompt", "chosen", "rejected", "margin": float | None, "gap": float (NaN if unknown), "weight", "group"}
`gap` is how strongly the data prefers `chosen` (the difference of mean human ratings) and feeds the
accuracy-by-gap report; `margin` is what the loss may subtract; `group` names the prompt (or ranking) a pair
came from, so train/eval splits never share one.

A K-way ranking (1 = best, equal ranks are ties) expands into its non-tied pairs, each weighted 1/C(K,2):
InstructGPT (Ouyang et al. 2022, sec. 3.5) treats the C(K,2) comparisons of one prompt as one unit, because
as separate examples they are correlated and one prompt would dominate (and overfit) the reward model.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignment.core.formats import DatasetFormatError, detect_format, load_rows, read_jsonl, validate_rows
from alignment.core.paths import resolve_path

SENTIMENT_SOURCES = ("movie", "amazon", "nyt", "tweets")


def ranking_to_pairs(
    prompt: str, completions: list[str], ranks: list[int], where: str = "ranking"
) -> list[dict]:
    """Expand one K-way ranking into its non-tied pairs (better first), each with weight 1/C(K,2).

    Raises `DatasetFormatError` naming `where` for malformed rankings (ranks not matching completions, fewer
    than 2 completions, all tied, the same text at two different ranks).
    """
    if len(completions) < 2:
        raise DatasetFormatError(
            f"{where}: key 'completions': expected at least 2 completions, got {len(completions)}"
        )
    if len(ranks) != len(completions):
        raise DatasetFormatError(
            f"{where}: key 'ranks': expected one rank per completion ({len(completions)}), got {len(ranks)}"
        )
    if len(set(ranks)) == 1:
        raise DatasetFormatError(
            f"{where}: key 'ranks': all {len(ranks)} completions are tied; no preference"
        )
    weight = 1.0 / math.comb(len(completions), 2)
    pairs = []
    for i in range(len(completions)):
        for j in range(i + 1, len(completions)):
            if ranks[i] == ranks[j]:
                continue
            better, worse = (i, j) if ranks[i] < ranks[j] else (j, i)
            if completions[better] == completions[worse]:
                raise DatasetFormatError(
                    f"{where}: completions[{better}] and completions[{worse}] are the same text with different ranks"
                )
            pairs.append(
                {
                    "prompt": prompt,
                    "chosen": completions[better],
                    "rejected": completions[worse],
                    "margin": None,
                    "gap": math.nan,
                    "weight": weight,
                    "group": where,
                }
            )
    return pairs


def load_preference_file(source: str, skip_bad_rows: bool = False) -> list[dict]:
    """Read a pairs file (prompt, chosen, rejected, optional margin) or a rankings file as pairs.

    Rows are validated by `alignment.core.formats` (errors name file, row and key).
    """
    rows = load_rows(resolve_path(source))
    fmt = detect_format(rows.column_names)
    if fmt not in ("pairs", "rankings"):
        raise DatasetFormatError(
            f"{source}: expected comparisons, as pairs (prompt, chosen, rejected) or rankings (prompt, completions, "
            f"ranks); its columns are {rows.column_names}"
        )
    dataset, report = validate_rows(rows, fmt, source, skip_bad_rows=skip_bad_rows)
    if report.skipped:
        print(f"[reward] {report.summary()}")
    pairs: list[dict] = []
    if "ranks" in dataset.column_names:
        for index, row in enumerate(dataset):
            pairs += ranking_to_pairs(
                row["prompt"], row["completions"], row["ranks"], f"{source}: row {index + 1}"
            )
        return pairs
    has_margin = "margin" in dataset.column_names
    for row in dataset:
        margin = float(row["margin"]) if has_margin and row["margin"] is not None else None
        pairs.append(
            {
                "prompt": row["prompt"],
                "chosen": row["chosen"],
                "rejected": row["rejected"],
                "margin": margin,
                "gap": margin if margin is not None else math.nan,
                "weight": 1.0,
                "group": f"prompt:{row['prompt']}",
            }
        )
    return pairs


def read_snippets(path: str, sources: Iterable[str] = SENTIMENT_SOURCES) -> list[dict]:
    """Rows of the human-rated sentiment snippets file, filtered to `sources`, checked for the keys we use."""
    path = resolve_path(path)
    if not Path(path).is_file():
        raise DatasetFormatError(f"{path} does not exist (run `alignment prepare --only sentiment` first)")
    wanted = set(sources)
    rows = []
    for number, row in enumerate(read_jsonl(path), start=1):
        for key, kind in (("text", str), ("mean_rating", (int, float)), ("split", str), ("source", str)):
            if not isinstance(row.get(key), kind):
                raise DatasetFormatError(
                    f"{path}: line {number}: key '{key}': expected {kind}, got {row.get(key)!r}"
                )
        if row["source"] in wanted and row["text"].strip():
            rows.append(row)
    if not rows:
        raise DatasetFormatError(f"{path}: no snippets from sources {sorted(wanted)}")
    return rows


def sentiment_pairs(
    snippets: list[dict],
    split: str,
    min_gap: float,
    max_pairs: int,
    seed: int,
    group_size: int = 2,
    max_gap: float | None = None,
) -> list[dict]:
    """Preference pairs from human ratings: two texts of `split` whose mean ratings differ by >= `min_gap`.

    With `max_gap`, pairs further apart than that are left out. The higher-rated text is chosen, the rating
    difference is the margin and the gap; the prompt is "". Pairs are drawn at random (deterministically from
    `seed`) until `max_pairs` distinct pairs are found. With `group_size` K > 2 the same number of texts
    (2 * max_pairs) is drawn instead as groups of K distinct texts, each used once, and every pair inside a group
    whose gap fits is kept under the group's name: scored together, one group gives up to C(K,2) comparisons for
    K forward passes.
    """
    texts: dict[str, float] = {}
    for row in snippets:
        if row["split"] == split:
            texts.setdefault(
                row["text"], float(row["mean_rating"])
            )  # duplicated texts: keep the first rating
    items = sorted(texts.items())  # sorted so the draw does not depend on file order
    if group_size > 2:
        return _grouped_sentiment_pairs(items, split, min_gap, max_gap, max_pairs, seed, group_size)
    rng = random.Random(f"{seed}:{split}")
    seen: set[tuple[int, int]] = set()
    pairs = []
    for _ in range(max_pairs * 50):
        if len(pairs) >= max_pairs or len(items) < 2:
            break
        i, j = rng.sample(range(len(items)), 2)
        rating_i, rating_j = items[i][1], items[j][1]
        if not _gap_fits(abs(rating_i - rating_j), min_gap, max_gap) or (min(i, j), max(i, j)) in seen:
            continue
        seen.add((min(i, j), max(i, j)))
        pairs.append(_rated_pair(items[i], items[j], f"{split}:{i}-{j}"))
    if not pairs:
        raise DatasetFormatError(
            f"no '{split}' snippet pairs with a rating gap {gap_range(min_gap, max_gap)}"
        )
    return pairs


def _gap_fits(gap: float, min_gap: float, max_gap: float | None) -> bool:
    return gap >= min_gap and (max_gap is None or gap <= max_gap)


def gap_range(min_gap: float, max_gap: float | None) -> str:
    """The rating gaps a pair may have, in words: ">= 1.0" or ">= 1.0 and <= 2.0"."""
    return f">= {min_gap}" + (f" and <= {max_gap}" if max_gap is not None else "")


def split_by_group(pairs: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out about `eval_fraction` of the groups (prompts/rankings), so no prompt is in both splits."""

    def held_out(group: str) -> bool:
        digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction

    train = [p for p in pairs if not held_out(p["group"])]
    evaluation = [p for p in pairs if held_out(p["group"])]
    return train, evaluation


def _rated_pair(first: tuple[str, float], second: tuple[str, float], group: str) -> dict:
    """Two (text, mean rating) snippets as a pair: the higher-rated one chosen, the rating difference its gap."""
    (chosen, high), (rejected, low) = (first, second) if first[1] > second[1] else (second, first)
    gap = high - low
    return {
        "prompt": "",
        "chosen": chosen,
        "rejected": rejected,
        "margin": gap,
        "gap": gap,
        "weight": 1.0,
        "group": group,
    }


def _grouped_sentiment_pairs(
    items: list[tuple[str, float]],
    split: str,
    min_gap: float,
    max_gap: float | None,
    max_pairs: int,
    seed: int,
    group_size: int,
) -> list[dict]:
    order = list(range(len(items)))
    random.Random(f"{seed}:{split}:groups of {group_size}").shuffle(order)
    count = min(2 * max_pairs // group_size, len(items) // group_size)
    pairs = []
    for number in range(count):
        members = [items[i] for i in order[number * group_size : (number + 1) * group_size]]
        for a in range(group_size):
            for b in range(a + 1, group_size):
                if _gap_fits(abs(members[a][1] - members[b][1]), min_gap, max_gap):
                    pairs.append(_rated_pair(members[a], members[b], f"{split}:group {number}"))
    if not pairs:
        raise DatasetFormatError(
            f"no '{split}' snippet pairs with a rating gap {gap_range(min_gap, max_gap)} in groups of {group_size}"
        )
    return pairs


def parse_shard(spec: str) -> tuple[int, int]:
    """Shard i of n, written "i/n", as (i, n) with 0 <= i < n and n >= 2; ValueError otherwise."""
    index, sep, count = spec.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise ValueError(spec)
    shard = int(index), int(count)
    if shard[1] < 2 or not 0 <= shard[0] < shard[1]:
        raise ValueError(spec)
    return shard


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """Whether `key` (a text or a group) falls in `shard`, by a hash that no seed moves.

    Two reward models trained on shards 0/2 and 1/2 see disjoint comparisons whatever their seeds: the
    held-out "test" reward model of Bai et al. 2022 (sec. 4.3), which judges a policy trained against the other.
    """
    index, count = shard
    digest = hashlib.sha256(f"shard:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def shard_snippets(snippets: list[dict], shard: tuple[int, int]) -> list[dict]:
    """The training snippets whose text is in `shard`, and every held-out snippet (all shards evaluate alike)."""
    return [row for row in snippets if row["split"] != "train" or in_shard(row["text"], shard)]


def shard_pairs(pairs: list[dict], shard: tuple[int, int]) -> list[dict]:
    """The pairs whose group (prompt or ranking) is in `shard`: a group never straddles two shards."""
    return [pair for pair in pairs if in_shard(pair["group"], shard)]


def normalise_weights(pairs: list[dict]) -> list[dict]:
    """Scale weights to mean 1, so mean(weight * loss) per batch estimates the weighted objective unbiasedly."""
    mean = sum(p["weight"] for p in pairs) / len(pairs)
    return [{**p, "weight": p["weight"] / mean} for p in pairs]


# ---------------------------------------------------------------------------------------------
# Tokenization and the start-up checks


@dataclass
class PairCheckReport:
    """What the start-up checks found in one split."""

    name: str
    pairs: int = 0
    truncated: int = 0  # pairs where chosen or rejected lost tokens to max_length
    indistinguishable: int = 0  # pairs whose truncated chosen and rejected ids are identical
    examples: list[str] = field(default_factory=list)

    @property
    def indistinguishable_fraction(self) -> float:
        """Fraction of pairs that truncation made identical."""
        return self.indistinguishable / max(self.pairs, 1)

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"{self.name}: {self.pairs} pairs; {self.truncated} truncated; {self.indistinguishable} "
            f"({100 * self.indistinguishable_fraction:.1f}%) lost every distinguishing token to truncation"
        )


def check_pair_texts(pairs: list[dict], name: str) -> None:
    """Raise `DatasetFormatError` for empty texts and identical chosen/rejected (naming the pair)."""
    for index, pair in enumerate(pairs):
        for key in ("chosen", "rejected"):
            if not isinstance(pair[key], str) or not pair[key].strip():
                raise DatasetFormatError(
                    f"{name}: pair {index} ({pair['group']}): key '{key}': expected non-empty text"
                )
        if pair["chosen"] == pair["rejected"]:
            raise DatasetFormatError(
                f"{name}: pair {index} ({pair['group']}): chosen and rejected are the same text; it teaches nothing"
            )


def tokenize_comparisons(
    pairs: list[dict], tokenize: Any, max_length: int, margin_scale: float, name: str, grouped: bool
) -> tuple[list[dict], PairCheckReport]:
    """Rows of token ids the reward trainer reads, plus the truncation report.

    With `grouped`, all pairs of one group (a K-way ranking, a prompt's pairs, a group of snippets) become one
    row holding each distinct text once: the model scores K texts and the loss reads all their pairs, as
    InstructGPT trains a ranking's C(K,2) comparisons as one batch element (K forward passes instead of
    K(K-1)). Without it every pair is its own row of two texts (held-out rows: one prediction per row).

    `tokenize(texts, max_length) -> list[list[int]]` truncates to `max_length` (None: not at all), as
    reward.model.encode_texts does; a text counts as truncated when its ids differ from the untruncated ones.
    Returned rows: text_ids, chosen_index, rejected_index (into text_ids), and per pair margin
    (margin_scale * margin, 0 without one), weight and gap.
    """
    check_pair_texts(pairs, name)
    report = PairCheckReport(name=name, pairs=len(pairs))
    units: dict[Any, list[int]] = {}
    for index, pair in enumerate(pairs):
        units.setdefault(pair["group"] if grouped else index, []).append(index)
    distinct = list(dict.fromkeys(p["prompt"] + p[key] for p in pairs for key in ("chosen", "rejected")))
    ids = dict(zip(distinct, tokenize(distinct, max_length)))
    full = dict(zip(distinct, tokenize(distinct, None)))
    rows = []
    for members in units.values():
        texts: dict[str, int] = {}  # text -> its index in this row
        row = {key: [] for key in ("chosen_index", "rejected_index", "margin", "weight", "gap")}
        for index in members:
            pair = pairs[index]
            chosen, rejected = pair["prompt"] + pair["chosen"], pair["prompt"] + pair["rejected"]
            if full[chosen] != ids[chosen] or full[rejected] != ids[rejected]:
                report.truncated += 1
                if ids[chosen] == ids[rejected]:
                    report.indistinguishable += 1
                    if len(report.examples) < 3:
                        report.examples.append(f"pair {index} ({pair['group']})")
            row["chosen_index"].append(texts.setdefault(chosen, len(texts)))
            row["rejected_index"].append(texts.setdefault(rejected, len(texts)))
            row["margin"].append(margin_scale * (pair["margin"] if pair["margin"] is not None else 0.0))
            row["weight"].append(pair["weight"])
            row["gap"].append(pair["gap"])
        rows.append({"text_ids": [ids[text] for text in texts], **row})
    return rows, report


def check_truncation(report: PairCheckReport, max_fraction: float) -> None:
    """Raise `DatasetFormatError` when more than `max_fraction` of pairs became identical after truncation."""
    if report.indistinguishable_fraction > max_fraction:
        raise DatasetFormatError(
            f"{report.summary()}; more than max_indistinguishable_fraction={max_fraction}. Raise max_length or "
            f"shorten the texts (first: {', '.join(report.examples)})"
        )
