"""Stage 1: supervised instruction tuning (SFT) on demonstrations, with TRL's SFTTrainer.

Steps of `run`:
  1. load the tokenizer (pad != EOS, a chat template) and the model;
  2. tokenize the demonstrations: labels only on completion / assistant tokens, rows over max_length
     truncated, skipped or refused, and counted (`alignment.sft.data`);
  3. choose what trains: everything, a peft adapter, or all but frozen blocks (`alignment.core.trainable`);
  4. train with SFTTrainer (packing with best-fit decreasing; packed sequences are kept apart by
     position ids), evaluating held-out loss, perplexity and a few greedy samples along the way;
  5. save the final model (LoRA/IA3 merged into plain weights), tokenizer and a model card.

Launch: `alignment sft --config configs/sft/tiny.yaml`, or with accelerate (see scripts/sft.py).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from alignment.core.config import ConfigError, parse_config
from alignment.core.errors import DatasetFormatError, run_cli
from alignment.core.generation import SamplingSettings, generate_texts
from alignment.core.launch import (
    is_main_process,
    prepare_cpu_distributed,
    seed_everything,
    trainer_backend_kwargs,
    unwrapped_for_generation,
    uses_deepspeed,
    zero3_enabled,
)
from alignment.core.logging import MetricsCallback, MetricsLogger, write_model_card
from alignment.core.models import check_length, count_parameters, load_causal_lm, load_tokenizer
from alignment.core.runs import checkpoint_dir, resume_checkpoint, save_model_folder, start_run
from alignment.core.trainable import MERGEABLE, GradualUnfreezeCallback, build_peft_config, freeze
from alignment.sft.config import Config
from alignment.sft.data import tokenize_dataset

# Keys that may change between a run and its resumption without mixing two different runs.
RESUMABLE = {"eval_steps", "num_samples", "sample_max_new_tokens", "max_eval_samples"}


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


def load_data(config: Config, tokenizer):
    """Tokenized train and eval datasets, their reports, and the prompts used for samples."""
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
        if len(train) < 2:
            raise DatasetFormatError(
                f"train_data: {config.train_data} has {len(train)} usable row(s); holding out eval_fraction "
                "needs at least 2 (add rows, give eval_data, or set eval_fraction: 0)"
            )
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


def build_training_args(config: Config, run_dir: Path, has_eval: bool, resuming: bool):
    """Our config mapped onto TRL's SFTConfig (the only place that knows its field names)."""
    from trl import SFTConfig

    save = config.save_steps > 0
    evaluate = has_eval and config.eval_steps > 0
    return SFTConfig(
        output_dir=str(checkpoint_dir(run_dir)),
        seed=config.seed,
        data_seed=config.seed,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float below 1 is a share of the steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        # TRL turns activation checkpointing on by default; the new name avoids a deprecation warning per config.
        activation_checkpointing=config.activation_checkpointing,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_steps if evaluate else None,
        eval_on_start=has_eval and not resuming,
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
        **trainer_backend_kwargs(config.precision),
    )


def choose_trainable(config: Config, model):
    """Apply freezing; return (peft config or None, callbacks that change trainability during training)."""
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
    peft_config = build_peft_config(
        config.peft,
        config.lora_r,
        config.lora_alpha,
        config.lora_dropout,
        config.target_modules,
        config.num_virtual_tokens,
        model=model,
    )
    return peft_config, callbacks


def save_final_model(
    trainer, config: Config, tokenizer, run_dir: Path, card_metrics: dict[str, Any], notes: str
) -> Path:
    """Write `<run_dir>/model` atomically: plain weights (LoRA/IA3 merged) or, for prompt tuning, the adapter.

    Every process must call this (ZeRO-3 gathers the sharded weights collectively).
    """

    def save_weights(folder: Path) -> None:
        if config.peft in MERGEABLE:
            if is_main_process():
                merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
                merged.save_pretrained(folder)
        else:
            trainer.save_model(str(folder))  # collective under ZeRO-3; writes on rank 0 only
        if is_main_process():
            (folder / "training_args.bin").unlink(
                missing_ok=True
            )  # the Trainer's pickle; config.yaml says it

    return save_model_folder(
        run_dir / "model",
        save_weights,
        tokenizer=tokenizer,
        card=lambda folder: write_model_card(folder, "sft", config.to_dict(), card_metrics, notes),
        is_main=is_main_process(),
        barrier=trainer.accelerator.wait_for_everyone,
    )


def build_trainer(config: Config, run_dir: Path, resuming: bool = False):
    """Steps 1-3: tokenizer, model, tokenized data and trainability, assembled into an SFTTrainer.

    Returns (trainer, metrics callback, data reports). Tests use it to inspect what trains.
    """
    from trl import SFTTrainer

    # 1. tokenizer and model
    tokenizer = load_tokenizer(config.model)
    model = load_causal_lm(config.model, tokenizer)
    check_length(config.max_length, "max_length", model, f"the model {config.model}")

    # 2. data
    train, eval_set, train_report, eval_report, prompts = load_data(config, tokenizer)
    reports = [r for r in (train_report, eval_report) if r is not None]

    # 3. what trains
    peft_config, callbacks = choose_trainable(config, model)
    args = build_training_args(config, run_dir, has_eval=eval_set is not None, resuming=resuming)
    if peft_config is not None and zero3_enabled():
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
    checkpoint = resume_checkpoint(config, RESUMABLE)  # before start_run rewrites config.yaml
    run_dir = start_run(config)
    trainer, metrics_cb, reports = build_trainer(config, run_dir, resuming=checkpoint is not None)
    data_metrics: dict[str, Any] = {}
    for report, prefix in zip(reports, ("data/train", "data/eval")):
        print(f"[sft] {report.summary()}")
        data_metrics.update(report.as_metrics(prefix))
    data_metrics["trainable_params"] = count_parameters(trainer.model, trainable_only=True)
    data_metrics["total_params"] = count_parameters(trainer.model)
    metrics_cb.logger.log(0, data_metrics)

    # 4. train (exactly resumed from the last complete checkpoint, see `resume`)
    if checkpoint is not None:
        print(f"[sft] resuming from {checkpoint}")
    started = time.time()
    train_output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
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
    run_cli("sft", lambda args: run(parse_config(Config, args)), argv)


if __name__ == "__main__":
    main()
