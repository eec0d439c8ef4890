"""Everything a PPO run holds between steps, and how it is built: the four roles, the launch, the data, resume.

Four roles: the policy (trained, from the SFT model), the value model (trained; a separate critic or a head
on the policy, see value.py), the frozen reference (the SFT model, or with LoRA the policy with its adapter
switched off) and the frozen reward model or judge. They are built on CPU before the Accelerator exists, so
ZeRO-3's `zero.Init` does not shard weights while heads are copied and adapters attached; DeepSpeed shards
them in `prepare`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignment.core.errors import ConfigError, TrainingHalted
from alignment.core.judges import load_judge
from alignment.core.launch import (
    accelerator_kwargs,
    deepspeed_zero_stage,
    fill_deepspeed_batch_sizes,
    forward_module,
    prepare_cpu_distributed,
    prepare_frozen_model,
    resolve_precision,
    seed_everything,
    set_gradient_clipping,
    world_size,
)
from alignment.core.logging import MetricsLogger
from alignment.core.models import check_length, load_causal_lm, load_tokenizer
from alignment.core.paths import resolve_path
from alignment.core.runs import resume_checkpoint, start_run
from alignment.core.trainable import build_peft_config
from alignment.ppo.checkpoint import load_checkpoint, save_checkpoint
from alignment.ppo.config import Config
from alignment.ppo.data import PromptSource, PtxSource
from alignment.ppo.heldout import HeldOut
from alignment.ppo.rewards import AdaptiveKLController, FixedKLController, Scorer, ScoreShaping
from alignment.ppo.sampler import Sampler, build_sampler
from alignment.ppo.value import PolicyAndValue, critic_from_causal_lm, critic_from_reward_model, fresh_head

# Keys that may change between a run and its resumption without mixing two runs.
RESUMABLE = {
    "max_steps",
    "sample_steps",
    "kl_ceiling",
    "kl_ceiling_action",
    "kl_budget",
    "eval_data",
    "max_eval_samples",
}


@dataclass
class Roles:
    """The models of a PPO run, unprepared: `model` trains, the others are frozen."""

    model: PolicyAndValue  # policy + value model, one trainable module
    reference: PreTrainedModel | None  # None with LoRA: the policy with its adapter disabled
    reward_model: PreTrainedModel | None
    reward_tokenizer: PreTrainedTokenizerBase | None
    judge: Callable[[str], float] | None
    shaping: ScoreShaping


@dataclass
class BatchSizes:
    """Per-process sizes: rollouts per step, rollouts per mini-batch (one optimizer step), per micro-batch."""

    rollouts: int
    mini_batch: int
    micro_batch: int

    @property
    def micro_batches_per_epoch(self) -> int:
        """Micro-batches in one PPO epoch over a step's rollouts."""
        return self.rollouts // self.micro_batch


@dataclass
class Session:
    """Everything a PPO run holds between steps (built by `setup`, read by the loop and the step functions)."""

    config: Config
    accelerator: Any
    model: Any  # prepared PolicyAndValue (DDP / DeepSpeed engine / bare module)
    optimizer: Any
    reference: Any  # frozen reference, or None with LoRA (the adapter is disabled instead)
    scorer: Scorer
    shaping: ScoreShaping
    tokenizer: PreTrainedTokenizerBase
    prompts: PromptSource
    ptx: PtxSource | None
    sampler: Sampler
    kl_controller: FixedKLController
    logger: MetricsLogger
    run_dir: Path
    sizes: BatchSizes
    start_step: int
    end_step: int  # max_steps, or the step a finished run stopped early at (select_patience, kl_budget)
    resumed: bool
    held_out: HeldOut | None = None  # set right after construction (it reads the session)

    def log(self, message: str) -> None:
        """A line on the main process's stdout."""
        if self.accelerator.is_main_process:
            print(f"[ppo] {message}", flush=True)

    def save(self, step: int, keep: int | None = None, stopped_early: bool = False) -> Path:
        """An atomic checkpoint after `step` steps (all processes call it); `stopped_early` ends the run there."""
        state = {"kl_controller": self.kl_controller.state_dict(), "stopped_early": stopped_early}
        keep = self.config.save_total_limit if keep is None else keep
        extra = self.held_out.write if self.held_out is not None else None
        return save_checkpoint(self.accelerator, self.run_dir, step, state, keep, extra)

    def halt(self, message: str, step: int) -> None:
        """Stop the run with a checkpoint (kept whatever `save_total_limit` says) and a clear message."""
        path = self.save(step, keep=0)
        self.logger.close()
        raise TrainingHalted(f"{message}; stopped, checkpoint saved to {path}")


