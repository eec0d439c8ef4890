"""Stage 3: PPO with a KL penalty (InstructGPT; Ziegler et al. 2019), on accelerate and DeepSpeed.

    accelerate launch --config_file configs/accelerate/zero3.yaml scripts/ppo.py --config configs/ppo/tiny.yaml

Four roles: the policy (trained, from the SFT model), the value model (trained; a separate critic or a head
on the policy, see value.py), the frozen reference (the SFT model, or with LoRA the policy with its adapter
switched off) and the frozen reward model or judge. Each iteration of `train` reads top-down:

    step 1. generate  responses to a batch of prompts (KV cache, left padding, stop at EOS)
    step 2. score     RM / judge score per response; old log-probs, values, reference log-probs per token
    step 3. penalize  per-token rewards: -beta * KL(policy || reference), plus the score at the last token
    step 4. advantage GAE, then whitening
    step 5. optimize  several PPO epochs of clipped policy + clipped value loss (+ entropy, + ptx) on mini-batches
    step 6. log       metrics, KL controller, guards, samples, checkpoints

The math is in losses.py (pure, tested by hand); this file only wires it together.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from alignment.core.config import parse_config
from alignment.core.generation import SamplingSettings, generate
from alignment.core.judges import load_judge
from alignment.core.launch import (
    accelerator_kwargs,
    deepspeed_zero_stage,
    fill_deepspeed_batch_sizes,
    gathered_parameters,
    prepare_cpu_distributed,
    prepare_frozen_model,
    seed_everything,
    start_run,
    unwrapped_for_generation,
    world_size,
)
from alignment.core.logging import MetricsLogger, read_metrics, write_model_card
from alignment.core.models import load_causal_lm, load_tokenizer
from alignment.core.paths import resolve_path
from alignment.ppo import losses
from alignment.ppo.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from alignment.ppo.config import Config
from alignment.ppo.rewards import AdaptiveKLController, FixedKLController, Scorer, ScoreShaping
from alignment.ppo.rollout import (
    PromptSource,
    PtxSource,
    Rollouts,
    concat_sequences,
    policy_logprobs_and_values,
    reference_logprobs,
    response_slice,
    scaled_logits,
)
from alignment.ppo.value import PolicyAndValue, critic_from_causal_lm, critic_from_reward_model, fresh_head


class TrainingHalted(RuntimeError):
    """A guard stopped the run (non-finite numbers, or KL above the ceiling); a checkpoint was saved first."""


# ---------------------------------------------------------------------------------------------
# Building the four roles


def build_models(config: Config, tokenizer) -> dict[str, Any]:
    """Policy+value (one trainable module), reference, scorer and score shaping, all on CPU and unprepared.

    Built before the Accelerator exists, so ZeRO-3's `zero.Init` does not shard weights while heads are
    copied and adapters attached; DeepSpeed shards them in `prepare`.
    """
    policy = load_causal_lm(resolve_path(config.policy_model), tokenizer)
    reference = None
    if config.use_lora:
        from peft import LoraConfig, get_peft_model

        targets = config.lora_target_modules
        lora = LoraConfig(
            task_type="CAUSAL_LM",
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules="all-linear" if targets == ["all-linear"] else targets,
        )
        policy = get_peft_model(policy, lora)
        if config.reference_model is not None:
            reference = load_causal_lm(resolve_path(config.reference_model), tokenizer)
        # else: the reference is the policy with its adapter disabled (no second copy held)
    else:
        reference = load_causal_lm(resolve_path(config.reference_model or config.policy_model), tokenizer)

    reward_model = reward_tokenizer = None
    shaping = ScoreShaping(missing_eos_penalty=config.missing_eos_penalty, clip=config.score_clip)
    if config.reward_model is not None:
        from reward.model import load_reward_model, load_reward_stats

        reward_model, reward_tokenizer = load_reward_model(resolve_path(config.reward_model))
        if config.normalize_reward:
            stats = load_reward_stats(resolve_path(config.reward_model))
            shaping.mean, shaping.std = float(stats["mean"]), max(float(stats["std"]), 1e-6)
    judge = load_judge(config.reward_fn, key="reward_fn") if config.reward_fn else None

    if config.value_model == "policy_head":
        hidden = (
            policy.config.get_text_config().hidden_size if hasattr(policy.config, "get_text_config") else None
        )
        model = PolicyAndValue(policy, value_head=fresh_head(hidden or policy.config.n_embd))
    else:
        critic_path = config.value_model_init
        same_vocab = reward_tokenizer is not None and reward_tokenizer.get_vocab() == tokenizer.get_vocab()
        if critic_path is None:
            # The critic must read the policy's tokens, so the RM backbone only serves with the same vocabulary.
            critic_path = config.reward_model if same_vocab else config.policy_model
        if critic_path == config.reward_model:
            critic = critic_from_reward_model(
                resolve_path(critic_path), config.value_head_init == "reward_head", shaping.mean, shaping.std
            )
        else:
            critic = critic_from_causal_lm(resolve_path(critic_path))
        model = PolicyAndValue(policy, critic=critic)
    return {
        "model": model,
        "reference": reference,
        "reward_model": reward_model,
        "reward_tokenizer": reward_tokenizer,
        "judge": judge,
        "shaping": shaping,
    }


def build_accelerator(config: Config, micro_batch_size: int):
    """An Accelerator with this run's accumulation; DeepSpeed's batch sizes and clipping filled in."""
    from accelerate import Accelerator

    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps, **accelerator_kwargs()
    )
    # No dataloader goes through prepare(), so DeepSpeed cannot infer its "auto" batch sizes itself.
    fill_deepspeed_batch_sizes(accelerator, micro_batch_size, config.gradient_accumulation_steps)
    if accelerator.state.deepspeed_plugin is not None:
        accelerator.state.deepspeed_plugin.deepspeed_config["gradient_clipping"] = config.max_grad_norm
    return accelerator


def local_sizes(config: Config, num_processes: int) -> tuple[int, int, int]:
    """Per-process rollouts per step, per mini-batch, and per micro-batch."""
    for key in ("batch_size", "mini_batch_size"):
        if getattr(config, key) % num_processes:
            raise ValueError(
                f"{key}={getattr(config, key)} is not divisible by the {num_processes} processes"
            )
    local_batch = config.batch_size // num_processes
    local_mini = config.mini_batch_size // num_processes
    if local_mini % config.gradient_accumulation_steps:
        raise ValueError(
            f"mini_batch_size per process ({local_mini}) is not divisible by gradient_accumulation_steps "
            f"({config.gradient_accumulation_steps})"
        )
    return local_batch, local_mini, local_mini // config.gradient_accumulation_steps


# ---------------------------------------------------------------------------------------------
# Helpers across processes


def all_finite(accelerator, *tensors: torch.Tensor) -> bool:
    """True when every tensor on every process is finite (a collective, so all ranks agree)."""
    bad = sum(int(not torch.isfinite(t).all()) for t in tensors)
    flag = torch.tensor([float(bad)], device=accelerator.device)
    return accelerator.reduce(flag, "sum").item() == 0


def global_masked_whiten(
    accelerator, values: torch.Tensor, mask: torch.Tensor, shift_mean: bool
) -> torch.Tensor:
    """`losses.whiten` with the mean and unbiased variance over all processes' masked entries."""
    mask = mask.float()
    sums = torch.stack([(values * mask).sum(), (values**2 * mask).sum(), mask.sum()]).to(accelerator.device)
    total, total_sq, count = accelerator.reduce(sums, "sum").tolist()
    mean = total / max(count, 1)
    var = (total_sq / max(count, 1) - mean**2) * count / max(count - 1, 1)
    whitened = losses.whiten(values, torch.tensor(mean), torch.tensor(max(var, 0.0)), shift_mean)
    return whitened * mask


