"""`alignment finetune`: fine-tune an encoder, a decoder or an encoder-decoder on a downstream task.

Steps of `run`:
  1. the examples (a built-in task from the prepared assets, or the user's files; data.py);
  2. the backbone and its head: an encoder's [CLS] classifier, the GPT-1 classifier on a decoder's last token
     (with the auxiliary LM loss, gpt_classifier.py), or T5 text-to-text; the task decides the outputs;
  3. what trains (everything, a frozen backbone, peft, prefix tuning, BitFit, frozen or gradually unfrozen
     blocks; alignment.core.trainable) and how fast (discriminative rates, the slanted triangular schedule);
  4. train with transformers' Trainer (checkpoints, exact resume, DDP and DeepSpeed through accelerate);
  5. predict the held-out examples (argmax, regression output, or greedy generation for text-to-text) and
     score them with scikit-learn/scipy metrics, beside a classical baseline fitted on the same split;
  6. save the model folder (LoRA/IA3 merged) with its tokenizer, model card, results.json and report.md.

Launch: `alignment finetune --config configs/finetune/minilm-sentiment.yaml`, or with accelerate (see
scripts/finetune.py).
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from alignment.core.config import ConfigError, parse_config
from alignment.core.errors import run_cli
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
from alignment.core.models import (
    align_model_to_tokenizer,
    check_length,
    count_parameters,
    load_tokenizer,
    loading,
    model_folder,
)
from alignment.core.runs import checkpoint_dir, resume_checkpoint, save_model_folder, start_run
from alignment.core.trainable import (
    MERGEABLE,
    GradualUnfreezeCallback,
    add_prefix_tuning,
    bitfit,
    build_peft_config,
    feature_extraction,
    freeze,
    layerwise_param_groups,
)
from alignment.finetune import baselines, metrics
from alignment.finetune.config import Config
from alignment.finetune.data import DEFAULT_PREFIXES, TaskData, load_task
from alignment.finetune.gpt_classifier import GPTClassifier
from alignment.finetune.inputs import (
    SequencesCollator,
    check_encoder_tokenizer,
    decoder_features,
    encoder_features,
    seq2seq_features,
)
from alignment.finetune.schedules import slanted_triangular_scheduler
from reward.model import is_encoder, load_backbone_tokenizer

# Keys that may change between a run and its resumption without mixing two runs (evaluation only).
RESUMABLE = {"eval_steps", "per_device_eval_batch_size", "baseline", "max_eval_samples"}


# ---------------------------------------------------------------------------------------------
# The trainer: discriminative rates, the slanted triangular schedule, the GPT classifier's two losses


class FinetuneTrainer(Trainer):
    """transformers' Trainer with per-layer learning rates, ULMFiT's schedule and the logging of L1 and L2."""

    def __init__(self, *args, stage_config: Config, **kwargs):
        self.stage_config = stage_config
        self._loss_parts: dict[str, list[float]] = {}
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):  # noqa: D102 (Trainer hook)
        config = self.stage_config
        if config.layer_lr_decay < 1 and self.optimizer is None:
            model = self.model if model is None else model
            decays = set(self.get_decay_parameter_names(model))
            no_decay = {name for name, _ in model.named_parameters() if name not in decays}
            groups = layerwise_param_groups(
                model, config.learning_rate, config.layer_lr_decay, config.weight_decay, no_decay
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)  # each group's own lr wins over kwargs
            return self.optimizer
        return super().create_optimizer(model)

    def create_scheduler(self, num_training_steps: int, optimizer=None):  # noqa: D102 (Trainer hook)
        config = self.stage_config
        if config.lr_scheduler_type == "slanted_triangular" and self.lr_scheduler is None:
            self.lr_scheduler = slanted_triangular_scheduler(
                optimizer or self.optimizer, num_training_steps, config.stlr_cut_frac, config.stlr_ratio
            )
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        module = self.accelerator.unwrap_model(model)
        if isinstance(module, GPTClassifier) and module.training:
            for key, value in module.last_losses.items():
                self._loss_parts.setdefault(key, []).append(value)
        return result

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:  # noqa: D102
        if "loss" in logs and self._loss_parts:
            logs.update({key: sum(v) / len(v) for key, v in self._loss_parts.items()})
            self._loss_parts = {}
        super().log(logs, start_time)


# ---------------------------------------------------------------------------------------------
# Step 2: backbone, head, tokenizer


def backbone_kind(name: str) -> str:
    """'encoder' (BERT family), 'seq2seq' (T5 and other encoder-decoders) or 'decoder'."""
    folder = model_folder(name)
    with loading(f"model {folder}"):
        backbone_config = AutoConfig.from_pretrained(folder)
    if backbone_config.is_encoder_decoder:
        return "seq2seq"
    return "encoder" if is_encoder(backbone_config) else "decoder"


def check_task_fits(config: Config, kind: str) -> None:
    """Refuse a task the backbone cannot do here, naming the key."""
    if (config.task == "text_to_text") != (kind == "seq2seq"):
        expected = "text_to_text for an encoder-decoder" if kind == "seq2seq" else "not text_to_text"
        raise ConfigError(f"task: expected {expected} ({config.model} is a {kind}), got {config.task!r}")
    if config.task == "multiple_choice" and kind != "decoder":
        raise ConfigError(
            f"task: multiple_choice needs a decoder backbone (GPT-1 style), {config.model} is a {kind}"
        )
    refused = {
        "decoder": ("prompt_tuning", "prefix_tuning"),
        "seq2seq": ("prefix_tuning", "bitfit"),
        "encoder": (),
    }[kind]
    if config.peft in refused:
        raise ConfigError(f"peft: '{config.peft}' is not available for a {kind} backbone here")
    if kind == "seq2seq" and config.freeze_backbone:
        raise ConfigError("freeze_backbone: a text-to-text model has no separate head to train")


def num_outputs(config: Config, data: TaskData) -> int:
    """Head outputs: one per class, one for regression, one score per sequence for multiple choice."""
    return 1 if config.task in ("regression", "multiple_choice") else len(data.classes)


def load_model(config: Config, data: TaskData, kind: str):
    """(model to train, tokenizer): a sequence classifier, a GPT classifier wrapper, or a seq2seq LM."""
    folder = model_folder(config.model)
    if kind == "seq2seq":
        tokenizer = load_tokenizer(config.model)
        with loading(f"model {folder}"):
            model = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.float32)
        align_model_to_tokenizer(model, tokenizer)
        return model, tokenizer
    tokenizer = load_backbone_tokenizer(config.model, encoder=kind == "encoder")
    if kind == "encoder":
        check_encoder_tokenizer(tokenizer, config.model)
    labels = {}
    if data.classes and config.task == "classification":
        labels = {
            "id2label": dict(enumerate(data.classes)),
            "label2id": {name: i for i, name in enumerate(data.classes)},
        }
    problem = "regression" if config.task == "regression" else "single_label_classification"
    with loading(f"model {folder}"):
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=num_outputs(config, data), problem_type=problem, dtype=torch.float32, **labels
        )
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def untied_lm_head(config: Config) -> torch.Tensor | None:
    """A decoder's output layer when it is not its input embedding (the GPT classifier's L1 needs it)."""
    folder = model_folder(config.model)
    with loading(f"model {folder}"):
        text_config = AutoConfig.from_pretrained(folder).get_text_config()
        if getattr(text_config, "tie_word_embeddings", True):
            return None
        return (
            AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).get_output_embeddings().weight
        )


# ---------------------------------------------------------------------------------------------
# Step 3: what trains


def choose_trainable(config: Config, model, kind: str):
    """Apply the method of `config` to `model`; return (model, callbacks that change trainability in training)."""
    from peft import TaskType, get_peft_model

    callbacks = []
    try:
        if config.freeze_layers or config.freeze_embeddings:
            freeze(model, config.freeze_layers, config.freeze_embeddings)
        if config.unfreeze_every:
            if uses_deepspeed():
                raise ConfigError(
                    "unfreeze_every: gradual unfreezing needs a non-DeepSpeed launch (single or ddp)"
                )
            callbacks.append(
                GradualUnfreezeCallback(model, config.unfreeze_every, floor=config.freeze_layers)
            )
        if config.freeze_backbone:
            feature_extraction(model)
        elif config.peft == "bitfit":
            bitfit(model)
        elif config.peft == "prefix_tuning":
            add_prefix_tuning(model, config.num_virtual_tokens, seed=config.seed)
    except ValueError as err:
        raise ConfigError(f"{config.peft if config.peft != 'none' else 'freeze_layers'}: {err}") from None
    task_type = TaskType.SEQ_2_SEQ_LM if kind == "seq2seq" else TaskType.SEQ_CLS
    peft_config = None
    if config.peft in ("lora", "ia3", "prompt_tuning"):
        peft_config = build_peft_config(
            config.peft,
            config.lora_r,
            config.lora_alpha,
            config.lora_dropout,
            config.target_modules,
            config.num_virtual_tokens,
            model=model,
            task_type=task_type,
        )
    if peft_config is not None:
        if zero3_enabled():
            raise ConfigError(
                f"peft: '{config.peft}' is not supported under ZeRO-3 here; launch with ddp or zero2"
            )
        model = get_peft_model(model, peft_config)
    return model, callbacks


# ---------------------------------------------------------------------------------------------
# Step 2b: features


def build_features(config: Config, data: TaskData, tokenizer, kind: str, model):
    """(train features, held-out features, collator, examples cut to max_length)."""
    if kind == "encoder":
        train, cut_train = encoder_features(data.train, tokenizer, config.max_length)
        held_out, cut_eval = encoder_features(data.eval, tokenizer, config.max_length)
        collator = DataCollatorWithPadding(tokenizer)
    elif kind == "decoder":
        transform = config.pair_transform if data.pairs else "single"
        train, cut_train = decoder_features(
            data.train, tokenizer, config.max_length, transform, config.delimiter
        )
        held_out, cut_eval = decoder_features(
            data.eval, tokenizer, config.max_length, transform, config.delimiter
        )
        collator = SequencesCollator(tokenizer.pad_token_id, regression=config.task == "regression")
    else:
        prefix = config.task_prefix if config.task_prefix is not None else DEFAULT_PREFIXES[config.dataset]
        args = (tokenizer, config.max_length, config.max_target_length, prefix)
        train, cut_train = seq2seq_features(data.train, *args)
        held_out, cut_eval = seq2seq_features(data.eval, *args)
        collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    return train, held_out, collator, {"train": cut_train, "eval": cut_eval}


def transform_of(config: Config, data: TaskData) -> str:
    """The GPT-1 input transformation the data and config call for."""
    if config.task == "multiple_choice":
        return "choices"
    return "similarity" if data.pairs and config.pair_transform == "similarity" else "single"


# ---------------------------------------------------------------------------------------------
# Step 5: predictions, metrics, baseline


def predict(trainer: Trainer, config: Config, features: list[dict], tokenizer, kind: str) -> list:
    """Held-out predictions: class or option indices, regression outputs, or generated texts (text-to-text)."""
    if kind != "seq2seq":
        logits = torch.as_tensor(trainer.predict(features).predictions)
        if config.task == "regression":
            return logits[:, 0].tolist()
        return logits.argmax(dim=-1).tolist()
    texts: list[str] = []
    with unwrapped_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
        model.eval()
        device = next(model.parameters()).device
        for start in range(0, len(features), config.per_device_eval_batch_size):
            batch = tokenizer.pad(
                [
                    {"input_ids": f["input_ids"]}
                    for f in features[start : start + config.per_device_eval_batch_size]
                ],
                return_tensors="pt",
            )
            with torch.no_grad():
                generated = model.generate(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    max_new_tokens=config.max_target_length,
                    do_sample=False,
                )
            texts += tokenizer.batch_decode(generated, skip_special_tokens=True)
    return [t.strip() for t in texts]


def score(config: Config, data: TaskData, predictions: list) -> dict[str, Any]:
    """Metrics of held-out predictions (see metrics.py); text-to-text classes are read back from the words."""
    examples = data.eval
    if config.task == "regression":
        return metrics.regression_metrics([e["label"] for e in examples], predictions)
    if config.task == "text_to_text":
        result: dict[str, Any] = {
            "exact_match": metrics.exact_match([e["target"] for e in examples], predictions)
        }
        if data.classes:
            indices = [data.classes.index(p) if p in data.classes else -1 for p in predictions]
            result["invalid_answers"] = sum(i < 0 for i in indices)
            result.update(
                metrics.classification_metrics([e["label"] for e in examples], indices, len(data.classes))
            )
        return result
    classes = len(examples[0]["choices"]) if config.task == "multiple_choice" else len(data.classes)
    return metrics.classification_metrics([e["label"] for e in examples], predictions, classes)


def fit_baseline(config: Config, data: TaskData) -> tuple[str, dict[str, Any]]:
    """(name, metrics) of the classical baseline on the same split."""
    if config.task == "regression":
        return "bag-of-words ridge", score(config, data, baselines.bag_of_words_ridge(data.train, data.eval))
    if config.task == "multiple_choice" or (config.task == "text_to_text" and not data.classes):
        key = "label" if config.task == "multiple_choice" else "target"
        guesses = baselines.majority([e[key] for e in data.train], len(data.eval))
        return "majority answer", score(config, data, guesses)
    predicted = baselines.tfidf_logistic_regression(data.train, data.eval, config.seed)
    if config.task == "text_to_text":
        predicted = [data.classes[i] for i in predicted]
    return "TF-IDF logistic regression", score(config, data, predicted)


def peak_memory_mb() -> float:
    """Peak memory of this process so far: accelerator memory on GPU, resident set size on CPU (MiB)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ---------------------------------------------------------------------------------------------
