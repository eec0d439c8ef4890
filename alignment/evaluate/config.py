"""The evaluation stage's configuration: which checkpoints, which prompts, which judges, which checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from alignment.core.config import StageConfig, require
from alignment.core.judges import check_judge_spec


@dataclass
class Config(StageConfig):
    """Which checkpoints to compare, on which prompts, with which judges."""

    stage: ClassVar[str] = "evaluate"

    models: dict = field(
        default_factory=dict,
        metadata={
            "help": "Models to evaluate: name -> model folder (any causal LM folder or cache:// path)."
        },
    )
    baseline: str | None = field(
        default=None,
        metadata={"help": "Model name that win rates are measured against (default: the first)."},
    )
    reference: str | None = field(
        default=None,
        metadata={
            "help": "KL reference: a name in `models` or a model folder (default: the baseline); null to skip."
        },
    )
    reward_model: str | None = field(
        default=None,
        metadata={"help": "Reward model folder (reward/model.py format); null to skip RM scores."},
    )
    prompts: str = field(
        default="cache://datasets/sentiment/prompts_heldout.jsonl",
        metadata={
            "help": "Prompt set: a JSONL/JSON/CSV/Parquet file with a `prompt` column, or a .txt file, one per line."
        },
    )
    max_prompts: int = field(default=128, metadata={"help": "Use the first N prompts."})
    judges: list[str] = field(
        default_factory=lambda: ["vader"],
        metadata={
            "help": "Judges: 'vader' or 'module:function' (Callable[[str], float]); the first is the gold judge."
        },
    )
    judge_prompt: bool = field(
        default=True,
        metadata={"help": "Judges and the reward model see prompt + response (false: response only)."},
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Tokens sampled per response."})
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature (0 = greedy; KL needs 1)."}
    )
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0 = off)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (1.0 = off)."})
    max_prompt_length: int = field(
        default=64, metadata={"help": "Prompts are truncated to this many tokens."}
    )
    batch_size: int = field(default=32, metadata={"help": "Prompts per generation/forward batch."})
    perplexity_data: str | None = field(
        default="cache://datasets/sentiment/corpus_heldout.jsonl",
        metadata={
            "help": "Natural text for held-out perplexity (`text` column, or prompt+completion); null to skip."
        },
    )
    perplexity_source: str | None = field(
        default=None, metadata={"help": "Keep only rows whose `source` is this (e.g. movie); null keeps all."}
    )
    perplexity_max_rows: int = field(default=256, metadata={"help": "Use the first N perplexity texts."})
    max_length: int = field(
        default=128,
        metadata={"help": "Perplexity texts and reward-model inputs are truncated to this many tokens."},
    )
    num_samples: int = field(default=8, metadata={"help": "Prompts shown side by side in report.md."})
    plots: bool = field(
        default=True, metadata={"help": "Write PNG plots (training curves, gold score against KL)."}
    )
    check_model: str = field(
        default="ppo", metadata={"help": "Model whose acceptance checks report.md states."}
    )
    check_baseline: str = field(
        default="sft", metadata={"help": "Model the checks compare `check_model` with."}
    )
    check_min_gold_gain: float = field(
        default=0.3, metadata={"help": "Check: gold score gain at least this."}
    )
    check_min_distinct_ratio: float = field(
        default=0.5, metadata={"help": "Check: distinct-2 ratio at least this."}
    )
    check_max_perplexity_ratio: float = field(
        default=1.5, metadata={"help": "Check: held-out perplexity ratio at most this."}
    )
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if available), 'cpu' or 'cuda'."})

    def validate(self) -> None:
        """Reject impossible values, naming the key."""
        super().validate()
        for name, path in self.models.items():
            require(isinstance(path, str) and bool(path), f"models.{name}", "a model folder path", path)
        # `models` may come from the command line after a file is validated alone (parse_config does
        # that), so "at least one model" and "baseline is one of them" are checked in `check_models`.
        require(self.max_prompts >= 1, "max_prompts", ">= 1", self.max_prompts)
        require(bool(self.judges), "judges", "at least one judge", self.judges)
        require(self.max_new_tokens >= 1, "max_new_tokens", ">= 1", self.max_new_tokens)
        require(self.temperature >= 0, "temperature", ">= 0", self.temperature)
        require(0 < self.top_p <= 1, "top_p", "in (0, 1]", self.top_p)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        require(self.perplexity_max_rows >= 1, "perplexity_max_rows", ">= 1", self.perplexity_max_rows)
        require(self.max_length >= 2, "max_length", ">= 2", self.max_length)
        require(self.num_samples >= 0, "num_samples", ">= 0", self.num_samples)
        require(self.device in ("auto", "cpu", "cuda"), "device", "'auto', 'cpu' or 'cuda'", self.device)
        for index, spec in enumerate(self.judges):
            check_judge_spec(spec, f"judges[{index}]")

    def check_models(self) -> None:
        """Raise `ConfigError` unless there is a model to evaluate and the baseline is one of them."""
        require(bool(self.models), "models", "a mapping of at least one name -> model folder", self.models)
        if self.baseline is not None:
            require(self.baseline in self.models, "baseline", f"one of {list(self.models)}", self.baseline)

    @property
    def baseline_name(self) -> str:
        """The baseline model's name (the first model unless set)."""
        return self.baseline or next(iter(self.models))
