"""Stage 1: supervised instruction tuning (SFT) on demonstrations, with TRL's SFTTrainer.

Steps of `run`:
  1. load the tokenizer (pad != EOS, a chat template) and the model;
  2. tokenize the demonstrations: labels only on completion / assistant tokens, rows over max_length
     truncated, skipped or refused, and counted (`alignment.sft_data`);
  3. choose what trains: everything, a peft adapter, or all but frozen blocks (`alignment.peft_setup`);
  4. train with SFTTrainer (packing with best-fit decreasing; packed sequences are kept apart by
     position ids), evaluating held-out loss, perplexity and a few greedy samples along the way;
  5. save the final model (LoRA/IA3 merged into plain weights), tokenizer and a model card.

Launch: `alignment sft --config configs/sft/tiny.yaml`, or with accelerate (see scripts/sft.py).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from transformers.pytorch_utils import Conv1D

from alignment.core.config import ConfigError, StageConfig, parse_config, require
from alignment.core.generation import SamplingSettings, generate_texts
from alignment.core.launch import (
    is_main_process,
    prepare_cpu_distributed,
    seed_everything,
    start_run,
    trainer_backend_kwargs,
    unwrapped_for_generation,
    uses_deepspeed,
)
from alignment.core.logging import MetricsCallback, MetricsLogger, write_model_card
from alignment.core.models import count_parameters, load_causal_lm, load_tokenizer

CHECKPOINTS = "checkpoints"


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
    warmup_steps: float = field(
        default=0.05, metadata={"help": "Warm-up steps (a value below 1 is a share of all steps)."}
    )
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
    resume: bool = field(
        default=False,
        metadata={"help": "Continue exactly from the last complete checkpoint in the run folder."},
    )
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
        require(0 <= self.eval_fraction < 1, "eval_fraction", "a float in [0, 1)", self.eval_fraction)
        for key in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "lora_r",
            "lora_alpha",
            "num_virtual_tokens",
            "save_total_limit",
        ):
            require(getattr(self, key) >= 1, key, "an int >= 1", getattr(self, key))
        for key in (
            "eval_steps",
            "save_steps",
            "num_samples",
            "freeze_layers",
            "unfreeze_every",
            "sample_max_new_tokens",
        ):
            require(getattr(self, key) >= 0, key, "an int >= 0", getattr(self, key))
        for key in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, "null or an int >= 1", value)
        require(self.max_steps == -1 or self.max_steps >= 1, "max_steps", "-1 or an int >= 1", self.max_steps)
        require(
            self.max_steps >= 1 or self.num_train_epochs > 0, "num_train_epochs", "> 0", self.num_train_epochs
        )
        require(self.learning_rate > 0, "learning_rate", "a float > 0", self.learning_rate)
        require(self.warmup_steps >= 0, "warmup_steps", "a number >= 0", self.warmup_steps)
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


# ---------------------------------------------------------------------------------------------
# Callbacks


class SFTMetricsCallback(MetricsCallback):
    """Trainer logs into metrics.jsonl and TensorBoard; at each evaluation, perplexity and greedy samples.

    Samples are generated on every process (under ZeRO-3 the weights are gathered for it on all ranks),
    and logged by rank 0. `<prompt>|||<response>` is the text of each sample.
    """

    def __init__(self, run_dir: Path, tokenizer, prompts: list[str], max_new_tokens: int):
        super().__init__(run_dir)
        self.logger = MetricsLogger(run_dir)  # with TensorBoard, unlike the base class
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=0.0)
        self.evaluations: list[dict[str, float]] = []
        self.trainer = None  # set once the trainer exists: generation needs its accelerator

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):  # noqa: D102 (Trainer hook)
        if metrics and "eval_loss" in metrics:
            perplexity = math.exp(min(metrics["eval_loss"], 50.0))  # capped: exp overflows on a diverged run
            metrics["eval_perplexity"] = perplexity
            self.evaluations.append(
                {"step": state.global_step, "eval_loss": metrics["eval_loss"], "eval_perplexity": perplexity}
            )
            self.logger.log(state.global_step, {"eval_perplexity": perplexity})
        if self.prompts and self.trainer is not None:
            with unwrapped_for_generation(self.trainer.model_wrapped, self.trainer.accelerator) as unwrapped:
                responses = generate_texts(unwrapped, self.tokenizer, self.prompts, self.settings)
            for i, (prompt, response) in enumerate(zip(self.prompts, responses)):
                self.logger.log_text(state.global_step, f"eval_sample/{i}", f"{prompt}|||{response}")


# ---------------------------------------------------------------------------------------------
# Steps


def last_complete_checkpoint(folder: Path) -> str | None:
    """Newest `checkpoint-N` folder whose trainer state was written (the Trainer writes that file last)."""
    if not folder.is_dir():
        return None
    complete = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    complete = [p for p in complete if (p / "trainer_state.json").exists()]
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None


def load_data(config: Config, tokenizer):
    """Tokenized train and eval datasets, their reports, and the prompts used for samples."""
    from alignment.sft_data import tokenize_dataset

    kwargs = dict(
        tokenizer=tokenizer,
        max_length=config.max_length,
        overlong=config.overlong,
        prompt_format=config.prompt_format,
        skip_bad_rows=config.skip_bad_rows,
    )
    train, train_report = tokenize_dataset(config.train_data, max_rows=config.max_train_samples, **kwargs)
    eval_set, eval_report = None, None
    if config.eval_data:
        eval_set, eval_report = tokenize_dataset(config.eval_data, max_rows=config.max_eval_samples, **kwargs)
    elif config.eval_fraction > 0:
        split = train.train_test_split(test_size=config.eval_fraction, seed=config.seed)
        train, eval_set = split["train"], split["test"]
        if config.max_eval_samples is not None:
            eval_set = eval_set.select(range(min(config.max_eval_samples, len(eval_set))))
    # Empty prompts (allowed in prompt/completion data) give nothing to condition a sample on.
    prompts = [p for p in eval_set["prompt_text"] if p][: config.num_samples] if eval_set is not None else []
    # The Trainer would drop this column anyway; dropping it here keeps the datasets model-ready.
    train = train.remove_columns("prompt_text")
    eval_set = eval_set.remove_columns("prompt_text") if eval_set is not None else None
    return train, eval_set, train_report, eval_report, prompts


def build_training_args(config: Config, run_dir: Path, has_eval: bool):
    """Our config mapped onto TRL's SFTConfig (the only place that knows its field names)."""
    from trl import SFTConfig

    save = config.save_steps > 0
    evaluate = has_eval and config.eval_steps > 0
    return SFTConfig(
        output_dir=str(run_dir / CHECKPOINTS),
        seed=config.seed,
        data_seed=config.seed,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        # TRL turns activation checkpointing on by default; the new name avoids a deprecation warning per config.
        activation_checkpointing=config.activation_checkpointing,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_steps if evaluate else None,
        eval_on_start=has_eval and not config.resume,
        save_strategy="steps" if save else "no",
        save_steps=config.save_steps if save else 500,
        save_total_limit=config.save_total_limit,
        report_to="none",  # SFTMetricsCallback writes metrics.jsonl and TensorBoard
        max_length=config.max_length,
        packing=config.packing,
        packing_strategy="bfd",
        eval_packing=config.packing,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # Gradual unfreezing leaves blocks without gradients in early steps; DDP must expect that.
        ddp_find_unused_parameters=True if config.unfreeze_every else None,
        **trainer_backend_kwargs(),
    )


