"""The sentiment datasets: VADER's human-rated snippets (movie, Amazon, NYT, tweets) and the VADER check.

The derivations (parsing the rating files, the stable train/heldout split, demonstrations and prompts from
snippets) are pure functions, tested on tiny fixtures; `build_sentiment` and `build_vader` are the builders.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from alignment.core.formats import write_jsonl
from alignment.prepare.cache import AssetError
from alignment.prepare.config import Config
from alignment.prepare.packages import download_package

VADER_SDIST = "vadersentiment==3.3.2"

VADER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"

# File prefix inside hutto_ICWSM_2014.tar.gz -> the `source` value in snippets.jsonl, with the
# snippet count the paper reports (checked after preparing, so a changed package cannot slip through).
SENTIMENT_SOURCES = {
    "movieReviewSnippets": ("movie", 10_605),
    "amazonReviewSnippets": ("amazon", 3_708),
    "nytEditorialSnippets": ("nyt", 5_190),
    "tweets": ("tweets", 4_200),
}

HELDOUT_PERCENT = 10

PROMPT_WORDS = 4

MIN_DEMO_WORDS = 8
# A continuation demonstration keeps only snippets whose rest is at most this many words: the demo's PPO and
# evaluation sample 24 new tokens. With rests of up to 12 words (14 tokens of the tiny BPE on average, 4% over
# 24) the tuned model, sampled at temperature 1, ran past the budget in 16% of held-out prompts (format score
# 0.80); rests of up to 8 words average 10.5 tokens and all but 0.1% fit (format score 0.90).
MAX_CONTINUATION_WORDS = 8
# The instruction of the sentiment demonstrations. Recipes that prompt SFT-tuned models (configs/ppo/tiny.yaml,
# configs/evaluate/tiny.yaml) repeat it as their prompt_template (a test keeps them equal).
# Continuations are the only kind: with a second kind, "Is this movie review positive or negative? <review>"
# answered in one word (every 4th clearly rated snippet, 1,883 demos), the tuned model ended 13% of held-out
# continuations after one or two words; its format score on 512 prompts was 0.80 (a quarter of those demos:
# 0.86), and 0.92 without them (seed 2, Dec 3 2026).
CONTINUE_INSTRUCTION = "Finish this movie review briefly: {prompt}"


def parse_ground_truth_line(line: str, where: str = "") -> tuple[str, float, str]:
    """Parse a `*_GroundTruth.txt` line `id<TAB>mean rating<TAB>text` into (id, mean, text)."""
    parts = line.rstrip("\r\n").lstrip("\ufeff").split("\t")
    if len(parts) < 3:
        raise AssetError(f"{where}: expected 'id<TAB>mean rating<TAB>text', got {line[:80]!r}")
    snippet_id, mean, text = parts[0].strip(), parts[1], "\t".join(parts[2:])
    try:
        mean_rating = float(mean)
    except ValueError:
        raise AssetError(f"{where}: mean rating {mean!r} is not a number") from None
    return snippet_id, mean_rating, text


def parse_ratings_line(line: str, where: str = "") -> tuple[str, list[int]]:
    """Parse a `*_anonDataRatings.txt` line `id<TAB>mean<TAB>std<TAB>[r1, r2, ...]` into (id, ratings)."""
    parts = line.rstrip("\r\n").lstrip("\ufeff").split("\t")
    if len(parts) != 4:
        raise AssetError(f"{where}: expected 'id<TAB>mean<TAB>std<TAB>[ratings]', got {line[:80]!r}")
    try:
        ratings = json.loads(parts[3])
    except json.JSONDecodeError:
        raise AssetError(f"{where}: ratings {parts[3][:40]!r} are not a JSON list") from None
    if not isinstance(ratings, list) or not ratings or not all(isinstance(r, int) for r in ratings):
        raise AssetError(f"{where}: expected a non-empty list of integer ratings, got {parts[3][:40]!r}")
    return parts[0].strip(), ratings


def clean_text(text: str) -> str:
    """Undo the HTML escapes the tweets carry (`&amp;`) and trim whitespace."""
    return html.unescape(text).strip()


def stable_split(source: str, snippet_id: str, heldout_percent: int = HELDOUT_PERCENT) -> str:
    """'heldout' for about `heldout_percent`% of snippets, else 'train'; fixed by (source, id) alone.

    A hash rather than a seeded shuffle, so the split never moves when rows are added, dropped or reordered.
    """
    digest = hashlib.sha256(f"{source}\t{snippet_id}".encode()).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") % 100 < heldout_percent else "train"


def snippet_rows(source: str, ground_truth: str, ratings: str, name: str = "") -> list[dict[str, Any]]:
    """Join one source's GroundTruth and anonDataRatings file contents into snippets.jsonl rows.

    `mean_rating` is the GroundTruth mean (the published label); `ratings` are the individual raters' scores.
    (For 199 tweets the raw ratings hold extra raters, so their mean differs from the published one.)
    """
    per_id: dict[str, list[int]] = {}
    for number, line in enumerate(ratings.splitlines(), start=1):
        if line.strip():
            snippet_id, scores = parse_ratings_line(line, f"{name}_anonDataRatings.txt: line {number}")
            per_id[snippet_id] = scores
    rows = []
    for number, line in enumerate(ground_truth.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}_GroundTruth.txt: line {number}"
        snippet_id, mean_rating, text = parse_ground_truth_line(line, where)
        if snippet_id not in per_id:
            raise AssetError(f"{where}: id {snippet_id!r} has no ratings in {name}_anonDataRatings.txt")
        rows.append(
            {
                "source": source,
                "id": snippet_id,
                "text": clean_text(text),
                "mean_rating": mean_rating,
                "ratings": per_id[snippet_id],
                "split": stable_split(source, snippet_id),
            }
        )
    return rows


def read_snippet_archive(archive: bytes | Path) -> list[dict[str, Any]]:
    """All snippets.jsonl rows from a `hutto_ICWSM_2014.tar.gz` (given as bytes or a path)."""
    fileobj = io.BytesIO(archive) if isinstance(archive, bytes) else open(archive, "rb")  # noqa: SIM115
    with fileobj, tarfile.open(fileobj=fileobj, mode="r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

        def text_of(filename: str) -> str:
            if filename not in members:
                raise AssetError(f"{VADER_ARCHIVE}: missing {filename} (found {sorted(members)})")
            return tar.extractfile(members[filename]).read().decode("utf-8-sig")

        rows: list[dict[str, Any]] = []
        for prefix, (source, _) in SENTIMENT_SOURCES.items():
            rows += snippet_rows(
                source, text_of(f"{prefix}_GroundTruth.txt"), text_of(f"{prefix}_anonDataRatings.txt"), prefix
            )
    return rows


def make_demo(
    text: str, prompt_words: int = PROMPT_WORDS, min_words: int = MIN_DEMO_WORDS
) -> dict[str, str] | None:
    """Split a snippet into {prompt: first words, completion: " " + the rest}, or None if it is too short.

    Words are whitespace-separated and re-joined with single spaces, so prompt + completion is the
    snippet with its whitespace normalised; the completion keeps its leading space, as a tokenizer
    would see the text continue.
    """
    words = text.split()
    if len(words) < min_words:
        return None
    return {"prompt": " ".join(words[:prompt_words]), "completion": " " + " ".join(words[prompt_words:])}


def instruction_demo(row: dict[str, Any]) -> dict[str, Any] | None:
    """The SFT demonstration one movie snippet gives, as a chat `messages` row with its `kind`, or None.

    The user asks for a brief end of the review from its first words (CONTINUE_INSTRUCTION, the instruction PPO
    and evaluation ask with); the assistant answers with the rest of the snippet, for snippets whose rest is at
    most MAX_CONTINUATION_WORDS words. A base model pretrained on raw reviews knows neither the chat template
    nor when to stop, so SFT has something visible to teach.
    """
    demo = make_demo(row["text"])
    if demo is None or len(demo["completion"].split()) > MAX_CONTINUATION_WORDS:
        return None
    messages = [
        {"role": "user", "content": CONTINUE_INSTRUCTION.format(prompt=demo["prompt"])},
        {"role": "assistant", "content": demo["completion"]},
    ]
    return {"messages": messages, "kind": "continue"}


def sentiment_files(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every file of datasets/sentiment/ (name -> rows) derived from the snippet rows."""
    files: dict[str, list[dict[str, Any]]] = {"snippets.jsonl": rows}
    for split in ("train", "heldout"):
        in_split = [row for row in rows if row["split"] == split]
        files[f"corpus_{split}.jsonl"] = [{"text": row["text"]} for row in in_split]
        movie = [row for row in in_split if row["source"] == "movie"]
        files[f"demos_{split}.jsonl"] = [demo for demo in map(instruction_demo, movie) if demo]
        # PPO and evaluation prompts: the raw first words; recipes ask them in CONTINUE_INSTRUCTION.
        starts = [make_demo(row["text"]) for row in movie]
        files[f"prompts_{split}.jsonl"] = [{"prompt": demo["prompt"]} for demo in starts if demo is not None]
    return files