# Step 6: the model folder and the report


def save_final_model(
    trainer: Trainer, config: Config, tokenizer, run_dir: Path, results: dict, notes: str
) -> Path:
    """Write `<run_dir>/model` atomically: a plain transformers model (LoRA/IA3 merged), or a prompt-tuning adapter.

    Every process calls this: under ZeRO-3 the full weights are gathered collectively first.
    """
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped) if zero3_enabled() else None

    def save_weights(folder: Path) -> None:
        if not is_main_process():
            return
        module = trainer.accelerator.unwrap_model(trainer.model)
        nonlocal state_dict
        if isinstance(module, GPTClassifier):
            module = module.classifier
            if state_dict is not None:
                state_dict = {
                    k.removeprefix("classifier."): v
                    for k, v in state_dict.items()
                    if k.startswith("classifier.")
                }
        if config.peft in MERGEABLE:
            module = module.merge_and_unload()
        module.save_pretrained(folder, state_dict=state_dict)

    card_metrics = {k: v for k, v in results["model"].items() if not isinstance(v, list)}
    card_metrics.update(
        {f"baseline_{k}": v for k, v in results["baseline"].items() if not isinstance(v, list)}
    )
    return save_model_folder(
        run_dir / "model",
        save_weights,
        tokenizer=tokenizer,
        card=lambda folder: write_model_card(folder, "finetune", config.to_dict(), card_metrics, notes),
        is_main=is_main_process(),
        barrier=trainer.accelerator.wait_for_everyone,
    )


