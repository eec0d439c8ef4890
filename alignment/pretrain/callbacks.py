"""What the Trainer does not log by itself: tokens/s and MFU, perplexity and samples at each evaluation, stops."""

from __future__ import annotations

import math
import time

import torch
from transformers import PreTrainedTokenizerBase, TrainerCallback

from alignment.core.generation import SamplingSettings, generate_texts
from alignment.core.launch import is_main_process, world_size, zero3_enabled
from alignment.core.logging import MetricsLogger
from alignment.pretrain.config import Config
from alignment.pretrain.metrics import model_flops_utilization


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
        if self.prompts and model is not None and is_main_process() and not zero3_enabled():
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


class StopCallback(TrainerCallback):
    """Stop at the time limit (checkpointing first) or, for resume tests, at `stop_after_step`."""

    def __init__(self, max_time_minutes: float | None, stop_after_step: int | None):
        self.deadline = None if max_time_minutes is None else time.monotonic() + 60 * max_time_minutes
        self.stop_after_step = stop_after_step
        self.timed_out = False

    def on_step_end(self, args, state, control, **kwargs):  # noqa: D102 (Trainer hook)
        if self.stop_after_step is not None and state.global_step >= self.stop_after_step:
            control.should_training_stop = True
        if self.deadline is not None and not self.timed_out and self._past_deadline(args.device):
            self.timed_out = True
            control.should_training_stop = True
            control.should_save = True
            if is_main_process():
                print(
                    f"[pretrain] max_time_minutes reached: stopping at step {state.global_step}", flush=True
                )
        return control

    def _past_deadline(self, device: torch.device) -> bool:
        """Whether any rank ran out of time: every rank must stop at the same step, or collectives hang."""
        late = torch.tensor([float(time.monotonic() > self.deadline)], device=device)
        if world_size() > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(late, op=torch.distributed.ReduceOp.MAX)
        return bool(late.item())
