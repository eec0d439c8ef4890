"""The `alignment prepare` configuration: which assets, which cache folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from alignment.core.config import ConfigError, StageConfig
from alignment.core.paths import cache_dir as default_cache_dir

ASSET_NAMES = ("sentiment", "vader", "reasoning", "chatterbot", "smollm2", "minilm")


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
