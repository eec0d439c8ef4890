"""The fine-tuning stage's configuration: backbone, task, data, what trains, schedule, evaluation, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from alignment.core.config import RESUME_HELP, ConfigError, StageConfig, require

SNIPPET_SOURCES = ("movie", "amazon", "nyt", "tweets")
# Which tasks each built-in dataset can be read as ("files" reads any task from train_data / eval_data).
DATASET_TASKS = {
    "sentiment_binary": ("classification", "text_to_text"),
    "sentiment_5way": ("classification", "text_to_text"),
    "sentiment_rating": ("regression",),
    "chatterbot_qnli": ("classification", "text_to_text"),
    "arithmetic": ("text_to_text",),
    "files": ("classification", "regression", "multiple_choice", "text_to_text"),
}
PeftChoice = Literal["none", "lora", "ia3", "prompt_tuning", "prefix_tuning", "bitfit"]


@dataclass
class Config(StageConfig):
    """Options of `alignment finetune` (MiniLM on binary sentiment by default)."""

    stage: ClassVar[str] = "finetune"

    run_name: str = field(
        default="minilm-sentiment",
        metadata={"help": "Run folder name: outputs go to <output_root>/<run_name>/finetune/."},
    )
    model: str = field(
        default="cache://models/minilm-l6-v2",
        metadata={
            "help": "Backbone folder or hub name: a BERT-family encoder ([CLS] head), a decoder (GPT-1 style "
            "classifier on the last token) or an encoder-decoder such as T5 (text-to-text)."
        },
    )
    task: Literal["classification", "regression", "multiple_choice", "text_to_text"] = field(
        default="classification",
        metadata={
            "help": "classification (single texts or text/text_pair pairs), regression (one output, MSE), "
            "multiple_choice (decoders: one sequence per choice, softmax over them), text_to_text (T5: "
            "the label or completion as words, exact match on generations)."
        },
    )
    dataset: Literal[
        "files", "sentiment_binary", "sentiment_5way", "sentiment_rating", "chatterbot_qnli", "arithmetic"
    ] = field(
        default="sentiment_binary",
        metadata={
            "help": "A built-in task from the prepared assets (data/README.md, 'Fine-tuning tasks'), or 'files' "
            "for train_data / eval_data in the labels, label_pairs, choices or prompt_completion format."
        },
    )
    train_data: str | None = field(
        default=None, metadata={"help": "dataset 'files': the training rows (JSONL/JSON/CSV/Parquet)."}
    )
    eval_data: str | None = field(
        default=None,
        metadata={"help": "dataset 'files': held-out rows; null holds out eval_fraction of train_data."},
    )
    eval_fraction: float = field(
        default=0.1,
        metadata={
            "help": "Share held out (by seed) when there is no held-out file; chatterbot_qnli holds out "
            "prompts, so no question is on both sides."
        },
    )
    snippets_file: str = field(
        default="cache://datasets/sentiment/snippets.jsonl",
        metadata={"help": "Human-rated snippets for the sentiment datasets (their own train/heldout split)."},
    )
    chatterbot_file: str = field(
        default="cache://datasets/chatterbot/pairs.jsonl",
        metadata={"help": "Prompt/reply pairs for chatterbot_qnli."},
    )
    arithmetic_file: str = field(
        default="cache://datasets/reasoning/basic_arithmetic.jsonl",
        metadata={"help": "prompt/completion arithmetic problems for the arithmetic dataset."},
    )
    sources: list[str] = field(
        default_factory=lambda: ["movie"],
        metadata={"help": "Snippet sources for the sentiment datasets: any of movie, amazon, nyt, tweets."},
    )
    neutral_margin: float = field(
        default=1.0,
        metadata={
            "help": "sentiment_binary: keep snippets with |mean rating| >= this (on -4..4), dropping "
            "near-neutral ones; positive if the mean is above 0."
        },
    )
    bucket_edges: list[float] = field(
        default_factory=lambda: [-2.0, -0.5, 0.5, 2.0],
        metadata={
            "help": "sentiment_5way: mean-rating edges of the 5 buckets, very negative .. very positive."
        },
    )
    labels: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Class names in order (index 1 is the 'positive' class a judge scores); empty: the built-in "
            "dataset's, or the sorted labels of train_data. A row with another label is an error."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training examples (a seeded sample)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Evaluate on at most this many held-out examples (a seeded sample)."}
    )
    skip_bad_rows: bool = field(
        default=False, metadata={"help": "Drop and count malformed rows instead of stopping at the first."}
    )
    max_length: int = field(
        default=64,
        metadata={"help": "Tokens per input (pairs and choices: the whole sequence); longer is cut."},
    )
    # text-to-text
    task_prefix: str | None = field(
        default=None,
        metadata={
            "help": "text_to_text: prefix put before every input; null: the dataset's ('sentiment: ', ...)."
        },
    )
    max_target_length: int = field(
        default=16, metadata={"help": "text_to_text: tokens per target, and per generated answer."}
    )
    # GPT classifier
    lm_loss_weight: float = field(
        default=0.5,
        metadata={
            "help": "Decoders: lambda in L3 = L2 + lambda * L1 (GPT-1's auxiliary language-model loss on the "
            "inputs); 0 turns it off."
        },
    )
    pair_transform: Literal["concat", "similarity"] = field(
        default="concat",
        metadata={
            "help": "Decoders, pairs: concat = 'text <delimiter> text_pair' (entailment); similarity = both "
            "orders, their last-token representations added (order-symmetric)."
        },
    )
    delimiter: str = field(
        default="\n", metadata={"help": "Decoders: what joins text and text_pair (or text and a choice)."}
    )
    # optimization
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training data."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps; -1 means use num_train_epochs."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Examples per step per process."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Examples per evaluation batch."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    learning_rate: float = field(
        default=5e-5, metadata={"help": "Peak AdamW learning rate (of the head, with layer_lr_decay)."}
    )
    lr_scheduler_type: Literal[
        "linear", "cosine", "constant", "constant_with_warmup", "slanted_triangular"
    ] = field(
        default="linear",
        metadata={
            "help": "Schedule: transformers' linear/cosine/constant (with warmup_ratio), or ULMFiT's "
            "slanted_triangular (stlr_cut_frac, stlr_ratio; warmup_ratio unused)."
        },
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of the steps with linear warm-up."})
    stlr_cut_frac: float = field(
        default=0.1, metadata={"help": "slanted_triangular: share of the steps spent rising (ULMFiT: 0.1)."}
    )
    stlr_ratio: float = field(
        default=32.0, metadata={"help": "slanted_triangular: peak rate / lowest rate (ULMFiT: 32)."}
    )
    layer_lr_decay: float = field(
        default=1.0,
        metadata={
            "help": "Discriminative learning rates: each block trains at this times the rate of the block "
            "above it, the head at learning_rate (ULMFiT: 1/2.6 = 0.385); 1 turns it off."
        },
    )
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay (not on biases and norms)."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    # what trains
    peft: PeftChoice = field(
        default="none",
        metadata={
            "help": "Parameter-efficient method: lora, ia3, prompt_tuning (peft), prefix_tuning (encoders), "
            "bitfit (biases only); the head always trains. LoRA/IA3 are merged into the saved model."
        },
    )
    freeze_backbone: bool = field(
        default=False, metadata={"help": "Feature extraction: train only the head on frozen features."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scale numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    target_modules: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Modules LoRA/IA3 adapt, or 'all-linear'; empty: peft's default for the architecture."
        },
    )
    num_virtual_tokens: int = field(
        default=16, metadata={"help": "Prompt and prefix tuning: learned virtual tokens."}
    )
    freeze_layers: int = field(default=0, metadata={"help": "Freeze the bottom k transformer blocks."})
    freeze_embeddings: bool = field(
        default=False, metadata={"help": "Freeze token, position (and token-type) embeddings."}
    )
    unfreeze_every: int = field(
        default=0,
        metadata={"help": "Gradual unfreezing (ULMFiT): top block first, one more every N steps (0: off)."},
    )
    # evaluation, baseline, logging, checkpoints
    baseline: bool = field(
        default=True,
        metadata={
            "help": "Also fit a classical baseline on the same split (TF-IDF logistic regression; "
            "bag-of-words ridge for regression) and report it beside the model."
        },
    )
    logging_steps: int = field(default=10, metadata={"help": "Log training metrics every N steps."})
    eval_steps: int = field(
        default=0, metadata={"help": "Held-out loss every N steps (0: only the final evaluation)."}
    )
    save_steps: int = field(default=100, metadata={"help": "Write a checkpoint every N steps (0: none)."})
    save_total_limit: int = field(default=1, metadata={"help": "Keep at most this many checkpoints."})
    resume: str = field(default="auto", metadata={"help": RESUME_HELP})

    def validate(self) -> None:
        """Reject impossible values and combinations, naming the key."""
        super().validate()
        allowed = DATASET_TASKS[self.dataset]
        require(self.task in allowed, "task", f"one of {allowed} for dataset '{self.dataset}'", self.task)
        if self.dataset == "files":
            require(bool(self.train_data), "train_data", "a file with dataset 'files'", self.train_data)
        unknown = sorted(set(self.sources) - set(SNIPPET_SOURCES))
        require(
            bool(self.sources) and not unknown,
            "sources",
            f"a non-empty subset of {SNIPPET_SOURCES}",
            self.sources,
        )
        require(self.neutral_margin >= 0, "neutral_margin", "a number >= 0", self.neutral_margin)
        require(
            len(self.bucket_edges) == 4 and list(self.bucket_edges) == sorted(self.bucket_edges),
            "bucket_edges",
            "4 increasing mean-rating edges (5 buckets)",
            self.bucket_edges,
        )
        require(len(set(self.labels)) == len(self.labels), "labels", "distinct class names", self.labels)
        require(self.max_length >= 8, "max_length", "an int >= 8", self.max_length)
        require(self.max_target_length >= 1, "max_target_length", "an int >= 1", self.max_target_length)
        require(self.lm_loss_weight >= 0, "lm_loss_weight", "a number >= 0", self.lm_loss_weight)
        require(0 < self.stlr_cut_frac < 1, "stlr_cut_frac", "a share in (0, 1)", self.stlr_cut_frac)
        require(self.stlr_ratio >= 1, "stlr_ratio", "a number >= 1", self.stlr_ratio)
        require(0 < self.layer_lr_decay <= 1, "layer_lr_decay", "a factor in (0, 1]", self.layer_lr_decay)
        require(0 <= self.lora_dropout < 1, "lora_dropout", "a float in [0, 1)", self.lora_dropout)
        for key in ("lora_r", "lora_alpha", "num_virtual_tokens"):
            require(getattr(self, key) >= 1, key, "an int >= 1", getattr(self, key))
        for key in ("freeze_layers", "unfreeze_every"):
            require(getattr(self, key) >= 0, key, "an int >= 0", getattr(self, key))
        for key in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, "null or an int >= 1", value)
        layer_controls = self.freeze_layers or self.freeze_embeddings or self.unfreeze_every
        if (self.peft != "none" or self.freeze_backbone) and layer_controls:
            method = "freeze_backbone" if self.peft == "none" else f"peft '{self.peft}'"
            raise ConfigError(
                f"{method} chooses what trains itself; freeze_layers, freeze_embeddings and unfreeze_every apply to "
                "full fine-tuning (drop them, or set peft: none and freeze_backbone: false)"
            )
        if self.peft != "none" and self.freeze_backbone:
            raise ConfigError(f"freeze_backbone: expected false with peft '{self.peft}' (choose one method)")
        if self.layer_lr_decay < 1 and (self.peft != "none" or self.freeze_backbone):
            raise ConfigError("layer_lr_decay: discriminative rates apply to full fine-tuning (set it to 1)")