def mean_across(accelerator, stats: dict[str, float]) -> dict[str, float]:
    """Average each number over processes (one collective for the whole dict)."""
    keys = sorted(stats)
    values = torch.tensor([float(stats[k]) for k in keys], device=accelerator.device, dtype=torch.float64)
    values = accelerator.reduce(values, "mean") if accelerator.num_processes > 1 else values
    return dict(zip(keys, values.tolist()))


def forward_module(model: torch.nn.Module) -> torch.nn.Module:
    """The callable module of a frozen model (a DeepSpeed inference engine's `.module`, else itself)."""
    return getattr(model, "module", model) if type(model).__name__ == "DeepSpeedEngine" else model


# ---------------------------------------------------------------------------------------------
# The steps


def generate_rollouts(
    model, accelerator, tokenizer, prompts: list[str], source: PromptSource, config: Config
):
    """Step 1: sample one response per prompt with the current policy."""
    settings = SamplingSettings(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
        min_new_tokens=config.min_new_tokens,
    )
    with unwrapped_for_generation(model, accelerator) as unwrapped:
        batch = generate(
            unwrapped.policy,
            tokenizer,
            [source.format(p) for p in prompts],
            settings,
            max_prompt_length=config.max_prompt_length,
        )
    return Rollouts(
        prompts=prompts,
        response_texts=batch.response_texts,
        query_ids=batch.query_ids,
        query_mask=batch.query_mask,
        response_ids=batch.response_ids,
        response_mask=batch.response_mask,
        ended_with_eos=batch.ended_with_eos,
    )