def setup(config: Config) -> Session:
    """Build the four roles, prepare them for this launch, load the data, and resume if asked."""
    prepare_cpu_distributed()
    seed_everything(config.seed)
    config.precision = resolve_precision(config.precision)
    checkpoint = resume_checkpoint(config, RESUMABLE)  # before start_run rewrites config.yaml
    run_dir = start_run(config)
    tokenizer = load_tokenizer(resolve_path(config.model), padding_side="left")
    roles = build_roles(config, tokenizer)
    sizes = batch_sizes(config, world_size())
    accelerator = build_accelerator(config, sizes)
    value_lr = config.value_learning_rate or config.learning_rate
    groups = roles.model.parameter_groups(config.learning_rate, value_lr)
    optimizer = torch.optim.Adam(groups, eps=1e-5, foreach=True)  # one kernel per op across all tensors
    model, optimizer = accelerator.prepare(roles.model, optimizer)
    model.eval()  # dropout off: the first PPO epoch must see ratio 1 exactly (gradients still flow)
    reference = prepare_frozen_model(roles.reference, accelerator) if roles.reference is not None else None
    reward_model = roles.reward_model
    if reward_model is not None:
        reward_model = forward_module(prepare_frozen_model(reward_model, accelerator))
    same_vocab = (
        roles.reward_tokenizer is not None and roles.reward_tokenizer.get_vocab() == tokenizer.get_vocab()
    )
    scorer = Scorer(roles.judge, reward_model, roles.reward_tokenizer, config.reward_batch_size, same_vocab)
    # Same initial weights everywhere (seeded above); from here on each process samples differently.
    torch.manual_seed(config.seed + 1000 * accelerator.process_index)
    ptx = (
        PtxSource(config.ptx_data, tokenizer, config.ptx_max_length, config.seed) if config.ptx_coef else None
    )
    if config.adaptive_kl:
        kl_controller = AdaptiveKLController(
            config.kl_coef, config.target_kl, config.kl_horizon, config.kl_budget_window
        )
    else:
        kl_controller = FixedKLController(config.kl_coef, config.kl_budget_window)

    start_step, end_step = 0, config.max_steps
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)  # weights, optimizer, RNG of every process
        start_step = state["step"]
        end_step = start_step if state.get("stopped_early") else end_step
        kl_controller.load_state_dict(state["kl_controller"])
    session = Session(
        config=config,
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        reference=reference,
        scorer=scorer,
        shaping=roles.shaping,
        tokenizer=tokenizer,
        prompts=PromptSource(
            config.train_data, tokenizer, config.use_chat_template, config.seed, config.prompt_template
        ),
        ptx=ptx,
        sampler=build_sampler(
            config.generation_backend, resolve_path(config.model), config.vllm_gpu_memory_utilization
        ),
        kl_controller=kl_controller,
        logger=MetricsLogger(run_dir, enabled=accelerator.is_main_process),
        run_dir=run_dir,
        sizes=sizes,
        start_step=start_step,
        end_step=end_step,
        resumed=checkpoint is not None,
    )
    session.held_out = HeldOut(session, checkpoint)
    session.log(
        f"{accelerator.num_processes} process(es), ZeRO stage {deepspeed_zero_stage(accelerator)}; per process: "
        f"{sizes.rollouts} rollouts, mini-batch {sizes.mini_batch}, micro-batch {sizes.micro_batch}; "
        f"{'resuming from ' + str(checkpoint) if checkpoint else 'starting'} at step {start_step}/{config.max_steps}"
    )
    return session