def choose_trainable(config: Config, model):
    """Apply freezing; return (peft config or None, callbacks that change trainability during training)."""
    from alignment.peft_setup import GradualUnfreezeCallback, build_peft_config, freeze

    callbacks = []
    if config.freeze_layers or config.freeze_embeddings:
        try:
            freeze(model, config.freeze_layers, config.freeze_embeddings)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    if config.unfreeze_every:
        if uses_deepspeed():
            # ZeRO flattens the trainable parameters into its partitions once, at engine start.
            raise ConfigError(
                "unfreeze_every: gradual unfreezing needs a non-DeepSpeed launch (single or ddp)"
            )
        callbacks.append(GradualUnfreezeCallback(model, config.unfreeze_every, floor=config.freeze_layers))
    targets = "all-linear" if config.target_modules == ["all-linear"] else config.target_modules
    peft_config = build_peft_config(
        config.peft, config.lora_r, config.lora_alpha, config.lora_dropout, targets, config.num_virtual_tokens
    )
    if peft_config is not None and hasattr(peft_config, "fan_in_fan_out"):
        # GPT-2 keeps its projections transposed (Conv1D); peft would fix this itself, with a warning per layer.
        peft_config.fan_in_fan_out = any(isinstance(m, Conv1D) for m in model.modules())
    return peft_config, callbacks