def format_report(results: dict[str, Any], data: TaskData) -> str:
    """report.md: the model beside its baseline, and the confusion matrix."""
    names = sorted(
        {k for side in ("model", "baseline") for k, v in results[side].items() if not isinstance(v, list)}
    )
    lines = [
        f"# Fine-tuning report: {results['run_name']}",
        "",
        f"Backbone `{results['backbone']}` ({results['kind']}), task `{results['task']}`, data {data.origin}: "
        f"{results['train_examples']} training and {results['eval_examples']} held-out examples. "
        f"Trained {results['train_seconds']} s ({results['global_step']} steps), {results['trainable_params']:,} of "
        f"{results['total_params']:,} parameters trainable, peak memory {results['peak_memory_mb']:.0f} MiB.",
        "",
        f"| metric | model | baseline ({results['baseline_name']}) |",
        "|---|---|---|",
    ]
    for name in names:
        model_value, base_value = results["model"].get(name, ""), results["baseline"].get(name, "")
        lines.append(f"| {name} | {_fmt(model_value)} | {_fmt(base_value)} |")
    confusion = results["model"].get("confusion")
    if confusion:
        labels = data.classes or [str(i) for i in range(len(confusion))]
        lines += ["", "Confusion matrix (rows: true class, columns: predicted):", ""]
        lines += ["| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        lines += [
            f"| {labels[i]} | " + " | ".join(str(c) for c in row) + " |" for i, row in enumerate(confusion)
        ]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------
