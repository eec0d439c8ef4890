"""Comparison data: ranking expansion with ties, malformed rows, snippet pairs split by text, start-up checks."""

import json
import math

import pytest

from alignment.core.config import ConfigError, parse_config
from alignment.core.formats import DatasetFormatError, write_jsonl
from reward.config import Config
from reward.data import (
    check_truncation,
    load_preference_file,
    normalise_weights,
    parse_shard,
    ranking_to_pairs,
    read_snippets,
    sentiment_pairs,
    shard_pairs,
    shard_snippets,
    split_by_group,
    tokenize_comparisons,
)


def test_ranking_expands_to_non_tied_pairs_with_equal_weights():
    pairs = ranking_to_pairs("Q", ["a", "b", "c", "d"], [2, 1, 2, 3])
    got = {(p["chosen"], p["rejected"]) for p in pairs}
    # b (1) beats everyone; a and c (2) tie with each other and beat d (3): 5 of C(4,2) = 6 pairs
    assert got == {("b", "a"), ("b", "c"), ("b", "d"), ("a", "d"), ("c", "d")}
    assert all(p["weight"] == pytest.approx(1 / 6) and p["prompt"] == "Q" for p in pairs)
    assert all(math.isnan(p["gap"]) for p in pairs)


@pytest.mark.parametrize(
    ("completions", "ranks", "message"),
    [
        (["a", "b", "c"], [1, 2], "one rank per completion"),
        (["a"], [1], "at least 2 completions"),
        (["a", "b", "c"], [2, 2, 2], "all 3 completions are tied"),
        (["a", "a"], [1, 2], "same text with different ranks"),
    ],
)
def test_malformed_rankings_name_the_row(completions, ranks, message):
    with pytest.raises(DatasetFormatError, match=message) as err:
        ranking_to_pairs("Q", completions, ranks, "file.jsonl: row 7")
    assert "row 7" in str(err.value)


def test_rankings_file_errors_name_file_and_row(tmp_path):
    path = tmp_path / "rankings.jsonl"
    write_jsonl(
        [
            {"prompt": "p", "completions": ["x", "y"], "ranks": [1, 2]},
            {"prompt": "p", "completions": ["x", "y"], "ranks": [1, 1]},
        ],
        path,
    )
    with pytest.raises(DatasetFormatError, match=r"rankings.jsonl: row 2: key 'ranks'"):
        load_preference_file(str(path))
    pairs = load_preference_file(str(path), skip_bad_rows=True)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("x", "y")]


