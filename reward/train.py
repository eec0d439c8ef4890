"""Stage 2: train a scalar reward model on pairwise preferences (Bradley-Terry), with TRL's RewardTrainer.

    alignment reward --config configs/reward/tiny.yaml
    accelerate launch --config_file configs/accelerate/zero3.yaml scripts/reward_modeling.py --config configs/reward/tiny.yaml

TRL's RewardTrainer brings the model/pad-token set-up, DeepSpeed/DDP and logging; we subclass it to weight
pairs (all pairs of one K-way ranking share weight 1/C(K,2)), to train a ranking's comparisons as one batch
element (its K texts scored once, the loss over all its pairs: InstructGPT sec. 3.5) and to report accuracy by
rating gap on held-out pairs. The data are pre-tokenized here, so the start-up checks see exactly what the
model will read.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import datasets
import torch
from transformers import EvalPrediction
from trl import RewardConfig, RewardTrainer

from alignment.core.config import ConfigError, parse_config
from alignment.core.errors import run_cli
from alignment.core.launch import (
    is_main_process,
    prepare_cpu_distributed,
    seed_everything,
    trainer_backend_kwargs,
)
from alignment.core.logging import MetricsCallback, MetricsLogger, write_model_card
from alignment.core.models import check_length
from alignment.core.runs import checkpoint_dir, resume_checkpoint, save_model_folder, start_run
from reward import data as rdata
from reward.config import Config
from reward.losses import bradley_terry_loss, center_rewards_penalty, pairwise_metrics
from reward.model import (
    STATS_FILE,
    build_reward_model,
    check_score_position,
    encode_texts,
    is_encoder,
    pad_batch,
)

# Keys that may change between a run and its resumption without mixing two runs.
RESUMABLE = {"eval_steps", "per_device_eval_batch_size", "gap_edges"}


# ---------------------------------------------------------------------------------------------
# Batching and the trainer


class ComparisonCollator:
    """Right-pads every text of a batch of rows into one tensor and points each pair at its two texts.

    A row holds distinct texts (`text_ids`) and pairs as indices into them; a batch scores each text once.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:  # noqa: D102
        sequences: list[list[int]] = []
        chosen: list[int] = []
        rejected: list[int] = []
        for row in rows:
            offset = len(sequences)
            sequences += row["text_ids"]
            chosen += [offset + i for i in row["chosen_index"]]
            rejected += [offset + i for i in row["rejected_index"]]
        batch = pad_batch(sequences, self.pad_token_id)
        batch.pop("position_ids")  # right padding: default positions are the real ones
        batch["chosen_index"] = torch.tensor(chosen, dtype=torch.long)
        batch["rejected_index"] = torch.tensor(rejected, dtype=torch.long)
        for key in ("margin", "weight", "gap"):
            batch[key] = torch.tensor([float(v) for r in rows for v in r[key]], dtype=torch.float32)
        return batch


def pair_rewards(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected), [pairs] each, for a `ComparisonCollator` batch: every text scored once."""
    model_inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    scores = model(**model_inputs, use_cache=False).logits.squeeze(-1)  # one per distinct text
    return scores[batch["chosen_index"]], scores[batch["rejected_index"]]


class WeightedRewardTrainer(RewardTrainer):
    """RewardTrainer with per-pair weights and a held-out evaluation that keeps each pair's rating gap."""

    def __init__(self, *args, use_margin: bool = False, **kwargs):
        self.use_margin = use_margin  # margins are always collated (zeros when absent); used only if asked
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = [
                "text_ids",
                "chosen_index",
                "rejected_index",
                "margin",
                "weight",
                "gap",
            ]

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        # Our rows arrive tokenized, truncated and checked (reward.data.tokenize_comparisons) in a layout of
        # our own (texts + pair indices); TRL's preparation (EOS, tokenizing, length filter) does not apply.
        return dataset

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        mode = "train" if self.model.training else "eval"
        chosen_rewards, rejected_rewards = pair_rewards(model, inputs)
        margin = inputs["margin"] if self.use_margin else None
        loss = bradley_terry_loss(chosen_rewards, rejected_rewards, margin, inputs["weight"])
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * center_rewards_penalty(
                chosen_rewards, rejected_rewards
            )
        with torch.no_grad():
            accuracy = self.accelerator.gather_for_metrics((chosen_rewards > rejected_rewards).float().mean())
            reward_gap = self.accelerator.gather_for_metrics((chosen_rewards - rejected_rewards).mean())
            self._metrics[mode]["accuracy"].append(accuracy.mean().item())
            self._metrics[mode]["reward_gap"].append(reward_gap.mean().item())
        return (loss, (chosen_rewards, rejected_rewards)) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):  # noqa: D102
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, (chosen_rewards, rejected_rewards) = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        return loss.detach(), torch.stack([chosen_rewards, rejected_rewards], dim=1), inputs["gap"]