def score_rollouts(
    rollouts: Rollouts,
    model,
    reference,
    accelerator,
    scorer: Scorer,
    shaping: ScoreShaping,
    config: Config,
    chunk_size: int,
) -> None:
    """Step 2: sequence scores, and per-token old log-probs, values and reference log-probs (in place)."""
    rollouts.logprobs, rollouts.values = policy_logprobs_and_values(
        model, rollouts, config.temperature, chunk_size
    )
    if reference is None:  # LoRA: the reference is the policy without its adapter
        policy = accelerator.unwrap_model(model).policy
        with policy.disable_adapter():
            rollouts.ref_logprobs = reference_logprobs(policy, rollouts, config.temperature, chunk_size)
    else:
        rollouts.ref_logprobs = reference_logprobs(
            forward_module(reference), rollouts, config.temperature, chunk_size
        )
    # The RM has its own tokenizer: it reads prompt + response as text, re-encoded its way.
    texts = [prompt + response for prompt, response in zip(rollouts.prompts, rollouts.response_texts)]
    rollouts.raw_scores = scorer(texts).to(rollouts.logprobs.device)
    scores = shaping(rollouts.raw_scores, rollouts.ended_with_eos.to(rollouts.logprobs.device))
    if config.whiten_rewards:
        ones = torch.ones_like(scores)
        scores = global_masked_whiten(accelerator, scores, ones, shift_mean=False)
    rollouts.scores = scores


def penalize(rollouts: Rollouts, kl_coef: float, estimator: str) -> None:
    """Step 3: per-token KL estimate and KL-penalized rewards (in place)."""
    mask = rollouts.response_mask.float()
    rollouts.kl = losses.kl_per_token(rollouts.logprobs, rollouts.ref_logprobs, estimator) * mask
    rollouts.rewards = losses.penalized_rewards(rollouts.scores, rollouts.kl, mask, kl_coef)


def compute_advantages(rollouts: Rollouts, accelerator, config: Config) -> None:
    """Step 4: GAE advantages and returns, advantages whitened over the whole batch (in place)."""
    mask = rollouts.response_mask.float()
    advantages, returns = losses.gae_advantages(
        rollouts.rewards, rollouts.values, mask, config.gamma, config.lam
    )
    if config.whiten_advantages:
        advantages = global_masked_whiten(accelerator, advantages, mask, shift_mean=True)
    rollouts.advantages, rollouts.returns = advantages, returns


