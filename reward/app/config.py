"""Configuration of the labeling app (`alignment label --config configs/label/tiny.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from alignment.core.chat import check_template
from alignment.core.config import ConfigError, StageConfig, require

ROLES = ("labeler", "admin")


@dataclass
class LabelConfig(StageConfig):
    """Where the app listens, where it stores labels, which items it serves and how they are shared out."""

    stage: ClassVar[str] = "label"

    host: str = field(
        default="127.0.0.1",
        metadata={
            "help": "Interface to listen on. Serve others through a TLS reverse proxy on this loopback address; "
            "binding another interface serves plain HTTP (passwords in clear) and is warned about."
        },
    )
    port: int = field(default=7860, metadata={"help": "TCP port of the Gradio server."})
    db_path: str | None = field(
        default=None, metadata={"help": "SQLite database file (WAL mode); default <run_dir>/labels.sqlite."}
    )
    guidelines_path: str = field(
        default="data/guidelines.md", metadata={"help": "Markdown file shown to labelers on the page."}
    )
    items_path: str | None = field(
        default=None,
        metadata={
            "help": "JSONL of items loaded at start-up: {prompt, completions: [2..9 strings]} rows, or "
            "{prompt} rows whose candidates are generated from `checkpoints`. Loading twice adds nothing."
        },
    )
    items_dir: str | None = field(
        default=None,
        metadata={
            "help": "The only folder an admin may load item files from on the page (by file name); "
            "default <run_dir>/items."
        },
    )
    max_request_kb: int = field(
        default=256, metadata={"help": "Requests with a larger body are refused (HTTP 413) before parsing."}
    )
    checkpoints: list[str] = field(
        default_factory=list,
        metadata={"help": "Model folders (or cache:// paths) that generate candidates for prompt-only rows."},
    )
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "How checkpoints are asked for candidates, with {prompt} (the instruction they were tuned on); "
            "labelers see the raw prompt. null: the prompt itself."
        },
    )
    use_chat_template: bool = field(
        default=False, metadata={"help": "Ask checkpoints in their chat template (a user turn)."}
    )
    samples_per_checkpoint: int = field(
        default=2,
        metadata={"help": "Candidates sampled from each checkpoint per prompt (K = this x checkpoints)."},
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Sampling: new tokens per candidate."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (0 = greedy)."})
    top_k: int = field(default=0, metadata={"help": "Sampling: keep the k most likely tokens (0 = off)."})
    top_p: float = field(default=1.0, metadata={"help": "Sampling: nucleus probability mass."})
    overlap: int = field(
        default=2, metadata={"help": "Labelers each item goes to (M); agreement needs M >= 2."}
    )
    stale_assignment_minutes: float = field(
        default=60.0,
        metadata={
            "help": "An item shown but not answered for this long stops holding one of its M slots "
            "(the labeler still gets it back on resume)."
        },
    )
    session_hours: float = field(default=12.0, metadata={"help": "A login stays valid this long."})
    users: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={
            "help": "Accounts created at start-up if missing: [{name, role: labeler|admin, password_env: VAR}] "
            "(the password is read from environment variable VAR; `password:` in clear is for local tests only)."
        },
    )
    export_dir: str | None = field(
        default=None, metadata={"help": "Folder the admin's export writes to; default <run_dir>/export."}
    )
    keep_ties: bool = field(
        default=False,
        metadata={
            "help": "Export: also write tied candidate pairs to pairs_ties.jsonl (pairs.jsonl never has ties)."
        },
    )
    alpha_metric: str = field(
        default="ordinal", metadata={"help": "Krippendorff's alpha difference function: ordinal or interval."}
    )

    def validate(self) -> None:
        """Reject impossible values, naming the key."""
        super().validate()
        require(1 <= self.port <= 65535, "port", "a TCP port 1..65535", self.port)
        require(self.max_request_kb >= 1, "max_request_kb", "an integer >= 1", self.max_request_kb)
        check_template(self.prompt_template, "prompt_template")
        require(self.overlap >= 1, "overlap", "an integer >= 1", self.overlap)
        require(
            self.samples_per_checkpoint >= 1,
            "samples_per_checkpoint",
            "an integer >= 1",
            self.samples_per_checkpoint,
        )
        require(self.max_new_tokens >= 1, "max_new_tokens", "an integer >= 1", self.max_new_tokens)
        require(self.temperature >= 0, "temperature", "a number >= 0", self.temperature)
        require(0 < self.top_p <= 1, "top_p", "a number in (0, 1]", self.top_p)
        require(self.session_hours > 0, "session_hours", "a positive number", self.session_hours)
        require(
            self.stale_assignment_minutes > 0,
            "stale_assignment_minutes",
            "a positive number",
            self.stale_assignment_minutes,
        )
        require(
            self.alpha_metric in ("ordinal", "interval"),
            "alpha_metric",
            "'ordinal' or 'interval'",
            self.alpha_metric,
        )
        if self.checkpoints:
            k = len(self.checkpoints) * self.samples_per_checkpoint
            require(
                2 <= k <= 9,
                "samples_per_checkpoint",
                "checkpoints x samples_per_checkpoint between 2 and 9",
                k,
            )
        for i, user in enumerate(self.users):
            key = f"users[{i}]"
            if (
                not isinstance(user, dict)
                or not isinstance(user.get("name"), str)
                or not user["name"].strip()
            ):
                raise ConfigError(f"{key}: expected a mapping with a non-empty 'name', got {user!r}")
            unknown = set(user) - {"name", "role", "password_env", "password"}
            require(not unknown, key, "only keys name, role, password_env, password", sorted(unknown))
            require(
                user.get("role", "labeler") in ROLES, f"{key}.role", "'labeler' or 'admin'", user.get("role")
            )
            require(
                ("password_env" in user) != ("password" in user),
                key,
                "exactly one of password_env or password",
                user,
            )

    @property
    def database(self) -> Path:
        """The SQLite file."""
        return Path(self.db_path) if self.db_path else self.run_dir / "labels.sqlite"

    @property
    def items_folder(self) -> Path:
        """The folder admins load item files from."""
        return Path(self.items_dir) if self.items_dir else self.run_dir / "items"

    @property
    def export_folder(self) -> Path:
        """Where exports go."""
        return Path(self.export_dir) if self.export_dir else self.run_dir / "export"
