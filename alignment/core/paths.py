"""Where prepared assets live, and how recipes refer to them.

Recipes name prepared assets as `cache://<relative path>` (for example `cache://models/smollm2-135m-instruct`)
so the same YAML works whatever cache folder a user picks. The cache folder is, in order: the
`ALIGNMENT_CACHE` environment variable, else `data/cache` under the repository (git-ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_PREFIX = "cache://"


def cache_dir() -> Path:
    """The folder `alignment prepare` writes into and `cache://` paths resolve against."""
    return Path(os.environ.get("ALIGNMENT_CACHE", REPO_ROOT / "data" / "cache")).expanduser()


def resolve_path(name_or_path: str) -> str:
    """Turn `cache://x` into a path under the cache folder; leave other paths and hub names as they are."""
    if name_or_path.startswith(CACHE_PREFIX):
        return str(cache_dir() / name_or_path[len(CACHE_PREFIX) :])
    return name_or_path
