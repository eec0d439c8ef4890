"""The reward stage's configuration: backbone, comparison data, pair selection, optimization, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from alignment.core.config import PRECISION_HELP, RESUME_HELP, StageConfig, require
from alignment.core.errors import ConfigError
from reward.data import SENTIMENT_SOURCES, parse_shard


@dataclass
class Config(StageConfig):
    """Options of `alignment reward`."""

    stage: ClassVar[str] = "reward"

    model: str = field(
        default="runs/tiny-sentiment/sft/model",
        metadata={
            "help": "Backbone: a causal LM folder (usually the SFT model) or an encoder such as "
            "cache://models/minilm-l6-v2; a fresh scalar head is put on top."
        },
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "Tokenizer folder, if not the backbone's (the RM keeps its own tokenizer)."},
    )
    train_data: str | None = field(
        default=None,
        metadata={
            "help": "Pairs (prompt, chosen, rejected[, margin]) or rankings (prompt, completions, ranks) "
            "file; null uses the human-rated sentiment snippets (snippets_file)."
        },
    )
    eval_data: str | None = field(
        default=None,
        metadata={"help": "Held-out comparisons; null splits train_data by prompt (eval_fraction)."},
    )
    train_shard: str | None = field(
        default=None,
        metadata={
            "help": "Train on one shard of the comparisons, 'i/n' (by a fixed hash of the text or prompt): two "
            "RMs on 0/2 and 1/2 never share a comparison, so one can judge a policy trained on the other "
            "(a held-out RM where no gold judge exists). Held-out pairs are not sharded. null: all."
        },
    )
    eval_fraction: float = field(
        default=0.1, metadata={"help": "Share of prompts held out when eval_file is null."}
    )
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "Drop and count malformed rows instead of failing."}
    )
    snippets_file: str = field(
        default="cache://datasets/sentiment/snippets.jsonl",
        metadata={"help": "Human-rated snippets (text, mean_rating, split, source) for the default pairs."},
    )
    sources: list[str] = field(
        default_factory=lambda: list(SENTIMENT_SOURCES),
        metadata={"help": "Snippet sources to pair: any of movie, amazon, nyt, tweets."},
    )
    min_rating_gap: float = field(
        default=1.0,
        metadata={"help": "Pair two snippets only if their mean human ratings differ by at least this."},
    )
    max_rating_gap: float | None = field(
        default=None,
        metadata={
            "help": "Leave out training pairs whose ratings differ by more than this (null: keep all). Far-apart "
            "pairs (a rave against a pan) are learnt by any polarity detector; near pairs make the model order "
            "texts along the whole rating scale, raves above mild praise."
        },
    )
    eval_min_rating_gap: float = field(
        default=0.25,
        metadata={
            "help": "Minimum rating gap of held-out pairs; below min_rating_gap so accuracy by gap covers "
            "hard pairs too."
        },
    )
    max_train_pairs: int = field(
        default=3000, metadata={"help": "Number of snippet pairs drawn for training."}
    )
    snippet_group_size: int = field(
        default=2,
        metadata={
            "help": "Snippets drawn for training in groups of this many (2: independent pairs). K > 2 draws the "
            "same 2 * max_train_pairs texts as groups of K, each group scored once and trained on all its "
            "pairs with a rating gap >= min_rating_gap."
        },
    )
    max_eval_pairs: int = field(
        default=1000, metadata={"help": "Number of snippet pairs drawn from the held-out texts."}
    )
    margin_scale: float = field(
        default=0.0,
        metadata={
            "help": "Loss margin = margin_scale * margin column (rating gap); 0 trains plain Bradley-Terry."
        },
    )
    center_rewards_coefficient: float | None = field(
        default=None,
        metadata={"help": "Weight of mean((r_c + r_r)^2), keeping rewards centred; null disables."},
    )
    max_length: int = field(
        default=128, metadata={"help": "Tokens per text (prompt + completion); longer is cut."}
    )
    precision: Literal["fp32", "bf16", "auto"] = field(default="fp32", metadata={"help": PRECISION_HELP})
    max_indistinguishable_fraction: float = field(
        default=0.01,
        metadata={"help": "Fail when more than this share of pairs become identical after truncation."},
    )
    gap_edges: list[float] = field(
        default_factory=lambda: [1.0, 2.0],
        metadata={"help": "Rating-gap bucket edges for held-out accuracy (gap < 1, 1-2, >= 2)."},
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of steps with linear warm-up."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training pairs."})
    max_steps: int = field(
        default=-1, metadata={"help": "Stop after this many optimizer steps (-1: use epochs)."}
    )
    per_device_train_batch_size: int = field(
        default=16,
        metadata={
            "help": "Training rows per device per step: a row is a group of comparisons scored together (a "
            "K-way ranking, one prompt's pairs, a snippet pair or a snippet group)."
        },
    )
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Pairs per device per eval step."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log training metrics every this many steps."})
    eval_steps: int = field(
        default=0, metadata={"help": "Evaluate every this many steps (0: only at the end)."}
    )
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept."})
    resume: str = field(default="auto", metadata={"help": RESUME_HELP})

    def validate(self) -> None:
        """Reject impossible values, naming the key."""
        super().validate()
        require(0.0 < self.eval_fraction < 1.0, "eval_fraction", "a number in (0, 1)", self.eval_fraction)
        if self.train_shard is not None:
            try:
                parse_shard(self.train_shard)
            except ValueError:
                raise ConfigError(
                    f"train_shard: expected 'i/n' with 0 <= i < n and n >= 2, got {self.train_shard!r}"
                ) from None
        unknown = sorted(set(self.sources) - set(SENTIMENT_SOURCES))
        require(
            bool(self.sources) and not unknown,
            "sources",
            f"a non-empty subset of {SENTIMENT_SOURCES}",
            self.sources,
        )
        require(self.min_rating_gap > 0, "min_rating_gap", "> 0", self.min_rating_gap)
        if self.max_rating_gap is not None:
            require(
                self.max_rating_gap >= self.min_rating_gap,
                "max_rating_gap",
                f">= min_rating_gap ({self.min_rating_gap}), or null",
                self.max_rating_gap,
            )
        require(self.eval_min_rating_gap > 0, "eval_min_rating_gap", "> 0", self.eval_min_rating_gap)
        require(self.max_train_pairs >= 1, "max_train_pairs", ">= 1", self.max_train_pairs)
        require(self.snippet_group_size >= 2, "snippet_group_size", ">= 2", self.snippet_group_size)
        require(self.max_eval_pairs >= 1, "max_eval_pairs", ">= 1", self.max_eval_pairs)
        require(self.margin_scale >= 0, "margin_scale", ">= 0", self.margin_scale)
        require(self.max_length >= 8, "max_length", ">= 8", self.max_length)
        require(
            0 <= self.max_indistinguishable_fraction <= 1,
            "max_indistinguishable_fraction",
            "a number in [0, 1]",
            self.max_indistinguishable_fraction,
        )
        require(
            list(self.gap_edges) == sorted(self.gap_edges) and len(self.gap_edges) >= 1,
            "gap_edges",
            "a non-empty increasing list",
            self.gap_edges,
        )
