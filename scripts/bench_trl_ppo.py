"""The peer side of `make bench-ppo`: trl 1.12's experimental PPOTrainer on the benchmark's models.

Run by `alignment/bench_ppo.py` with the python of a throwaway virtualenv that holds trl==1.12.0 (TRL
removed PPO in 1.13), never with the project's .venv. Standalone on purpose: it imports nothing of ours.

    <peer-venv>/bin/python scripts/bench_trl_ppo.py --models DIR --updates N --out result.json [--no_gc]

Times each update (between the trainer's step-end callbacks) and splits it: generation (`batch_generation`),
scoring (the no-grad reference, value and reward forwards), garbage collection (`gc.collect`, twice per
update in this trainer; `--no_gc` replaces it with a no-op), training (the rest: PPO epochs, logging).
"""

import argparse
import contextlib
import gc
import json
import os
import time

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import datasets  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
)
from trl.experimental.ppo import PPOConfig, PPOTrainer  # noqa: E402
from trl.experimental.ppo import ppo_trainer as peer  # noqa: E402

SPENT = {"generation": 0.0, "scoring": 0.0, "gc": 0.0, "tokens": 0}


def timed(fn, bucket, only_without_grad=False):
    def wrapper(*args, **kwargs):
        if only_without_grad and torch.is_grad_enabled():
            return fn(*args, **kwargs)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[bucket] += time.perf_counter() - start

    return wrapper


class UpdateClock(TrainerCallback):
    """Wall time and the split at the end of every update."""

    def __init__(self):
        self.marks = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.marks.append((time.perf_counter(), dict(SPENT)))

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append((time.perf_counter(), dict(SPENT)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", required=True)
    parser.add_argument("--updates", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--mini_batches", type=int, default=2)
    parser.add_argument("--ppo_epochs", type=int, default=2)
    parser.add_argument("--new_tokens", type=int, default=24)
    parser.add_argument("--learning_rate", type=float, default=1e-5)
    parser.add_argument("--kl_coef", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--no_gc", action="store_true")
    args = parser.parse_args()

    original_generation = peer.batch_generation

    def generation(model, queries, *rest):
        query_responses, logits = original_generation(model, queries, *rest)
        responses = query_responses[:, queries.shape[1] :]
        ended = (responses == model.generation_config.eos_token_id).int().cumsum(1)
        SPENT["tokens"] += int(
            ((ended - (responses == model.generation_config.eos_token_id).int()) == 0).sum()
        )
        return query_responses, logits

    peer.batch_generation = timed(generation, "generation")
    peer.forward = timed(peer.forward, "scoring", only_without_grad=True)
    peer.get_reward = timed(peer.get_reward, "scoring", only_without_grad=True)
    peer.gc = type(
        "gc", (), {"collect": staticmethod(timed(lambda: 0 if args.no_gc else gc.collect(), "gc"))}
    )

    models = args.models
    tokenizer = AutoTokenizer.from_pretrained(f"{models}/policy", padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(f"{models}/policy", dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(f"{models}/policy", dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(
        f"{models}/reward", num_labels=1, dtype=torch.float32
    )
    value = AutoModelForSequenceClassification.from_pretrained(
        f"{models}/reward", num_labels=1, dtype=torch.float32
    )
    prompts = [json.loads(line)["prompt"] for line in open(f"{models}/prompts.jsonl")]
    dataset = datasets.Dataset.from_dict(
        {"input_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]}
    )
    config = PPOConfig(
        output_dir=os.path.join(os.path.dirname(args.out), "peer-run"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=args.mini_batches,
        num_ppo_epochs=args.ppo_epochs,
        response_length=args.new_tokens,
        total_episodes=args.batch_size * args.updates,
        local_rollout_forward_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        kl_coef=args.kl_coef,
        temperature=1.0,
        stop_token="eos",
        missing_eos_penalty=None,
        num_sample_generations=0,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        bf16=False,
        fp16=False,
        seed=args.seed,
        dataloader_drop_last=True,
    )
    clock = UpdateClock()
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=reference,
        reward_model=reward,
        value_model=value,
        train_dataset=dataset,
        callbacks=[clock],
    )
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        trainer.train()
    updates = []
    for (start, before), (end, after) in zip(clock.marks, clock.marks[1:]):
        split = {k: after[k] - before[k] for k in ("generation", "scoring", "gc")}
        split["training"] = (end - start) - sum(split.values())
        updates.append({"seconds": end - start, **split, "tokens": after["tokens"] - before["tokens"]})
    json.dump(
        {"updates": updates, "batch_size": args.batch_size, "gc_removed": args.no_gc}, open(args.out, "w")
    )


if __name__ == "__main__":
    main()