def pad_right(
    ids: torch.Tensor, mask: torch.Tensor, width: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad [batch, len] ids and mask to `width` columns (causal models ignore what comes after)."""
    extra = width - ids.shape[1]
    if extra <= 0:
        return ids, mask
    return (torch.nn.functional.pad(ids, (0, extra), value=pad_id), torch.nn.functional.pad(mask, (0, extra)))


def ppo_loss(model, micro: dict[str, torch.Tensor], config: Config, ptx: tuple | None, pad_id: int):
    """One micro-batch's total loss and its statistics (the PPO objective plus optional PPO-ptx)."""
    query_len, response_len = micro["query_ids"].shape[1], micro["response_ids"].shape[1]
    input_ids, attention_mask, _ = concat_sequences(
        micro["query_ids"], micro["query_mask"], micro["response_ids"], micro["response_mask"]
    )
    n_rollouts = input_ids.shape[0]
    if ptx is not None:  # one forward for both batches, so DDP/DeepSpeed see a single graph per backward
        ptx_ids, ptx_mask = ptx
        width = max(input_ids.shape[1], ptx_ids.shape[1])
        input_ids, attention_mask = pad_right(input_ids, attention_mask, width, pad_id)
        ptx_ids, ptx_mask = pad_right(ptx_ids, ptx_mask, width, pad_id)
        input_ids, attention_mask = torch.cat([input_ids, ptx_ids]), torch.cat([attention_mask, ptx_mask])
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    logits, values = model(input_ids, attention_mask, position_ids)

    mask = micro["response_mask"].float()
    response_logits = scaled_logits(
        response_slice(logits[:n_rollouts], query_len, response_len), config.temperature
    )
    new_logprobs = losses.logprobs_from_logits(response_logits, micro["response_ids"])
    new_values = response_slice(values[:n_rollouts], query_len, response_len).float()
    pg_loss, pg_stats = losses.clipped_policy_loss(
        new_logprobs, micro["logprobs"], micro["advantages"], mask, config.cliprange
    )
    vf_loss, vf_stats = losses.clipped_value_loss(
        new_values, micro["values"], micro["returns"], mask, config.cliprange_value
    )
    entropy = losses.masked_mean(losses.entropy_from_logits(response_logits), mask)
    loss = pg_loss + config.vf_coef * vf_loss - config.entropy_coef * entropy
    stats = {
        "loss": loss.detach(),
        "policy_loss": pg_loss.detach(),
        "value_loss": vf_loss.detach(),
        "entropy": entropy.detach(),
        **pg_stats,
        **vf_stats,
    }
    if ptx is not None:
        ptx_loss = losses.causal_lm_loss(logits[n_rollouts:], ptx_ids, ptx_mask)
        loss = loss + config.ptx_coef * ptx_loss
        stats["ptx_loss"] = ptx_loss.detach()
        stats["loss"] = loss.detach()
    return loss, stats


def optimize(
    model,
    optimizer,
    accelerator,
    rollouts: Rollouts,
    config: Config,
    step: int,
    sizes: tuple,
    ptx_source: PtxSource | None,
    pad_id: int,
    halt,
) -> dict[str, float]:
    """Step 5: `ppo_epochs` passes over this step's rollouts in shuffled mini-batches; mean statistics."""
    local_batch, local_mini, micro_size = sizes
    data = rollouts.tensors()
    # Mini-batch order comes from its own generator, seeded by step: independent of sampling randomness.
    order_rng = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    totals: dict[str, float] = {}
    n_micro = 0
    for epoch in range(config.ppo_epochs):
        order = torch.randperm(local_batch, generator=order_rng)
        for start in range(0, local_batch, micro_size):
            rows = order[start : start + micro_size]
            micro = {k: v[rows] for k, v in data.items()}
            ptx = None
            if ptx_source is not None:
                position = (
                    (step * config.ppo_epochs + epoch) * local_batch + start
                ) * accelerator.num_processes
                ptx = ptx_source.batch(
                    position + accelerator.process_index * config.ptx_batch_size, config.ptx_batch_size
                )
                ptx = tuple(t.to(accelerator.device) for t in ptx)
            with accelerator.accumulate(model):
                loss, stats = ppo_loss(model, micro, config, ptx, pad_id)
                if not all_finite(accelerator, loss):
                    halt(
                        f"non-finite PPO loss at step {step + 1}, epoch {epoch + 1} "
                        f"(policy {stats['policy_loss'].item()}, value {stats['value_loss'].item()})"
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            for key, value in stats.items():
                totals[key] = totals.get(key, 0.0) + float(value)
            n_micro += 1
    return {key: value / n_micro for key, value in totals.items()}


def rollout_stats(rollouts: Rollouts, kl_coef: float) -> dict[str, float]:
    """Per-step statistics of the experience itself (this process; averaged across processes later)."""
    mask = rollouts.response_mask.float()
    sequence_kl = rollouts.kl.sum(dim=1)
    k1 = (losses.kl_k1(rollouts.logprobs, rollouts.ref_logprobs) * mask).sum(dim=1)
    k3 = (losses.kl_k3(rollouts.logprobs, rollouts.ref_logprobs) * mask).sum(dim=1)
    total_reward = rollouts.rewards.sum(dim=1)
    return {
        "reward/mean": total_reward.mean().item(),
        "reward/std": total_reward.std().item() if len(rollouts) > 1 else 0.0,
        "score/mean": rollouts.scores.mean().item(),
        "score/std": rollouts.scores.std().item() if len(rollouts) > 1 else 0.0,
        "score/raw_mean": rollouts.raw_scores.mean().item(),
        "kl": sequence_kl.mean().item(),
        "kl/k1": k1.mean().item(),
        "kl/k3": k3.mean().item(),
        "kl/coef": kl_coef,
        "value/mean": losses.masked_mean(rollouts.values, mask).item(),
        "explained_variance": losses.explained_variance(rollouts.values, rollouts.returns, mask).item(),
        "response/length": mask.sum(dim=1).mean().item(),
        "response/eos_rate": rollouts.ended_with_eos.float().mean().item(),
    }


def evaluate_scores(
    model,
    accelerator,
    tokenizer,
    prompts: list[str],
    source: PromptSource,
    scorer: Scorer,
    shaping: ScoreShaping,
    config: Config,
) -> dict[str, float]:
    """Mean raw and shaped score of responses to held-out prompts, with a fixed seed (training RNG untouched)."""
    per_rank = len(prompts) // accelerator.num_processes
    mine = prompts[accelerator.process_index * per_rank : (accelerator.process_index + 1) * per_rank]
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed + 7 + accelerator.process_index)
        rollouts = generate_rollouts(model, accelerator, tokenizer, mine, source, config)
    texts = [p + r for p, r in zip(rollouts.prompts, rollouts.response_texts)]
    raw = scorer(texts).to(accelerator.device)
    shaped = shaping(raw, rollouts.ended_with_eos.to(accelerator.device))
    raw, shaped = accelerator.gather(raw), accelerator.gather(shaped)
    return {"eval/score_raw": raw.mean().item(), "eval/score": shaped.mean().item()}


# ---------------------------------------------------------------------------------------------
# Saving


def save_final_models(model, accelerator, tokenizer, config: Config, run_dir: Path, metrics: dict) -> None:
    """Policy (merged if LoRA) with tokenizer and model card to `model/`; the critic to `value_model/`."""
    unwrapped = accelerator.unwrap_model(model)
    with gathered_parameters(unwrapped, accelerator):
        if accelerator.is_main_process:
            policy = unwrapped.policy
            if config.use_lora:
                policy = policy.merge_and_unload()  # the run is over: merging in place is fine
            model_dir = run_dir / "model"
            state = {k: v.detach().clone().cpu() for k, v in policy.state_dict().items()}
            policy.save_pretrained(model_dir, state_dict=state)
            tokenizer.save_pretrained(model_dir)
            write_model_card(
                model_dir,
                "ppo",
                config.to_dict(),
                metrics,
                notes=f"PPO from `{config.policy_model}`; reward: `{config.reward_model or config.reward_fn}`.",
            )
            value_dir = run_dir / "value_model"
            value_dir.mkdir(parents=True, exist_ok=True)
            if unwrapped.critic is not None:
                critic = unwrapped.critic
                backbone_state = {
                    k: v.detach().clone().cpu() for k, v in critic.backbone.state_dict().items()
                }
                critic.backbone.save_pretrained(value_dir, state_dict=backbone_state)
                head = critic.head
            else:
                head = unwrapped.value_head
                (value_dir / "README.md").write_text(
                    "Value head on the policy's last hidden state (see ../model).\n"
                )
            from safetensors.torch import save_file

            from alignment.ppo.value import HEAD_FILE

            save_file(
                {k: v.detach().clone().contiguous().cpu() for k, v in head.state_dict().items()},
                str(value_dir / HEAD_FILE),
            )
    accelerator.wait_for_everyone()


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class Session:
    """Everything a PPO run holds between steps (built by `setup`, read by the loop)."""

    config: Config
    accelerator: Any
    model: Any  # prepared PolicyAndValue (DDP / DeepSpeed engine / bare module)
    optimizer: Any
    reference: Any  # frozen reference, or None with LoRA (the adapter is disabled instead)
    scorer: Scorer
    shaping: ScoreShaping
    tokenizer: Any
    prompts: PromptSource
    ptx: PtxSource | None
    kl_controller: FixedKLController
    logger: MetricsLogger
    run_dir: Path
    sizes: tuple[int, int, int]  # per process: rollouts per step, per mini-batch, per micro-batch
    start_step: int
    resumed: bool

    def log(self, message: str) -> None:
        """A line on the main process's stdout."""
        if self.accelerator.is_main_process:
            print(f"[ppo] {message}", flush=True)

    def save(self, step: int, keep: int | None = None) -> Path:
        """An atomic checkpoint after `step` steps (all processes call it)."""
        state = {"step": step, "kl_controller": self.kl_controller.state_dict()}
        keep = self.config.keep_checkpoints if keep is None else keep
        return save_checkpoint(self.accelerator, self.run_dir, step, state, keep)

    def halt(self, message: str, step: int) -> None:
        """Stop the run with a checkpoint (kept whatever `keep_checkpoints` says) and a clear message."""
        path = self.save(step, keep=0)
        self.logger.close()
        raise TrainingHalted(f"{message}; stopped, checkpoint saved to {path}")


def setup(config: Config) -> Session:
    """Build the four roles, prepare them for this launch, load the data, and resume if asked."""
    prepare_cpu_distributed()
    seed_everything(config.seed)
    run_dir = start_run(config)
    tokenizer = load_tokenizer(resolve_path(config.policy_model), padding_side="left")
    built = build_models(config, tokenizer)
    sizes = local_sizes(config, world_size())
    accelerator = build_accelerator(config, micro_batch_size=sizes[2])
    value_lr = config.value_learning_rate or config.learning_rate
    model = built["model"]
    optimizer = torch.optim.Adam(model.parameter_groups(config.learning_rate, value_lr), eps=1e-5)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.eval()  # dropout off: the first PPO epoch must see ratio 1 exactly (gradients still flow)
    reference = built["reference"]
    if reference is not None:
        reference = prepare_frozen_model(reference, accelerator)
    reward_model = built["reward_model"]
    if reward_model is not None:
        reward_model = forward_module(prepare_frozen_model(reward_model, accelerator))
    scorer = Scorer(built["judge"], reward_model, built["reward_tokenizer"], config.reward_batch_size)
    # Same initial weights everywhere (seeded above); from here on each process samples differently.
    torch.manual_seed(config.seed + 1000 * accelerator.process_index)
    ptx = (
        PtxSource(config.ptx_dataset, tokenizer, config.ptx_max_length, config.seed)
        if config.ptx_coef > 0
        else None
    )
    if config.adaptive_kl:
        kl_controller = AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
    else:
        kl_controller = FixedKLController(config.kl_coef)

    start_step = 0
    checkpoint = latest_checkpoint(run_dir) if config.resume else None
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)  # weights, optimizer, RNG of every process
        start_step = state["step"]
        kl_controller.load_state_dict(state["kl_controller"])
        if accelerator.is_main_process:  # drop rows a killed run logged after its last checkpoint
            rows = [r for r in read_metrics(run_dir) if r["step"] <= start_step]
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    session = Session(
        config=config,
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        reference=reference,
        scorer=scorer,
        shaping=built["shaping"],
        tokenizer=tokenizer,
        prompts=PromptSource(config.prompts, tokenizer, config.use_chat_template, config.seed),
        ptx=ptx,
        kl_controller=kl_controller,
        logger=MetricsLogger(run_dir, enabled=accelerator.is_main_process),
        run_dir=run_dir,
        sizes=sizes,
        start_step=start_step,
        resumed=checkpoint is not None,
    )
    session.log(
        f"{accelerator.num_processes} process(es), ZeRO stage {deepspeed_zero_stage(accelerator)}; per process: "
        f"{sizes[0]} rollouts, mini-batch {sizes[1]}, micro-batch {sizes[2]}; "
        f"{'resuming from ' + str(checkpoint) if checkpoint else 'starting'} at step {start_step}/{config.total_steps}"
    )
    return session