def test_pairs_file_keeps_margin_and_rejects_identical(tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_jsonl([{"prompt": "p", "chosen": "good", "rejected": "bad", "margin": 1.5}], path)
    (pair,) = load_preference_file(str(path))
    assert pair["margin"] == 1.5 and pair["gap"] == 1.5 and pair["weight"] == 1.0
    write_jsonl([{"prompt": "p", "chosen": "same", "rejected": "same"}], path)
    with pytest.raises(DatasetFormatError, match="row 1: key 'rejected'"):
        load_preference_file(str(path))


def test_weights_normalise_to_mean_one():
    pairs = ranking_to_pairs("Q", ["a", "b", "c"], [1, 2, 3]) + [{"weight": 1.0}]
    weights = [p["weight"] for p in normalise_weights(pairs)]
    assert sum(weights) / len(weights) == pytest.approx(1.0)
    assert weights[0] == pytest.approx(weights[-1] / 3)  # a 3-way ranking's pairs share one pair's weight


@pytest.fixture()
def snippets(tmp_path):
    rows = [
        {
            "source": "movie" if i % 2 else "nyt",
            "id": str(i),
            "text": f"text {i}",
            "mean_rating": (i % 9) - 4.0,
            "ratings": [1],
            "split": "heldout" if i % 5 == 0 else "train",
        }
        for i in range(60)
    ]
    path = tmp_path / "snippets.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_snippet_pairs_split_by_text_and_deterministic(snippets):
    rows = read_snippets(str(snippets))
    train = sentiment_pairs(rows, "train", 1.0, 100, seed=3)
    heldout = sentiment_pairs(rows, "heldout", 1.0, 20, seed=3)
    assert len(train) == 100 and 0 < len(heldout) <= 20
    train_texts = {t for p in train for t in (p["chosen"], p["rejected"])}
    heldout_texts = {t for p in heldout for t in (p["chosen"], p["rejected"])}
    assert not train_texts & heldout_texts
    rating = {r["text"]: r["mean_rating"] for r in rows}
    for p in train:
        assert p["prompt"] == "" and rating[p["chosen"]] - rating[p["rejected"]] == pytest.approx(p["margin"])
        assert p["margin"] >= 1.0
    assert sentiment_pairs(rows, "train", 1.0, 100, seed=3) == train
    assert sentiment_pairs(rows, "train", 1.0, 100, seed=4) != train


@pytest.mark.parametrize("group_size", [2, 6])
def test_max_rating_gap_keeps_only_near_pairs(snippets, group_size):
    rows = read_snippets(str(snippets))
    near = sentiment_pairs(rows, "train", 1.0, 40, seed=3, group_size=group_size, max_gap=2.0)
    everything = sentiment_pairs(rows, "train", 1.0, 40, seed=3, group_size=group_size)
    assert near and all(1.0 <= p["gap"] <= 2.0 for p in near)
    assert any(p["gap"] > 2.0 for p in everything)  # the limit removed pairs that the draw holds
    with pytest.raises(DatasetFormatError, match="rating gap >= 1.5 and <= 1.9"):  # ratings are whole numbers
        sentiment_pairs(rows, "train", 1.5, 40, seed=3, group_size=group_size, max_gap=1.9)
    with pytest.raises(ConfigError, match=r"max_rating_gap: expected >= min_rating_gap \(1.5\)"):
        parse_config(Config, ["--min_rating_gap", "1.5", "--max_rating_gap", "1.0"])


def test_two_shards_train_on_disjoint_texts_and_evaluate_alike(snippets):
    rows = read_snippets(str(snippets))
    halves = [shard_snippets(rows, parse_shard(f"{i}/2")) for i in (0, 1)]
    train_texts = [{r["text"] for r in half if r["split"] == "train"} for half in halves]
    assert not train_texts[0] & train_texts[1]
    assert train_texts[0] | train_texts[1] == {r["text"] for r in rows if r["split"] == "train"}
    assert all(train_texts)  # 48 training texts: both halves hold some
    pairs = [sentiment_pairs(half, "train", 1.0, 30, seed=s) for half, s in zip(halves, (1, 2))]
    used = [{t for p in ps for t in (p["chosen"], p["rejected"])} for ps in pairs]
    assert not used[0] & used[1]  # different seeds too: the hash, not the seed, decides the shard
    held_out = [sentiment_pairs(half, "heldout", 1.0, 20, seed=3) for half in halves]
    assert held_out[0] == held_out[1]


def test_pair_shards_keep_whole_groups():
    pairs = [
        p for g in range(20) for p in ranking_to_pairs("Q", ["a", "b", "c"], [1, 2, 3], where=f"row {g}")
    ]
    first, second = (shard_pairs(pairs, (i, 2)) for i in (0, 1))
    groups = [{p["group"] for p in half} for half in (first, second)]
    assert not groups[0] & groups[1] and len(first) + len(second) == len(pairs)
    assert all(len([p for p in first if p["group"] == g]) == 3 for g in groups[0])


@pytest.mark.parametrize("spec", ["2/2", "1/1", "a/2", "1", "-1/2", "0/"])
def test_bad_shard_specs(spec):
    with pytest.raises(ValueError):
        parse_shard(spec)
    with pytest.raises(ConfigError, match="train_shard: expected 'i/n'"):
        parse_config(Config, ["--train_shard", spec])


def test_snippet_source_filter_and_bad_rows(snippets, tmp_path):
    assert {r["source"] for r in read_snippets(str(snippets), ["movie"])} == {"movie"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"source": "movie", "id": "1", "text": "t", "split": "train"}) + "\n")
    with pytest.raises(DatasetFormatError, match="line 1: key 'mean_rating'"):
        read_snippets(str(bad))


def test_split_by_group_keeps_groups_whole():
    pairs = [p for q in range(40) for p in ranking_to_pairs(f"q{q}", ["a", "b", "c"], [1, 2, 3], f"q{q}")]
    train, evaluation = split_by_group(pairs, 0.25, seed=0)
    assert train and evaluation and len(train) + len(evaluation) == len(pairs)
    assert not {p["group"] for p in train} & {p["group"] for p in evaluation}


def _char_tokenize(texts, max_length):  # one id per character, truncated like reward.model.encode_texts
    return [[ord(c) for c in t][:max_length] if max_length else [ord(c) for c in t] for t in texts]