def build_sentiment(staging: Path, cache: Path, config: Config) -> dict[str, Any]:
    """datasets/sentiment/ from the VADER sdist's human-rated snippets."""
    sdist = download_package(VADER_SDIST, cache / "downloads", "vadersentiment-3.3.2.tar.gz", sdist=True)
    with tarfile.open(sdist, "r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(VADER_ARCHIVE)), None)
        if member is None:
            raise AssetError(f"{sdist}: no {VADER_ARCHIVE} inside; is it the vadersentiment 3.3.2 sdist?")
        rows = read_snippet_archive(tar.extractfile(member).read())
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["source"]] = counts.get(row["source"], 0) + 1
    for source, expected in SENTIMENT_SOURCES.values():
        if counts.get(source) != expected:
            raise AssetError(f"{sdist}: expected {expected} {source} snippets, found {counts.get(source, 0)}")
    written = {}
    for name, file_rows in sentiment_files(rows).items():
        written[name] = write_jsonl(file_rows, staging / "datasets" / "sentiment" / name)
    return {"rows": written, "sources": counts}


def build_vader(staging: Path, cache: Path, config: Config) -> dict[str, Any]:
    """Check the VADER lexicon scorer (a project dependency) imports and scores; it writes no files."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as err:
        raise AssetError(
            f"package 'vadersentiment' is not importable ({err}); run `pip install vadersentiment`"
        ) from None
    analyzer = SentimentIntensityAnalyzer()
    good = analyzer.polarity_scores("What a wonderful, delightful film!")["compound"]
    bad = analyzer.polarity_scores("A dull, terrible waste of time.")["compound"]
    if not (good > 0.5 and bad < -0.5):
        raise AssetError(f"vadersentiment scores look wrong: positive {good}, negative {bad}")
    return {"positive_example": good, "negative_example": bad}