def held_out_prompts(session: Session) -> list[str]:
    """The evaluation prompts (a multiple of the process count), or [] when none are configured."""
    config = session.config
    if not config.eval_prompts:
        return []
    prompts = PromptSource(config.eval_prompts, session.tokenizer, False, config.seed).prompts
    world = session.accelerator.num_processes
    return prompts[: min(config.eval_num_prompts, len(prompts)) // world * world]


def evaluate(session: Session, prompts: list[str], step: int, when: str) -> dict[str, float]:
    """Score held-out prompts, log the result at `step`, and return it keyed `<metric>_<when>`."""
    scores = evaluate_scores(
        session.model,
        session.accelerator,
        session.tokenizer,
        prompts,
        session.prompts,
        session.scorer,
        session.shaping,
        session.config,
    )
    session.logger.log(step, scores)
    session.log(f"held-out score {when}: {scores['eval/score']:.4f} (raw {scores['eval/score_raw']:.4f})")
    return {f"{k}_{when}": v for k, v in scores.items()}


def step_metrics(
    session: Session, rollouts: Rollouts, train_stats: dict, times: list[float]
) -> dict[str, float]:
    """One row of metrics.jsonl: experience and training statistics averaged over processes, plus timing."""
    accelerator = session.accelerator
    row = mean_across(accelerator, {**rollout_stats(rollouts, session.kl_controller.value), **train_stats})
    tokens = accelerator.reduce(rollouts.response_mask.sum().to(accelerator.device).float(), "sum").item()
    elapsed = times[-1] - times[0]
    row.update(
        {
            "time/generation": times[1] - times[0],
            "time/scoring": times[2] - times[1],
            "time/training": times[3] - times[2],
            "samples_per_s": session.config.batch_size / elapsed,
            "tokens_per_s": tokens / elapsed,
        }
    )
    return row


def log_samples(session: Session, step: int, rollouts: Rollouts) -> None:
    """A few prompt -> response (score) lines into samples.jsonl and TensorBoard."""
    lines = [
        f"{p!r} -> {r!r} (score {s:.3f})"
        for p, r, s in zip(rollouts.prompts[:4], rollouts.response_texts[:4], rollouts.scores[:4].tolist())
    ]
    session.logger.log_text(step, "samples", "\n".join(lines))


def control_kl(session: Session, step: int, kl: float) -> None:
    """Adapt beta toward the target KL, and enforce the KL ceiling (stop, or double beta)."""
    config = session.config
    session.kl_controller.update(kl, config.batch_size)
    if config.kl_ceiling is None or kl <= config.kl_ceiling:
        return
    if config.kl_ceiling_action == "stop":
        session.halt(f"KL {kl:.3f} above kl_ceiling {config.kl_ceiling} at step {step}", step)
    session.kl_controller.value *= 2.0
    session.log(
        f"KL {kl:.3f} above kl_ceiling {config.kl_ceiling}: beta doubled to {session.kl_controller.value:.4g}"
    )


def run(config: Config) -> dict[str, float]:
    """Train the policy with PPO; return the final metrics."""
    session = setup(config)
    s, accelerator, model = session, session.accelerator, session.model
    eval_prompts = held_out_prompts(s)
    final: dict[str, float] = {}
    if eval_prompts and not s.resumed:
        final.update(evaluate(s, eval_prompts, 0, "start"))

    progress = tqdm(
        range(s.start_step, config.total_steps),
        initial=s.start_step,
        total=config.total_steps,
        desc="ppo",
        disable=not (config.progress_bar and accelerator.is_main_process),
    )
    row: dict[str, float] = {}
    for step in progress:
        times = [time.perf_counter()]
        # step 1. generate
        prompts = s.prompts.batch(
            step, config.batch_size, accelerator.process_index, accelerator.num_processes
        )
        rollouts = generate_rollouts(model, accelerator, s.tokenizer, prompts, s.prompts, config)
        times.append(time.perf_counter())
        # step 2. score
        score_rollouts(rollouts, model, s.reference, accelerator, s.scorer, s.shaping, config, s.sizes[2])
        if not all_finite(
            accelerator, rollouts.scores, rollouts.logprobs, rollouts.ref_logprobs, rollouts.values
        ):
            s.halt(
                f"non-finite scores, log-probs or values at step {step + 1} "
                f"(raw scores {rollouts.raw_scores[:4].tolist()}...)",
                step,
            )
        times.append(time.perf_counter())
        # step 3. KL-penalize
        penalize(rollouts, s.kl_controller.value, config.kl_estimator)
        # step 4. advantages
        compute_advantages(rollouts, accelerator, config)
        # step 5. PPO epochs
        train_stats = optimize(
            model,
            s.optimizer,
            accelerator,
            rollouts,
            config,
            step,
            s.sizes,
            s.ptx,
            s.tokenizer.pad_token_id,
            lambda message, at=step: s.halt(message, at),
        )
        times.append(time.perf_counter())
        # step 6. log, adapt the KL coefficient, guard, checkpoint
        row = step_metrics(s, rollouts, train_stats, times)
        s.logger.log(step + 1, row)
        progress.set_postfix(
            reward=f"{row['reward/mean']:.3f}",
            score=f"{row['score/mean']:.3f}",
            kl=f"{row['kl']:.3f}",
            vf=f"{row['value_loss']:.3f}",
        )
        if step == s.start_step or (config.sample_every and (step + 1) % config.sample_every == 0):
            log_samples(s, step + 1, rollouts)
        control_kl(s, step + 1, row["kl"])
        if config.save_every and (step + 1) % config.save_every == 0 and step + 1 < config.total_steps:
            s.save(step + 1)
    progress.close()

    if config.total_steps > s.start_step:
        s.save(config.total_steps)
    final.update({k: v for k, v in row.items() if not k.startswith("time/")})
    if eval_prompts:
        final.update(evaluate(s, eval_prompts, config.total_steps, "end"))
    if config.save_model:
        save_final_models(model, accelerator, s.tokenizer, config, s.run_dir, final)
    s.logger.close()
    return final


def main(argv: list[str] | None = None) -> None:
    """`alignment ppo --config configs/ppo/tiny.yaml [--key value ...]`."""
    run(parse_config(Config, argv))
