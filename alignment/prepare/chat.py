"""Chat pairs and conversations from chatterbot-corpus's English YAML files."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from alignment.core.formats import write_jsonl
from alignment.prepare.cache import AssetError
from alignment.prepare.config import Config
from alignment.prepare.packages import package_folder

CHATTERBOT_REQUIREMENT = "chatterbot-corpus==1.3.3"


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
