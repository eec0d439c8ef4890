"""The SFT stage's configuration: one typed field per knob, each documented beside its default."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from alignment.core.config import PRECISION_HELP, RESUME_HELP, ConfigError, StageConfig, require


@dataclass
class Config(StageConfig):
    """Options of the SFT stage (the tiny sentiment recipe by default)."""

    stage: ClassVar[str] = "sft"

    run_name: str = field(
        default="tiny-sentiment",
        metadata={"help": "Run folder name: outputs go to <output_root>/<run_name>/sft/."},
    )
    model: str = field(
        default="runs/tiny-sentiment/pretrain/model",
        metadata={"help": "Model folder (cache://models/..., runs/.../model) or hub name to fine-tune."},
    )
    train_data: str = field(
        default="cache://datasets/sentiment/demos_train.jsonl",
        metadata={
            "help": "Demonstrations: prompt/completion or messages rows (JSONL/JSON/CSV/Parquet, folder, hub name)."
        },
    )
    eval_data: str | None = field(
        default="cache://datasets/sentiment/demos_heldout.jsonl",
        metadata={"help": "Held-out demonstrations; null to hold out eval_fraction of train_data instead."},
    )
    eval_fraction: float = field(
        default=0.05,
        metadata={"help": "Share of train_data held out for evaluation when eval_data is null (0: none)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training rows."}
    )
    max_eval_samples: int | None = field(
        default=256, metadata={"help": "Evaluate on at most this many held-out rows."}
    )
    prompt_format: Literal["plain", "chat"] = field(
        default="plain",
        metadata={
            "help": "prompt/completion rows: 'plain' = prompt + completion + EOS (text continuation); 'chat' = a user "
            "and an assistant turn in the chat template. messages rows always use the chat template."
        },
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "Drop and count malformed rows instead of stopping at the first one."},
    )
    max_length: int = field(
        default=128, metadata={"help": "Maximum tokens per example (and per packed sequence)."}
    )
    overlong: Literal["truncate", "skip", "error"] = field(
        default="truncate",
        metadata={"help": "What to do with examples over max_length; every case is counted."},
    )
    packing: bool = field(
        default=True,
        metadata={"help": "Pack several examples per row (best-fit decreasing, attention kept per example)."},
    )
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "Passes over the training data (max_steps wins)."}
    )
    max_steps: int = field(
        default=-1, metadata={"help": "Optimizer steps to run; -1 means use num_train_epochs."}
    )
    per_device_train_batch_size: int = field(
        default=16, metadata={"help": "Rows (packed or not) per step per process."}
    )
    per_device_eval_batch_size: int = field(
        default=32, metadata={"help": "Rows per evaluation batch per process."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    learning_rate: float = field(default=5e-4, metadata={"help": "Peak learning rate (AdamW)."})
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = field(
        default="cosine", metadata={"help": "Learning-rate schedule after warm-up."}
    )
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of the steps with linear warm-up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    activation_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward to save memory (slower)."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log training metrics every N steps."})
    eval_steps: int = field(
        default=50, metadata={"help": "Evaluate every N steps (0: only before and after training)."}
    )
    save_steps: int = field(default=100, metadata={"help": "Write a checkpoint every N steps (0: none)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    precision: Literal["fp32", "bf16", "auto"] = field(default="fp32", metadata={"help": PRECISION_HELP})
    resume: str = field(default="auto", metadata={"help": RESUME_HELP})
    num_samples: int = field(
        default=4, metadata={"help": "Greedy samples from held-out prompts at each evaluation."}
    )
    sample_max_new_tokens: int = field(default=32, metadata={"help": "Length of those samples."})
    peft: Literal["none", "lora", "ia3", "prompt_tuning"] = field(
        default="none",
        metadata={"help": "Parameter-efficient method; LoRA and IA3 are merged into the saved model."},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scale numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    target_modules: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Module names LoRA/IA3 adapt, or 'all-linear'; empty: peft's default for the architecture."
        },
    )
    num_virtual_tokens: int = field(default=8, metadata={"help": "Prompt tuning: learned virtual tokens."})
    freeze_layers: int = field(default=0, metadata={"help": "Freeze the bottom k transformer blocks."})
    freeze_embeddings: bool = field(
        default=False, metadata={"help": "Freeze token and position embeddings (and a head tied to them)."}
    )
    unfreeze_every: int = field(
        default=0,
        metadata={
            "help": "Gradual unfreezing (ULMFiT): start with the top block, unfreeze one more every N steps (0: off)."
        },
    )

    def validate(self) -> None:
        """Reject impossible values, naming the key."""
        super().validate()
        require(self.max_length >= 8, "max_length", "an int >= 8", self.max_length)
        for key in ("lora_r", "lora_alpha", "num_virtual_tokens", "sample_max_new_tokens"):
            require(getattr(self, key) >= 1, key, "an int >= 1", getattr(self, key))
        for key in ("num_samples", "freeze_layers", "unfreeze_every"):
            require(getattr(self, key) >= 0, key, "an int >= 0", getattr(self, key))
        for key in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, "null or an int >= 1", value)
        require(0 <= self.lora_dropout < 1, "lora_dropout", "a float in [0, 1)", self.lora_dropout)
        tuning_layers = self.freeze_layers or self.freeze_embeddings or self.unfreeze_every
        if self.peft != "none" and tuning_layers:
            raise ConfigError(
                f"peft: '{self.peft}' trains only its adapter; freeze_layers, freeze_embeddings and unfreeze_every "
                "apply to full fine-tuning (set peft: none, or drop the freezing keys)"
            )
        if self.peft == "prompt_tuning" and self.packing:
            # Virtual tokens are prepended to the whole row, so packed examples would share them and their positions.
            raise ConfigError(
                "packing: expected false with peft 'prompt_tuning' (virtual tokens cannot be packed)"
            )