# The stage


def training_arguments(config: Config, run_dir: Path, has_eval: bool) -> TrainingArguments:
    """Our config mapped onto transformers' TrainingArguments (the only place that knows their names)."""
    evaluate = has_eval and config.eval_steps > 0
    save = config.save_steps > 0
    return TrainingArguments(
        output_dir=str(checkpoint_dir(run_dir)),
        seed=config.seed,
        data_seed=config.seed,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        # slanted_triangular is built by FinetuneTrainer.create_scheduler; the name here is never used then
        lr_scheduler_type="linear"
        if config.lr_scheduler_type == "slanted_triangular"
        else config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float below 1 is a share of the steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.eval_steps if evaluate else None,
        save_strategy="steps" if save else "no",
        save_steps=config.save_steps if save else 500,
        save_total_limit=config.save_total_limit,
        report_to=["tensorboard"],
        label_names=["labels"],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not is_main_process(),
        # Gradual unfreezing leaves blocks without gradients in early steps; DDP must expect that.
        ddp_find_unused_parameters=True if config.unfreeze_every else None,
        **trainer_backend_kwargs(),
    )


def build_trainer(config: Config, run_dir: Path):
    """Steps 1-3: data, model, features and trainability, assembled into a FinetuneTrainer.

    Returns (trainer, data, held-out features, tokenizer, kind, cut counts). Tests use it to inspect what trains.
    """
    # step 1. examples
    data = load_task(config)
    # step 2. backbone, head and inputs
    kind = backbone_kind(config.model)
    check_task_fits(config, kind)
    model, tokenizer = load_model(config, data, kind)
    check_length(config.max_length, "max_length", model, f"the model {config.model}")
    # step 3. what trains, then the GPT wrapper around the (maybe adapted) classifier
    model, callbacks = choose_trainable(config, model, kind)
    if kind == "decoder":
        model = GPTClassifier(
            model,
            transform_of(config, data),
            config.lm_loss_weight,
            regression=config.task == "regression",
            lm_head_weight=untied_lm_head(config) if config.lm_loss_weight > 0 else None,
        )
    train, held_out, collator, cut = build_features(config, data, tokenizer, kind, model)
    trainer = FinetuneTrainer(
        model=model,
        args=training_arguments(config, run_dir, has_eval=True),
        train_dataset=train,
        eval_dataset=held_out,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[MetricsCallback(run_dir), *callbacks],
        stage_config=config,
    )
    return trainer, data, held_out, tokenizer, kind, cut