def make_compute_metrics(gap_edges: list[float]):
    """compute_metrics for the Trainer: predictions [n, 2] = (r_chosen, r_rejected), labels [n] = rating gap."""

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        rewards = torch.as_tensor(prediction.predictions)
        gaps = torch.as_tensor(prediction.label_ids)
        metrics = pairwise_metrics(rewards[:, 0], rewards[:, 1], gaps, gap_edges)
        # RewardTrainer.log overwrites "accuracy" with its batch average; keep the exact one under its own name
        metrics["pairwise_accuracy"] = metrics.pop("accuracy")
        return metrics

    return compute_metrics


# ---------------------------------------------------------------------------------------------
# The stage


def load_pairs(config: Config) -> tuple[list[dict], list[dict], str]:
    """Train and held-out pairs from the configured source, and a one-line description of where they came from."""
    shard = rdata.parse_shard(config.train_shard) if config.train_shard else None
    if config.train_data is None:
        snippets = rdata.read_snippets(config.snippets_file, config.sources)
        if shard is not None:
            snippets = rdata.shard_snippets(snippets, shard)
        train = rdata.sentiment_pairs(
            snippets,
            "train",
            config.min_rating_gap,
            config.max_train_pairs,
            config.seed,
            config.snippet_group_size,
            config.max_rating_gap,
        )
        evaluation = rdata.sentiment_pairs(
            snippets, "heldout", config.eval_min_rating_gap, config.max_eval_pairs, config.seed
        )
        origin = (
            f"human-rated snippets {config.snippets_file} (sources {', '.join(config.sources)}; "
            f"rating gap {rdata.gap_range(config.min_rating_gap, config.max_rating_gap)}, "
            f"held-out >= {config.eval_min_rating_gap}; split by text"
            + (f"; groups of {config.snippet_group_size} texts" if config.snippet_group_size > 2 else "")
            + (f"; training texts of shard {config.train_shard})" if shard else ")")
        )
        return train, evaluation, origin
    pairs = rdata.load_preference_file(config.train_data, config.skip_bad_rows)
    if config.eval_data is not None:
        evaluation = rdata.load_preference_file(config.eval_data, config.skip_bad_rows)
        train = pairs
    else:
        train, evaluation = rdata.split_by_group(pairs, config.eval_fraction, config.seed)
    if shard is not None:
        train = rdata.shard_pairs(train, shard)
    if not train or not evaluation:
        raise ConfigError(
            f"train_data: {config.train_data} gave {len(train)} train and {len(evaluation)} eval pairs; "
            "need both (add rows or an eval_data file)"
        )
    origin = f"{config.train_data}" + (f" / {config.eval_data}" if config.eval_data else "")
    return train, evaluation, origin + (f" (training prompts of shard {config.train_shard})" if shard else "")


