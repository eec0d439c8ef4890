"""The cache folder: a manifest of every prepared file (size, sha256), atomic installs, one run at a time.

Each asset is built in a staging folder inside the cache and moved into place with renames, then recorded
in the manifest; an asset whose recorded files still verify is skipped, so a second run does nothing and a
killed run leaves no half-written asset. A lock file makes concurrent runs on one cache take turns.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alignment.core.errors import UserError
from alignment.core.runs import replace_folder

MANIFEST_NAME = "MANIFEST.json"


class AssetError(UserError, RuntimeError):
    """An asset could not be fetched or prepared; the message names the package, file or command."""


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
    replace_folder(staging, target)


def remove_leftovers(cache: Path) -> None:
    """Delete what a killed run left: its staging folder, and perhaps a replaced old asset (never a half one)."""
    for leftover in list(cache.glob(".staging-*")) + list(cache.rglob(".*.old-*")):
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