def test_truncation_report_counts_pairs_that_lose_their_difference():
    pairs = [
        {
            "prompt": "",
            "chosen": "abcdefgh GOOD",
            "rejected": "abcdefgh BAD",
            "margin": None,
            "gap": 1.0,
            "weight": 1.0,
            "group": "g0",
        },
        {
            "prompt": "",
            "chosen": "GOOD abcdefgh",
            "rejected": "BAD abcdefgh",
            "margin": 2.0,
            "gap": 2.0,
            "weight": 1.0,
            "group": "g1",
        },
        {
            "prompt": "",
            "chosen": "ok",
            "rejected": "no",
            "margin": None,
            "gap": 1.0,
            "weight": 1.0,
            "group": "g2",
        },
    ]
    rows, report = tokenize_comparisons(pairs, _char_tokenize, 8, 0.5, "train", grouped=False)
    assert (report.pairs, report.truncated, report.indistinguishable) == (3, 2, 1)
    assert rows[1]["margin"] == [1.0] and rows[0]["margin"] == [0.0]
    check_truncation(report, 0.5)
    with pytest.raises(
        DatasetFormatError, match=r"1 \(33.3%\) lost every distinguishing token.*pair 0 \(g0\)"
    ):
        check_truncation(report, 0.1)


@pytest.mark.parametrize(
    ("chosen", "rejected", "message"), [("same", "same", "same text"), ("  ", "x", "non-empty")]
)
def test_identical_and_empty_texts_are_rejected(chosen, rejected, message):
    pair = {
        "prompt": "",
        "chosen": chosen,
        "rejected": rejected,
        "margin": None,
        "gap": 1.0,
        "weight": 1.0,
        "group": "g9",
    }
    with pytest.raises(DatasetFormatError, match=f"train: pair 0 \\(g9\\).*{message}"):
        tokenize_comparisons([pair], _char_tokenize, 8, 0.0, "train", grouped=True)


def test_a_ranking_becomes_one_row_scoring_each_text_once():
    pairs = ranking_to_pairs("Q: ", ["a", "b", "c", "d"], [2, 1, 2, 3], where="row 1")
    pairs += ranking_to_pairs("R: ", ["x", "y"], [1, 2], where="row 2")
    grouped, _ = tokenize_comparisons(pairs, _char_tokenize, 64, 0.0, "train", grouped=True)
    assert len(grouped) == 2 and len(grouped[0]["text_ids"]) == 4 and len(grouped[1]["text_ids"]) == 2
    apart, _ = tokenize_comparisons(pairs, _char_tokenize, 64, 0.0, "eval", grouped=False)
    assert len(apart) == len(pairs) == 6 and all(len(r["text_ids"]) == 2 for r in apart)
    for rows in (grouped, apart):  # either layout names the same (chosen, rejected) texts, weights and gaps
        named = [
            (row["text_ids"][c], row["text_ids"][r], w)
            for row in rows
            for c, r, w in zip(row["chosen_index"], row["rejected_index"], row["weight"])
        ]
        expected = [
            (
                _char_tokenize([p["prompt"] + p["chosen"]], 64)[0],
                _char_tokenize([p["prompt"] + p["rejected"]], 64)[0],
                p["weight"],
            )
            for p in pairs
        ]
        assert named == expected


def test_snippet_groups_keep_every_pair_with_enough_gap(snippets):
    rows = read_snippets(str(snippets))
    rating = {r["text"]: r["mean_rating"] for r in rows if r["split"] == "train"}
    pairs = sentiment_pairs(rows, "train", 1.0, 12, seed=3, group_size=6)
    groups: dict[str, set[str]] = {}
    for p in pairs:
        groups.setdefault(p["group"], set()).update((p["chosen"], p["rejected"]))
        assert rating[p["chosen"]] - rating[p["rejected"]] == pytest.approx(p["gap"]) and p["gap"] >= 1.0
    assert len(groups) <= 2 * 12 // 6 and len(set().union(*groups.values())) == sum(map(len, groups.values()))
    for members in groups.values():  # every pair of a group with a gap >= 1 is there, none twice
        wanted = {(a, b) for a in members for b in members if rating[a] - rating[b] >= 1.0}
        got = [(p["chosen"], p["rejected"]) for p in pairs if p["chosen"] in members]
        assert sorted(got) == sorted(wanted)
    assert sentiment_pairs(rows, "train", 1.0, 12, seed=3, group_size=6) == pairs