def save_final_model(
    trainer, config: Config, tokenizer, run_dir: Path, card_metrics: dict[str, Any], notes: str
) -> Path:
    """Write `<run_dir>/model`: plain weights (LoRA/IA3 merged) or, for prompt tuning, the adapter.

    Written into a temporary folder and moved into place, so a crash never leaves half a model.
    Every process must call this (ZeRO-3 gathers the sharded weights collectively).
    """
    from alignment.peft_setup import MERGEABLE

    final_dir, tmp_dir = run_dir / "model", run_dir / "model.tmp"
    if config.peft in MERGEABLE:
        if is_main_process():
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(tmp_dir)
    else:
        trainer.save_model(str(tmp_dir))  # collective under ZeRO-3; writes on rank 0 only
    if is_main_process():
        tokenizer.save_pretrained(tmp_dir)
        (tmp_dir / "training_args.bin").unlink(
            missing_ok=True
        )  # the Trainer's pickle; config.yaml says it all
        write_model_card(tmp_dir, "sft", config.to_dict(), card_metrics, notes)
        if final_dir.exists():
            shutil.rmtree(final_dir)
        tmp_dir.replace(final_dir)
    trainer.accelerator.wait_for_everyone()
    return final_dir


def build_trainer(config: Config, run_dir: Path):
    """Steps 1-3: tokenizer, model, tokenized data and trainability, assembled into an SFTTrainer.

    Returns (trainer, metrics callback, data reports). Tests use it to inspect what trains.
    """
    from trl import SFTTrainer

    # 1. tokenizer and model
    tokenizer = load_tokenizer(config.model)
    model = load_causal_lm(config.model, tokenizer)

    # 2. data
    train, eval_set, train_report, eval_report, prompts = load_data(config, tokenizer)
    reports = [r for r in (train_report, eval_report) if r is not None]

    # 3. what trains
    peft_config, callbacks = choose_trainable(config, model)
    args = build_training_args(config, run_dir, has_eval=eval_set is not None)
    if (
        peft_config is not None
        and args.deepspeed_plugin is not None
        and args.deepspeed_plugin.zero_stage == 3
    ):
        # Merging needs the full base weights in one process; adapters are small enough for ddp or zero2.
        raise ConfigError(
            f"peft: '{config.peft}' is not supported under ZeRO-3 here; launch with ddp or zero2"
        )
    metrics_cb = SFTMetricsCallback(run_dir, tokenizer, prompts, config.sample_max_new_tokens)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[metrics_cb, *callbacks],
    )
    metrics_cb.trainer = trainer
    return trainer, metrics_cb, reports


def run(config: Config) -> dict[str, Any]:
    """Fine-tune `config.model` on demonstrations; return the final metrics."""
    prepare_cpu_distributed()
    seed_everything(config.seed)
    run_dir = start_run(config)
    trainer, metrics_cb, reports = build_trainer(config, run_dir)
    data_metrics: dict[str, Any] = {}
    for report, prefix in zip(reports, ("data/train", "data/eval")):
        print(f"[sft] {report.summary()}")
        data_metrics.update(report.as_metrics(prefix))
    data_metrics["trainable_params"] = count_parameters(trainer.model, trainable_only=True)
    data_metrics["total_params"] = count_parameters(trainer.model)
    metrics_cb.logger.log(0, data_metrics)

    # 4. train (exactly resumed from the last complete checkpoint when asked)
    checkpoint = last_complete_checkpoint(run_dir / CHECKPOINTS) if config.resume else None
    if config.resume:
        print(
            f"[sft] resuming from {checkpoint}"
            if checkpoint
            else "[sft] resume: no checkpoint yet, starting fresh"
        )
    started = time.time()
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    final: dict[str, Any] = {
        "train_loss": train_output.training_loss,
        "train_seconds": round(time.time() - started, 1),
    }
    if trainer.eval_dataset is not None:
        if not metrics_cb.evaluations or metrics_cb.evaluations[-1]["step"] != trainer.state.global_step:
            trainer.evaluate()  # the last step was not evaluated yet
        last = metrics_cb.evaluations[-1]
        final.update(eval_loss=last["eval_loss"], eval_perplexity=last["eval_perplexity"])
        final["eval_loss_first"] = metrics_cb.evaluations[0]["eval_loss"]
    final["global_step"] = trainer.state.global_step
    final.update(data_metrics)

    # 5. final model, tokenizer and model card
    notes = "Data:\n\n" + "\n".join(f"- {r.summary()}" for r in reports)
    save_final_model(trainer, config, trainer.processing_class, run_dir, final, notes)
    if is_main_process():
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items())
        print(f"[sft] saved {run_dir / 'model'}; {shown}")
    metrics_cb.logger.close()
    return final


def main(argv: list[str] | None = None) -> None:
    """`alignment sft --config configs/sft/tiny.yaml [--key value ...]`."""
    run(parse_config(Config, argv))


if __name__ == "__main__":
    main()