def run(config: Config) -> dict[str, Any]:
    """Train the reward model; return the held-out metrics."""
    # step 1. processes, seeds and the run folder
    prepare_cpu_distributed()
    seed_everything(config.seed)
    checkpoint = resume_checkpoint(config, RESUMABLE)  # before start_run rewrites config.yaml
    run_dir = start_run(config)
    logger = MetricsLogger(run_dir, tensorboard=False)

    # step 2. the model, and the start-up checks that catch a score read at the wrong position
    model, tokenizer = build_reward_model(config.model, config.tokenizer)
    check_length(config.max_length, "max_length", model, f"the backbone {config.model}")
    check_score_position(model, tokenizer)
    encoder = is_encoder(model.config)

    # step 3. comparisons -> pairs -> token ids, with the truncation report
    train_pairs, eval_pairs, origin = load_pairs(config)
    train_pairs = rdata.normalise_weights(train_pairs)

    def tokenize(texts: list[str], max_length: int | None) -> list[list[int]]:
        return encode_texts(tokenizer, texts, max_length, encoder)

    splits = {}
    for name, pairs in (("train", train_pairs), ("eval", eval_pairs)):
        # training rows: a group's texts scored once for all its pairs; held-out rows: one pair each
        rows, report = rdata.tokenize_comparisons(
            pairs, tokenize, config.max_length, config.margin_scale, name, grouped=name == "train"
        )
        if is_main_process():
            print(f"[reward] {report.summary()}")
        logger.log(
            0,
            {
                f"{name}/pairs": report.pairs,
                f"{name}/truncated_pairs": report.truncated,
                f"{name}/indistinguishable_pairs": report.indistinguishable,
            },
        )
        rdata.check_truncation(report, config.max_indistinguishable_fraction)
        splits[name] = datasets.Dataset.from_list(rows)

    # step 4. train (TRL RewardTrainer, our weighted loss), resuming from the last checkpoint if any
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    args = RewardConfig(
        output_dir=str(checkpoint_dir(run_dir)),
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a share of the steps
        lr_scheduler_type=config.lr_scheduler_type,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        logging_steps=config.logging_steps,
        eval_strategy="steps" if config.eval_steps else "no",
        eval_steps=config.eval_steps or None,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        max_length=None,  # already truncated (and checked) above; TRL would drop long pairs instead
        center_rewards_coefficient=config.center_rewards_coefficient,
        activation_checkpointing=False,
        report_to=["tensorboard"],
        seed=config.seed,
        data_seed=config.seed,
        dataset_num_proc=None,
        dataloader_pin_memory=False,  # no accelerator to pin for on CPU (and a warning per epoch)
        **trainer_backend_kwargs(config.precision),
    )
    trainer = WeightedRewardTrainer(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits["eval"],
        processing_class=tokenizer,
        data_collator=ComparisonCollator(tokenizer.pad_token_id),
        compute_metrics=make_compute_metrics(config.gap_edges),
        callbacks=[MetricsCallback(run_dir)],
        use_margin=config.margin_scale > 0,
    )
    if checkpoint is not None:
        print(f"[reward] resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    # step 5. held-out evaluation: pairwise accuracy, by rating gap, reward mean/std
    eval_metrics = {k.removeprefix("eval_"): v for k, v in trainer.evaluate().items()}

    # step 6. save the final model atomically, with the reward statistics PPO normalises scores by
    stats = {
        "mean": eval_metrics["reward_mean"],
        "std": eval_metrics["reward_std"],
        "eval_accuracy": eval_metrics["pairwise_accuracy"],
        # NaN (no rating gaps in file-based pairs) is not JSON: null instead
        "accuracy_gap_ge_1": _number_or_none(eval_metrics.get("accuracy_gap_ge_1")),
        "train_pairs": len(train_pairs),
        "eval_pairs": len(eval_pairs),
    }
    card_metrics = {
        k: v for k, v in eval_metrics.items() if not k.startswith(("runtime", "samples_", "steps_"))
    }
    notes = (
        f"Scalar reward model (`AutoModelForSequenceClassification`, num_labels=1) trained with the "
        f"Bradley-Terry loss on {origin}: {len(train_pairs)} train / {len(eval_pairs)} held-out pairs. "
        f"Load with `reward.model.load_reward_model`; `{STATS_FILE}` holds the reward mean/std on held-out "
        f"texts for PPO normalisation."
    )
    save_model_folder(
        run_dir / "model",
        lambda folder: trainer.save_model(str(folder)),  # every rank takes part (ZeRO-3 gathers the shards)
        tokenizer=tokenizer,
        card=lambda folder: write_model_card(folder, "reward", config.to_dict(), card_metrics, notes=notes),
        extra_files={STATS_FILE: json.dumps(stats, indent=2) + "\n"},
        is_main=trainer.is_world_process_zero(),
        barrier=trainer.accelerator.wait_for_everyone,
    )
    if trainer.is_world_process_zero():
        logger.log(trainer.state.global_step, {f"final/{k}": v for k, v in eval_metrics.items()})
        print(f"[reward] held-out: {json.dumps({k: round(v, 4) for k, v in eval_metrics.items()})}")
    logger.close()
    return eval_metrics


def _number_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def main(argv: list[str] | None = None) -> None:
    """`alignment reward [--config file.yaml] [--key value ...]`."""
    run_cli("reward", lambda args: run(parse_config(Config, args)), argv)


if __name__ == "__main__":
    main()
