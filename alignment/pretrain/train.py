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
from typing import Any

import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
    Trainer,
    TrainingArguments,
)

from alignment.core.config import parse_config
from alignment.core.errors import run_cli
from alignment.core.launch import (
    is_main_process,
    prepare_cpu_distributed,
    seed_everything,
    trainer_backend_kwargs,
    world_size,
)
from alignment.core.logging import MetricsCallback, MetricsLogger, write_model_card
from alignment.core.models import build_causal_lm, count_parameters, load_tokenizer
from alignment.core.runs import resume_checkpoint, save_model_folder, start_run
from alignment.pretrain.callbacks import (
    EvaluationExtrasCallback,
    StopCallback,
    ThroughputCallback,
    sample_prompts,
)
from alignment.pretrain.config import Config
from alignment.pretrain.data import load_documents, pack_documents, split_documents
from alignment.pretrain.metrics import measure_matmul_peak, unigram_perplexity
from alignment.pretrain.objectives import IGNORE_INDEX, mask_tokens, span_corruption, span_corruption_counts
from alignment.pretrain.tokenizer import MASK_TOKEN, sentinel_tokens, train_bpe_tokenizer

# Keys that may change between a run and its resumption; any other change would silently mix two runs.
RESUMABLE = {
    "stop_after_step",
    "max_time_minutes",
    "eval_steps",
    "num_samples",
    "sample_max_new_tokens",
    "eval_on_start",
}


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
    if config.tokenizer:
        tokenizer = load_tokenizer(config.tokenizer)
        if config.objective == "masked_lm" and tokenizer.mask_token is None:
            tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
        if config.objective == "span_corruption":
            tokenizer.add_tokens(sentinel_tokens(num_sentinels), special_tokens=True)
    else:
        sentinels = num_sentinels if config.objective == "span_corruption" else 0
        tokenizer = train_bpe_tokenizer(
            train_documents,
            config.vocab_size,
            num_sentinels=sentinels,
            bert_specials=config.objective == "masked_lm",  # [CLS]/[SEP] for the classifiers built on it
        )
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
# The stage


def training_arguments(config: Config) -> TrainingArguments:
    """The Trainer's settings: schedule, clipping, accumulation, evaluation, checkpoints, TensorBoard."""
    return TrainingArguments(
        output_dir=str(config.run_dir / "checkpoints"),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size * 2,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": config.min_lr_ratio},
        warmup_steps=config.warmup_ratio,  # transformers 5: a float below 1 is a share of the steps
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
        **trainer_backend_kwargs(config.precision),
    )


def run(config: Config) -> dict[str, Any]:
    """Pretrain and return the final metrics (also in metrics.jsonl and the model card)."""
    prepare_cpu_distributed()
    checkpoint = resume_checkpoint(config, RESUMABLE)  # before start_run overwrites the saved config.yaml
    resume_from = str(checkpoint) if checkpoint else None
    run_dir = start_run(config)
    seed_everything(config.seed)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(
        run_dir / "tensorboard"
    )  # where the Trainer's TensorBoard writes
    args = training_arguments(config)

    # step 1. documents, tokenizer, packed blocks
    train_documents = load_documents(config.train_data, config.text_column)
    if config.eval_data:
        heldout_documents = load_documents(config.eval_data, config.text_column)
    else:
        train_documents, heldout_documents = split_documents(
            train_documents, config.eval_fraction, config.seed
        )
    with args.main_process_first(desc="tokenizer"):
        tokenizer = prepare_tokenizer(config, train_documents, resuming=resume_from is not None)
    train_blocks = pack_documents(train_documents, tokenizer, config.block_size)
    heldout_blocks = pack_documents(heldout_documents, tokenizer, config.block_size)[: config.max_eval_blocks]

    logger = MetricsLogger(run_dir)  # after the data loaded: a bad corpus leaves the run folder as it was

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
        config.per_device_train_batch_size
        * config.gradient_accumulation_steps
        * world_size()
        * config.block_size
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
    """Write model, tokenizer and card atomically as <run_dir>/model (every rank: ZeRO-3 gathers the shards)."""
    notes = (
        f"Objective `{config.objective}`, architecture `{config.architecture}`. Held-out perplexity "
        f"{metrics['perplexity']:.1f} against {metrics['unigram_perplexity']:.1f} for a unigram model of "
        "the training tokens (add-one smoothed) on the same held-out tokens."
    )
    save_model_folder(
        config.run_dir / "model",
        lambda folder: trainer.save_model(str(folder)),
        tokenizer=tokenizer,
        card=lambda folder: write_model_card(folder, "pretrain", config.to_dict(), metrics, notes=notes),
        is_main=is_main_process(),
        barrier=trainer.accelerator.wait_for_everyone,
    )


def main(argv: list[str] | None = None) -> None:
    """`alignment pretrain --config configs/pretrain/tiny.yaml [--key value ...]`."""
    metrics = run_cli("pretrain", lambda args: run(parse_config(Config, args)), argv)
    if is_main_process():
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})


if __name__ == "__main__":
    main()
