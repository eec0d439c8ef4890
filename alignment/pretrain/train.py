"""`alignment pretrain`: train a byte-level BPE tokenizer and pretrain a small base model on a text corpus.

One stage, three objectives, chosen by `objective` (see objectives.py): causal LM for decoders (GPT-2 or
Llama style), masked LM for BERT encoders, span corruption for T5 encoder-decoders. The transformers
`Trainer` runs the loop: AdamW, linear warmup then cosine decay, gradient clipping and accumulation,
checkpoints with optimizer, scheduler and RNG state, data-order-exact resume, DDP and DeepSpeed ZeRO.
Our callbacks add held-out perplexity, sampled continuations, tokens/s and MFU, and a time limit.

Outputs in <run_dir>: config.yaml, metrics.jsonl, samples.jsonl, tensorboard/, tokenizer/,
checkpoints/checkpoint-<step>/, and the final model + tokenizer + model card in model/.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from alignment.core.config import ConfigError, StageConfig, load_yaml, parse_config, require
from alignment.core.generation import SamplingSettings, generate_texts
from alignment.core.launch import (
    is_main_process,
    prepare_cpu_distributed,
    seed_everything,
    start_run,
    trainer_backend_kwargs,
    world_size,
)
from alignment.core.logging import MetricsCallback, MetricsLogger, write_model_card
from alignment.core.models import build_causal_lm, count_parameters, load_tokenizer
from alignment.pretrain.data import load_documents, pack_documents, split_documents
from alignment.pretrain.metrics import measure_matmul_peak, model_flops_utilization, unigram_perplexity
from alignment.pretrain.objectives import IGNORE_INDEX, mask_tokens, span_corruption, span_corruption_counts
from alignment.pretrain.tokenizer import MASK_TOKEN, sentinel_tokens, train_bpe_tokenizer

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
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Reuse this tokenizer instead of training a BPE on the corpus."}
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
    heldout_data: str | None = field(
        default="cache://datasets/sentiment/corpus_heldout.jsonl",
        metadata={"help": "Held-out text; null holds out heldout_fraction of the training documents."},
    )
    heldout_fraction: float = field(
        default=0.05, metadata={"help": "Share of documents held out when heldout_data is null."}
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
    warmup_steps: int = field(default=20, metadata={"help": "Linear warmup steps."})
    weight_decay: float = field(
        default=0.1, metadata={"help": "AdamW weight decay (not on biases and norms)."}
    )
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    max_steps: int = field(
        default=200, metadata={"help": "Optimizer steps; the LR schedule spans exactly these."}
    )
    per_device_batch_size: int = field(default=8, metadata={"help": "Blocks per device per micro-batch."})
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
        default=None, metadata={"help": "Stop training (checkpoint, evaluate, save) after this many minutes."}
    )
    resume: str = field(
        default="auto",
        metadata={
            "help": "auto: continue from the newest complete checkpoint in <run_dir>/checkpoints if any; "
            "never: start fresh; or a checkpoint folder."
        },
    )
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
            "per_device_batch_size",
            "gradient_accumulation_steps",
            "eval_steps",
            "logging_steps",
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
        for key in ("heldout_fraction", "mlm_probability", "noise_density", "min_lr_ratio"):
            require(0 < getattr(self, key) < 1, key, "a number strictly between 0 and 1", getattr(self, key))
        require(self.mean_span_length >= 1, "mean_span_length", "at least 1", self.mean_span_length)
        require(self.learning_rate > 0, "learning_rate", "a positive number", self.learning_rate)
        require(
            0 <= self.warmup_steps < self.max_steps,
            "warmup_steps",
            f"0 <= warmup_steps < max_steps={self.max_steps}",
            self.warmup_steps,
        )
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


# ---------------------------------------------------------------------------------------------
# Tokenizer and model


def prepare_tokenizer(config: Config, train_documents: list[str], resuming: bool) -> PreTrainedTokenizerBase:
    """Train (or reuse) the tokenizer; saved in <run_dir>/tokenizer so other ranks and resumed runs share it."""
    saved = config.run_dir / "tokenizer"
    num_sentinels = span_corruption_counts(config.block_size, config.noise_density, config.mean_span_length)[
        1
    ]
    if (resuming or not is_main_process()) and (saved / "tokenizer_config.json").exists():
        return load_tokenizer(str(saved))
    if config.tokenizer_name_or_path:
        tokenizer = load_tokenizer(config.tokenizer_name_or_path)
        if config.objective == "masked_lm" and tokenizer.mask_token is None:
            tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
        if config.objective == "span_corruption":
            tokenizer.add_tokens(sentinel_tokens(num_sentinels), special_tokens=True)
    else:
        sentinels = num_sentinels if config.objective == "span_corruption" else 0
        tokenizer = train_bpe_tokenizer(train_documents, config.vocab_size, num_sentinels=sentinels)
    tokenizer.save_pretrained(str(saved))
    return tokenizer


def build_model(config: Config, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A freshly initialized model for the objective, sized to the tokenizer."""
    vocab = len(tokenizer)
    if config.objective == "causal_lm":
        return build_causal_lm(
            config.architecture,
            vocab,
            config.n_layer,
            config.d_model,
            config.n_head,
            config.block_size,
            config.dropout,
            tokenizer=tokenizer,
        )
    if config.objective == "masked_lm":
        return BertForMaskedLM(
            BertConfig(
                vocab_size=vocab,
                hidden_size=config.d_model,
                num_hidden_layers=config.n_layer,
                num_attention_heads=config.n_head,
                intermediate_size=4 * config.d_model,
                max_position_embeddings=config.block_size,
                hidden_dropout_prob=config.dropout,
                attention_probs_dropout_prob=config.dropout,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
    return T5ForConditionalGeneration(
        T5Config(
            vocab_size=vocab,
            d_model=config.d_model,
            d_kv=config.d_model // config.n_head,
            d_ff=4 * config.d_model,
            num_layers=config.n_layer,
            num_decoder_layers=config.n_layer,
            num_heads=config.n_head,
            dropout_rate=config.dropout,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,  # T5 starts decoding from pad
        )
    )


# ---------------------------------------------------------------------------------------------
# Objective applied to blocks


class ObjectiveCollator:
    """Turns token blocks into model inputs for the objective; fresh random corruption for every batch.

    The training corruption draws from torch's global RNG, which the Trainer saves in each checkpoint and
    restores on resume, so a resumed run corrupts the same batches the same way. Held-out examples come
    already corrupted (`corrupt` with a fixed generator), so every evaluation scores the same task.
    """

    def __init__(self, config: Config, tokenizer: PreTrainedTokenizerBase):
        self.config = config
        self.eos_token_id = tokenizer.eos_token_id
        self.mask_token_id = tokenizer.mask_token_id
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        # Random MLM replacements come from the regular tokens, which follow the specials when the
        # tokenizer was trained here (tokenizer.py puts them first).
        first_regular = (
            len(self.special_ids) if self.special_ids.tolist() == list(range(len(self.special_ids))) else 0
        )
        self.random_token_range = (first_regular, len(tokenizer))
        num_spans = span_corruption_counts(config.block_size, config.noise_density, config.mean_span_length)[
            1
        ]
        self.sentinel_ids = tokenizer.convert_tokens_to_ids(sentinel_tokens(num_spans))

    def corrupt(
        self, blocks: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Inputs and labels for blocks [batch, block_size]."""
        if self.config.objective == "causal_lm":
            return {"input_ids": blocks, "labels": blocks.clone()}  # the model shifts labels by one
        if self.config.objective == "masked_lm":
            inputs, labels = mask_tokens(
                blocks,
                self.mask_token_id,
                self.random_token_range,
                self.config.mlm_probability,
                special_tokens_mask=torch.isin(blocks, self.special_ids),
                generator=generator,
            )
            return {"input_ids": inputs, "labels": labels}
        inputs, targets = span_corruption(
            blocks,
            self.sentinel_ids,
            self.eos_token_id,
            self.config.noise_density,
            self.config.mean_span_length,
            generator=generator,
        )
        return {"input_ids": inputs, "labels": targets}

    def __call__(self, examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Collate a list of `{"input_ids": block}` (training) or already corrupted examples (held-out)."""
        if "labels" in examples[0]:
            return {key: torch.stack([e[key] for e in examples]) for key in examples[0]}
        return self.corrupt(torch.stack([e["input_ids"] for e in examples]))

    def scored_tokens(self, heldout: dict[str, torch.Tensor]) -> torch.Tensor:
        """The original held-out tokens the model is scored on (for the unigram baseline)."""
        labels = heldout["labels"]
        if self.config.objective == "causal_lm":
            return labels[:, 1:]  # the first token of a block has no context
        if self.config.objective == "masked_lm":
            return labels[labels != IGNORE_INDEX]
        targets = labels[:, :-1]  # the dropped tokens, without sentinels and the final EOS
        return targets[~torch.isin(targets, torch.tensor(self.sentinel_ids))]


# ---------------------------------------------------------------------------------------------
# Callbacks


class ThroughputCallback(TrainerCallback):
    """Tokens per second and MFU, timed over optimizer steps only (evaluation and saving excluded)."""

    def __init__(self, tokens_per_step: int, num_parameters: int, peak_flops: float):
        self.tokens_per_step = tokens_per_step
        self.num_parameters = num_parameters
        self.peak_flops = peak_flops
        self.seconds = 0.0
        self.steps = 0
        self._started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: D102 (Trainer hook)
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102 (Trainer hook)
        self.seconds += time.perf_counter() - self._started
        self.steps += 1

    def metrics(self) -> dict[str, float]:
        """`tokens_per_second` (all processes) and `mfu` against every process's measured matmul peak."""
        tokens_per_second = self.steps * self.tokens_per_step / max(self.seconds, 1e-9)
        mfu = model_flops_utilization(self.num_parameters, tokens_per_second, self.peak_flops * world_size())
        return {"tokens_per_second": tokens_per_second, "mfu": mfu}


class EvaluationExtrasCallback(TrainerCallback):
    """At each evaluation: perplexity, throughput so far and (decoders) a few sampled continuations."""

    def __init__(
        self,
        logger: MetricsLogger,
        throughput: ThroughputCallback,
        tokenizer: PreTrainedTokenizerBase,
        prompts: list[str],
        config: Config,
    ):
        self.logger = logger
        self.throughput = throughput
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.config = config
        self.last_eval: tuple[int, float] | None = None  # (step, eval_loss)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):  # noqa: D102 (Trainer hook)
        if metrics and "eval_loss" in metrics:
            self.last_eval = (state.global_step, metrics["eval_loss"])
            extras = {"eval_perplexity": math.exp(metrics["eval_loss"]), **self.throughput.metrics()}
            self.logger.log(state.global_step, extras)
        if self.prompts and model is not None and is_main_process() and not _zero3():
            # Sampling must not move the training RNG, or resumed and uninterrupted runs would differ.
            with torch.random.fork_rng():
                # Prompt plus continuation must fit the learned positions (GPT-2 has no more than block_size).
                max_new_tokens = min(self.config.sample_max_new_tokens, self.config.block_size * 3 // 4)
                settings = SamplingSettings(max_new_tokens=max_new_tokens, temperature=1.0, top_k=50)
                texts = generate_texts(model, self.tokenizer, self.prompts, settings, seed=self.config.seed)
            for prompt, text in zip(self.prompts, texts):
                self.logger.log_text(state.global_step, "samples", f"{prompt}|{text}")


def sample_prompts(documents: list[str], tokenizer: PreTrainedTokenizerBase, config: Config) -> list[str]:
    """The first four words of the first held-out documents, at most a quarter of a block in tokens."""
    prompts = []
    for document in documents[: config.num_samples]:
        ids = tokenizer(" ".join(document.split()[:4]), add_special_tokens=False)["input_ids"]
        prompts.append(tokenizer.decode(ids[: config.block_size // 4]))
    return prompts


def _zero3() -> bool:
    """Under ZeRO-3 each rank holds a shard of the weights, so rank 0 alone cannot sample."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


class StopCallback(TrainerCallback):
    """Stop at the time limit (checkpointing first) or, for resume tests, at `stop_after_step`."""

    def __init__(self, max_time_minutes: float | None, stop_after_step: int | None):
        self.deadline = None if max_time_minutes is None else time.monotonic() + 60 * max_time_minutes
        self.stop_after_step = stop_after_step
        self.timed_out = False

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102 (Trainer hook)
        if self.stop_after_step is not None and state.global_step >= self.stop_after_step:
            control.should_training_stop = True
        if self.deadline is not None and self._past_deadline(args.device):
            self.timed_out = True
            control.should_training_stop = True
            control.should_save = True
        return control

    def _past_deadline(self, device: torch.device) -> bool:
        """Whether any rank ran out of time: every rank must stop at the same step, or collectives hang."""
        late = torch.tensor([float(time.monotonic() > self.deadline)], device=device)
        if world_size() > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(late, op=torch.distributed.ReduceOp.MAX)
        return bool(late.item())


# ---------------------------------------------------------------------------------------------
# The stage


def find_resume_checkpoint(config: Config) -> str | None:
    """The checkpoint to resume from, or None to start fresh.

    A checkpoint counts only once its `trainer_state.json` exists (the Trainer writes it after the
    weights, optimizer and RNG state), so a run killed in the middle of saving resumes from the one before.
    """
    if config.resume == "never":
        return None
    if config.resume != "auto":
        if not (Path(config.resume) / "trainer_state.json").exists():
            raise ConfigError(
                f"resume: expected 'auto', 'never' or a complete checkpoint folder, got {config.resume!r}"
            )
        return config.resume
    folder = config.run_dir / "checkpoints"
    complete = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    if not complete:
        return None
    _check_same_run(config)
    return str(max(complete, key=lambda p: int(p.name.rsplit("-", 1)[1])))


# Keys that may change between a run and its resumption; any other change would silently mix two runs.
RESUMABLE_CHANGES = {
    "resume",
    "stop_after_step",
    "max_time_minutes",
    "eval_steps",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "num_samples",
    "sample_max_new_tokens",
    "eval_on_start",
}


def _check_same_run(config: Config) -> None:
    """Refuse to resume checkpoints written under a different config (read before start_run overwrites it)."""
    saved_path = config.run_dir / "config.yaml"
    if not saved_path.exists():
        return
    saved = load_yaml(saved_path)
    changed = sorted(
        k for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES and saved.get(k, v) != v
    )
    if changed:
        details = ", ".join(f"{k}: {saved[k]!r} -> {getattr(config, k)!r}" for k in changed)
        raise ConfigError(
            f"resume: {config.run_dir}/checkpoints was written with a different config ({details}); "
            "pass --resume never to start over, or pick another run_name/output_dir"
        )


def training_arguments(config: Config) -> TrainingArguments:
    """The Trainer's settings: schedule, clipping, accumulation, evaluation, checkpoints, TensorBoard."""
    return TrainingArguments(
        output_dir=str(config.run_dir / "checkpoints"),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_batch_size,
        per_device_eval_batch_size=config.per_device_batch_size * 2,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": config.min_lr_ratio},
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        adam_beta2=config.adam_beta2,
        max_grad_norm=config.max_grad_norm,
        eval_strategy="steps",
        eval_steps=config.eval_steps,
        eval_on_start=config.eval_on_start,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=["tensorboard"],
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not is_main_process(),
        **trainer_backend_kwargs(),
    )


def run(config: Config) -> dict[str, Any]:
    """Pretrain and return the final metrics (also in metrics.jsonl and the model card)."""
    prepare_cpu_distributed()
    resume_from = find_resume_checkpoint(config)  # before start_run overwrites the saved config.yaml
    run_dir = start_run(config)
    seed_everything(config.seed)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(
        run_dir / "tensorboard"
    )  # where the Trainer's TensorBoard writes
    args = training_arguments(config)
    logger = MetricsLogger(run_dir)

    # step 1. documents, tokenizer, packed blocks
    train_documents = load_documents(config.train_data, config.text_column)
    if config.heldout_data:
        heldout_documents = load_documents(config.heldout_data, config.text_column)
    else:
        train_documents, heldout_documents = split_documents(
            train_documents, config.heldout_fraction, config.seed
        )
    with args.main_process_first(desc="tokenizer"):
        tokenizer = prepare_tokenizer(config, train_documents, resuming=resume_from is not None)
    train_blocks = pack_documents(train_documents, tokenizer, config.block_size)
    heldout_blocks = pack_documents(heldout_documents, tokenizer, config.block_size)[: config.max_eval_blocks]

    # step 2. the objective: random corruption per training batch, fixed corruption of the held-out blocks
    collator = ObjectiveCollator(config, tokenizer)
    heldout = collator.corrupt(heldout_blocks, generator=torch.Generator().manual_seed(config.seed))
    train_dataset = [{"input_ids": block} for block in train_blocks]
    eval_dataset = [{key: value[i] for key, value in heldout.items()} for i in range(len(heldout_blocks))]
    baseline = unigram_perplexity(train_blocks, collator.scored_tokens(heldout), len(tokenizer))

    # step 3. model, machine peak, callbacks
    model = build_model(config, tokenizer)
    if config.objective == "causal_lm":
        # Tells the Trainer the loss shifts labels, so it counts block_size - 1 predicted tokens per block
        # when it normalizes the loss (a config-built model has no loss_type and would count block_size).
        model.loss_type = "ForCausalLM"
    num_parameters = count_parameters(model)
    peak_flops = measure_matmul_peak(device="cuda" if torch.cuda.is_available() else "cpu")
    tokens_per_step = (
        config.per_device_batch_size * config.gradient_accumulation_steps * world_size() * config.block_size
    )
    throughput = ThroughputCallback(tokens_per_step, num_parameters, peak_flops)
    prompts = sample_prompts(heldout_documents, tokenizer, config) if config.objective == "causal_lm" else []
    stopper = StopCallback(config.max_time_minutes, config.stop_after_step)
    extras = EvaluationExtrasCallback(logger, throughput, tokenizer, prompts, config)
    logger.log(
        0,
        {
            "num_parameters": num_parameters,
            "train_blocks": len(train_blocks),
            "heldout_blocks": len(heldout_blocks),
            "vocab_size": len(tokenizer),
            "peak_matmul_gflops": peak_flops / 1e9,
            "unigram_perplexity": baseline,
        },
    )
    trainer = Trainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=[MetricsCallback(run_dir), throughput, extras, stopper],
    )

    # step 4. train (resuming restores weights, optimizer, schedule, RNG and the position in the data)
    trainer.train(resume_from_checkpoint=resume_from)
    if config.stop_after_step is not None and trainer.state.global_step < config.max_steps:
        logger.close()
        return {"stopped_at_step": trainer.state.global_step}

    # step 5. final evaluation and the model folder
    if extras.last_eval is not None and extras.last_eval[0] == trainer.state.global_step:
        eval_loss = extras.last_eval[1]  # the last step was just evaluated
    else:
        eval_loss = trainer.evaluate()["eval_loss"]
    metrics = {
        "eval_loss": eval_loss,
        "perplexity": math.exp(eval_loss),
        "unigram_perplexity": baseline,
        **throughput.metrics(),
        "peak_matmul_gflops": peak_flops / 1e9,
        "num_parameters": num_parameters,
        "steps": trainer.state.global_step,
        "train_tokens": trainer.state.global_step * tokens_per_step,
        "stopped_by_time_limit": stopper.timed_out,
    }
    save_final_model(trainer, tokenizer, config, metrics)
    logger.log(trainer.state.global_step, {"final": True, **metrics})
    logger.close()
    return metrics


def save_final_model(
    trainer: Trainer, tokenizer: PreTrainedTokenizerBase, config: Config, metrics: dict
) -> None:
    """Write model, tokenizer and card into a temporary folder, then swap it in as <run_dir>/model."""
    final_dir = config.run_dir / "model"
    tmp_dir = config.run_dir / "model.tmp"
    trainer.save_model(str(tmp_dir))  # every rank takes part (ZeRO-3 gathers the shards here)
    if is_main_process():
        tokenizer.save_pretrained(str(tmp_dir))
        notes = (
            f"Objective `{config.objective}`, architecture `{config.architecture}`. Held-out perplexity "
            f"{metrics['perplexity']:.1f} against {metrics['unigram_perplexity']:.1f} for a unigram model of "
            "the training tokens (add-one smoothed) on the same held-out tokens."
        )
        write_model_card(tmp_dir, "pretrain", config.to_dict(), metrics, notes=notes)
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(tmp_dir, final_dir)
    trainer.accelerator.wait_for_everyone()


def main(argv: list[str] | None = None) -> None:
    """`alignment pretrain --config configs/pretrain/tiny.yaml [--key value ...]`."""
    metrics = run(parse_config(Config, argv))
    if is_main_process():
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})


if __name__ == "__main__":
    main()
