"""The pretraining stage's configuration: tokenizer, model shape, objective, corpus, optimization, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from alignment.core.config import PRECISION_HELP, RESUME_HELP, StageConfig, require

ARCHITECTURES = {"causal_lm": ("gpt2", "llama"), "masked_lm": ("bert",), "span_corruption": ("t5",)}


@dataclass
class Config(StageConfig):
    """Pretraining: tokenizer, model shape, objective, corpus, optimization and checkpointing."""

    stage: ClassVar[str] = "pretrain"

    # objective and model shape
    objective: Literal["causal_lm", "masked_lm", "span_corruption"] = field(
        default="causal_lm",
        metadata={"help": "causal_lm (decoders), masked_lm (BERT), span_corruption (T5)."},
    )
    architecture: Literal["gpt2", "llama", "bert", "t5"] = field(
        default="gpt2",
        metadata={"help": "gpt2 or llama for causal_lm, bert for masked_lm, t5 for span_corruption."},
    )
    n_layer: int = field(
        default=4, metadata={"help": "Transformer layers (T5: in the encoder and in the decoder)."}
    )
    d_model: int = field(default=128, metadata={"help": "Hidden size."})
    n_head: int = field(default=4, metadata={"help": "Attention heads; must divide d_model."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout (0 for short single-epoch runs)."})
    block_size: int = field(
        default=128, metadata={"help": "Tokens per packed training block (= decoder context)."}
    )
    # tokenizer
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "Reuse this tokenizer folder instead of training a BPE on the corpus."},
    )
    vocab_size: int = field(
        default=4096, metadata={"help": "Size of the BPE vocabulary to train (incl. specials)."}
    )
    # corpus
    train_data: str = field(
        default="cache://datasets/sentiment/corpus_train.jsonl",
        metadata={
            "help": "Training text: .jsonl/.json/.csv/.parquet with a text column, a .txt file, or a dataset."
        },
    )
    eval_data: str | None = field(
        default="cache://datasets/sentiment/corpus_heldout.jsonl",
        metadata={"help": "Held-out text; null holds out eval_fraction of the training documents."},
    )
    eval_fraction: float = field(
        default=0.05, metadata={"help": "Share of documents held out when eval_data is null."}
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the documents."})
    max_eval_blocks: int = field(
        default=64, metadata={"help": "Held-out blocks evaluated (caps evaluation time)."}
    )
    # objective settings
    mlm_probability: float = field(
        default=0.15, metadata={"help": "masked_lm: share of tokens chosen (BERT: 0.15)."}
    )
    noise_density: float = field(
        default=0.15, metadata={"help": "span_corruption: share of tokens dropped (T5: 0.15)."}
    )
    mean_span_length: float = field(
        default=3.0, metadata={"help": "span_corruption: mean dropped span length (T5: 3)."}
    )
    # optimization
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak AdamW learning rate."})
    min_lr_ratio: float = field(
        default=0.1, metadata={"help": "Cosine decay ends at learning_rate * min_lr_ratio."}
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of the steps with linear warm-up."})
    weight_decay: float = field(
        default=0.1, metadata={"help": "AdamW weight decay (not on biases and norms)."}
    )
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    max_steps: int = field(
        default=200, metadata={"help": "Optimizer steps; the LR schedule spans exactly these."}
    )
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Blocks per device per micro-batch."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    # evaluation, logging, checkpoints
    eval_steps: int = field(
        default=50, metadata={"help": "Evaluate held-out loss/perplexity every this many steps."}
    )
    eval_on_start: bool = field(
        default=True, metadata={"help": "Also evaluate before the first step (the baseline)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log training loss every this many steps."})
    save_steps: int = field(default=50, metadata={"help": "Checkpoint every this many steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (older ones are deleted)."})
    num_samples: int = field(
        default=3, metadata={"help": "Decoders: continuations sampled at each evaluation."}
    )
    sample_max_new_tokens: int = field(default=24, metadata={"help": "Length of each sampled continuation."})
    max_time_minutes: float | None = field(
        default=None,
        metadata={
            "help": "Opt-in wall-clock limit: stop (checkpoint, evaluate, save) after this many minutes. Off in "
            "the shipped recipes, since it makes the result depend on the machine's speed."
        },
    )
    precision: Literal["fp32", "bf16", "auto"] = field(default="fp32", metadata={"help": PRECISION_HELP})
    resume: str = field(default="auto", metadata={"help": RESUME_HELP})
    stop_after_step: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this step as if killed (no final model): for testing resume; "
            "the schedule still spans max_steps."
        },
    )

    def validate(self) -> None:
        """Reject impossible values, naming the key."""
        super().validate()
        allowed = ARCHITECTURES[self.objective]
        require(
            self.architecture in allowed,
            "architecture",
            f"one of {allowed} for objective {self.objective!r}",
            self.architecture,
        )
        for key in (
            "n_layer",
            "d_model",
            "n_head",
            "max_steps",
            "eval_steps",
            "save_steps",
            "max_eval_blocks",
        ):
            require(getattr(self, key) >= 1, key, "an integer >= 1", getattr(self, key))
        require(
            self.d_model % self.n_head == 0, "n_head", f"a divisor of d_model={self.d_model}", self.n_head
        )
        require(self.block_size >= 8, "block_size", "at least 8", self.block_size)
        require(
            self.vocab_size >= 512, "vocab_size", "at least 512 (256 byte symbols + merges)", self.vocab_size
        )
        for key in ("eval_fraction", "mlm_probability", "noise_density", "min_lr_ratio"):
            require(0 < getattr(self, key) < 1, key, "a number strictly between 0 and 1", getattr(self, key))
        require(self.mean_span_length >= 1, "mean_span_length", "at least 1", self.mean_span_length)
        require(
            self.max_time_minutes is None or self.max_time_minutes > 0,
            "max_time_minutes",
            "a positive number",
            self.max_time_minutes,
        )
        require(
            self.stop_after_step is None or 1 <= self.stop_after_step <= self.max_steps,
            "stop_after_step",
            f"a step between 1 and max_steps={self.max_steps}",
            self.stop_after_step,
        )