def run(config: Config) -> dict[str, Any]:
    """Fine-tune `config.model` on the task; return the results (also in results.json and report.md)."""
    prepare_cpu_distributed()
    seed_everything(config.seed)
    checkpoint = resume_checkpoint(config, RESUMABLE)  # before start_run rewrites config.yaml
    run_dir = start_run(config)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(
        run_dir / "tensorboard"
    )  # where the Trainer's TensorBoard writes
    trainer, data, held_out, tokenizer, kind, cut = build_trainer(config, run_dir)
    logger = MetricsLogger(run_dir, tensorboard=False)
    sizes = {
        "train_examples": len(data.train),
        "eval_examples": len(data.eval),
        "train_examples_cut": cut["train"],
        "eval_examples_cut": cut["eval"],
        "trainable_params": count_parameters(trainer.model, trainable_only=True),
        "total_params": count_parameters(trainer.model),
    }
    logger.log(0, sizes)
    if is_main_process():
        print(f"[finetune] {kind} {config.model}, task {config.task}: {data.origin}; {json.dumps(sizes)}")

    # step 4. train (exactly resumed from the last complete checkpoint, see `resume`)
    if checkpoint is not None:
        print(f"[finetune] resuming from {checkpoint}")
    started = time.time()
    train_output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = round(time.time() - started, 1)

    # step 5. held-out predictions and metrics, and the baseline on the same split
    model_metrics = score(config, data, predict(trainer, config, held_out, tokenizer, kind))
    baseline_name, baseline_metrics = fit_baseline(config, data) if config.baseline else ("none", {})
    results: dict[str, Any] = {
        "run_name": config.run_name,
        "backbone": config.model,
        "kind": kind,
        "task": config.task,
        "method": "frozen features"
        if config.freeze_backbone
        else ("full" if config.peft == "none" else config.peft),
        **sizes,
        "train_loss": train_output.training_loss,
        "train_seconds": train_seconds,
        "global_step": trainer.state.global_step,
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "threads": torch.get_num_threads(),
        "model": model_metrics,
        "baseline_name": baseline_name,
        "baseline": baseline_metrics,
    }

    # step 6. model folder, results and report
    notes = (
        f"Task `{config.task}` on {data.origin}. Held-out: "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in model_metrics.items() if not isinstance(v, list))
        + f"; {baseline_name} baseline: "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in baseline_metrics.items() if not isinstance(v, list))
        + ". Load with `AutoModelForSequenceClassification` (classifiers) or `AutoModelForSeq2SeqLM`; name a "
        "classifier as a judge with `classifier:<this folder>`."
    )
    save_final_model(trainer, config, tokenizer, run_dir, results, notes)
    if is_main_process():
        (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (run_dir / "report.md").write_text(format_report(results, data))
        flat = {f"final/{k}": v for k, v in model_metrics.items() if not isinstance(v, list)}
        flat.update({f"baseline/{k}": v for k, v in baseline_metrics.items() if not isinstance(v, list)})
        logger.log(trainer.state.global_step, {**flat, "train_seconds": train_seconds})
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in model_metrics.items() if not isinstance(v, list))
        base = ", ".join(f"{k}={_fmt(v)}" for k, v in baseline_metrics.items() if not isinstance(v, list))
        print(
            f"[finetune] saved {run_dir / 'model'}; held-out {shown}; {baseline_name}: {base}; {train_seconds} s"
        )
    logger.close()
    return results


def main(argv: list[str] | None = None) -> None:
    """`alignment finetune --config configs/finetune/minilm-sentiment.yaml [--key value ...]`."""
    run_cli("finetune", lambda args: run(parse_config(Config, args)), argv)


if __name__ == "__main__":
    main()