def build_roles(config: Config, tokenizer: PreTrainedTokenizerBase) -> Roles:
    """Policy + value model (one trainable module), reference, scorer and score shaping, on CPU, unprepared."""
    policy = load_causal_lm(resolve_path(config.model), tokenizer)
    check_length(
        config.max_prompt_length + config.max_new_tokens, "max_prompt_length + max_new_tokens", policy
    )
    if config.ptx_coef:
        check_length(config.ptx_max_length, "ptx_max_length", policy)
    reference = None
    if config.peft == "lora":
        from peft import get_peft_model

        lora = build_peft_config(
            "lora", config.lora_r, config.lora_alpha, config.lora_dropout, config.target_modules, model=policy
        )
        policy = get_peft_model(policy, lora)
        if config.reference_model is not None:
            reference = load_causal_lm(resolve_path(config.reference_model), tokenizer)
    else:
        reference = load_causal_lm(resolve_path(config.reference_model or config.model), tokenizer)

    reward_model = reward_tokenizer = None
    shaping = ScoreShaping(missing_eos_penalty=config.missing_eos_penalty, clip=config.score_clip)
    if config.reward_model is not None:
        from reward.model import load_reward_model, load_reward_stats

        reward_model, reward_tokenizer = load_reward_model(resolve_path(config.reward_model))
        if config.normalize_reward:
            stats = load_reward_stats(resolve_path(config.reward_model))
            shaping.mean, shaping.std = float(stats["mean"]), max(float(stats["std"]), 1e-6)
    judge = load_judge(config.reward_fn, key="reward_fn") if config.reward_fn else None

    if config.value_model == "none":
        model = PolicyAndValue(policy)
    elif config.value_model == "policy_head":
        hidden = policy.config.get_text_config().hidden_size
        model = PolicyAndValue(policy, value_head=fresh_head(hidden))
    else:
        critic_path = config.value_model_init
        same_vocab = reward_tokenizer is not None and reward_tokenizer.get_vocab() == tokenizer.get_vocab()
        if critic_path is None:
            # The critic must read the policy's tokens, so the RM backbone only serves with the same vocabulary.
            critic_path = config.reward_model if same_vocab else config.model
        if critic_path == config.reward_model:
            critic = critic_from_reward_model(
                resolve_path(critic_path), config.value_head_init == "reward_head", shaping.mean, shaping.std
            )
        else:
            critic = critic_from_causal_lm(resolve_path(critic_path))
        model = PolicyAndValue(policy, critic=critic)
    return Roles(model, reference, reward_model, reward_tokenizer, judge, shaping)


def build_accelerator(config: Config, sizes: BatchSizes):
    """An Accelerator with this run's accumulation; DeepSpeed's batch sizes and clipping filled in."""
    from accelerate import Accelerator

    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps, **accelerator_kwargs()
    )
    # No dataloader goes through prepare(), so DeepSpeed cannot infer its "auto" batch sizes itself.
    fill_deepspeed_batch_sizes(accelerator, sizes.micro_batch, config.gradient_accumulation_steps)
    set_gradient_clipping(accelerator, config.max_grad_norm)
    return accelerator


def batch_sizes(config: Config, num_processes: int) -> BatchSizes:
    """The per-process sizes for this launch; a size that does not divide evenly is a `ConfigError`."""
    for key in ("batch_size", "mini_batch_size"):
        if getattr(config, key) % num_processes:
            raise ConfigError(
                f"{key}={getattr(config, key)} is not divisible by the {num_processes} processes"
            )
    local_batch = config.batch_size // num_processes
    if local_batch % config.samples_per_prompt:  # a prompt's responses are sampled on one process
        raise ConfigError(
            f"batch_size per process ({local_batch}) is not divisible by samples_per_prompt "
            f"({config.samples_per_prompt})"
        )
    local_mini = config.mini_batch_size // num_processes
    if local_mini % config.gradient_accumulation_steps:
        raise ConfigError(
            f"mini_batch_size per process ({local_mini}) is not divisible by gradient_accumulation_steps "
            f"({config.gradient_accumulation_steps})"
        )
    return BatchSizes(local_batch, local_mini, local_mini // config.gradient_accumulation_steps)
