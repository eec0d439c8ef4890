"""Stage 3: PPO with a KL penalty (InstructGPT; Ziegler et al. 2019), on accelerate and DeepSpeed.

    alignment ppo --config configs/ppo/tiny.yaml
    accelerate launch --config_file configs/accelerate/zero3.yaml scripts/ppo.py --config configs/ppo/tiny.yaml

Each iteration of the loop in `run` reads top-down:

    step 1. generate  samples_per_prompt responses per prompt (KV cache, stop at EOS)       rollout.py
    step 2. score     RM / judge scores; old log-probs, values, reference log-probs          rollout.py
    step 3. penalize  per-token rewards: -beta * KL(policy || reference), plus the score at the end
    step 4. advantage GAE on the critic's values, or each response against its siblings (rloo),
                      then whitening over every process's batch
    step 5. optimize  PPO epochs of clipped policy loss (+ value, KL, entropy, ptx terms)   update.py
    step 6. log       metrics, KL controller, guards, samples, checkpoints                  below

The math is in losses.py (pure, tested by hand); session.py builds the models and the launch.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from tqdm.auto import tqdm

from alignment.core.config import parse_config
from alignment.core.errors import run_cli
from alignment.core.launch import gathered_parameters
from alignment.core.logging import write_model_card
from alignment.core.runs import save_model_folder
from alignment.ppo import losses
from alignment.ppo.config import Config
from alignment.ppo.rollout import (
    Rollouts,
    compute_advantages,
    generate_rollouts,
    logprobs_from_sampling,
    penalize,
    score_rollouts,
)
from alignment.ppo.session import Session, setup
from alignment.ppo.update import all_finite, optimize
from alignment.ppo.value import HEAD_FILE


def run(config: Config) -> dict[str, float]:
    """Train the policy with PPO; return the final metrics."""
    session = setup(config)
    accelerator, held_out = session.accelerator, session.held_out
    final: dict[str, float] = {}
    if held_out and not session.resumed:
        final.update(suffixed(held_out.evaluate(session, 0, "start"), "start"))

    last_step, stopped_early = session.end_step, session.end_step < config.max_steps
    progress = tqdm(
        range(session.start_step, session.end_step),
        initial=session.start_step,
        total=config.max_steps,
        desc="ppo",
        disable=not (config.progress_bar and accelerator.is_main_process),
    )
    row: dict[str, float] = {}
    for step in progress:
        times = [time.perf_counter()]
        # step 1. generate
        rows = session.prompts.batch(
            step,
            config.batch_size // config.samples_per_prompt,
            accelerator.process_index,
            accelerator.num_processes,
        )
        rows = [row for row in rows for _ in range(config.samples_per_prompt)]
        rollouts = generate_rollouts(session, rows, with_logprobs=logprobs_from_sampling(session))
        times.append(time.perf_counter())
        # step 2. score
        score_rollouts(session, rollouts)
        if not all_finite(
            accelerator, rollouts.scores, rollouts.logprobs, rollouts.ref_logprobs, rollouts.values
        ):
            session.halt(
                f"non-finite scores, log-probs or values at step {step + 1} "
                f"(raw scores {rollouts.raw_scores[:4].tolist()}...)",
                step,
            )
        times.append(time.perf_counter())
        # step 3. KL-penalize
        penalize(rollouts, session.kl_controller.value, config.kl_estimator)
        # step 4. advantages
        compute_advantages(session, rollouts)
        # step 5. PPO epochs
        train_stats = optimize(session, rollouts, step)
        times.append(time.perf_counter())
        # step 6. log, adapt the KL coefficient, guard, checkpoint
        row = step_metrics(session, rollouts, train_stats, times)
        session.logger.log(step + 1, row)
        shown = {"reward": "reward/mean", "score": "score/mean", "kl": "kl", "vf": "value_loss"}
        progress.set_postfix({name: f"{row[key]:.3f}" for name, key in shown.items() if key in row})
        if step == session.start_step or (config.sample_steps and (step + 1) % config.sample_steps == 0):
            log_samples(session, step + 1, rollouts)
        if control_kl(session, step + 1, row["kl"]):
            last_step, stopped_early = step + 1, True
            break
        if held_out.due(session, step + 1):
            held_out.evaluate(session, step + 1, "during")
            if held_out.patience_spent(session):
                session.log(
                    f"no better held-out gold score in {config.select_patience} evaluations: stopping"
                )
                last_step, stopped_early = step + 1, True
                break
        if config.save_steps and (step + 1) % config.save_steps == 0 and step + 1 < config.max_steps:
            session.save(step + 1)
    progress.close()

    final.update({k: v for k, v in row.items() if not k.startswith("time/")})
    if held_out:
        end_scores = held_out.latest if held_out.latest_step == last_step else None
        final.update(suffixed(end_scores or held_out.evaluate(session, last_step, "end"), "end"))
    if last_step > session.start_step:  # after the last evaluation: the checkpoint holds its best policy too
        session.save(last_step, stopped_early=stopped_early)
    final["steps"] = last_step
    if held_out.selecting:
        final["selected_step"] = held_out.restore_best(session)
        final["eval/gold_selected"] = held_out.best_gold
        session.log(f"model/ holds the policy of step {final['selected_step']} (best held-out gold score)")
        session.logger.log(last_step, {"eval/selected_step": final["selected_step"]})
    if config.save_model:
        save_final_models(session, final)
    session.logger.close()
    return final


# ---------------------------------------------------------------------------------------------
# Step 6: what each step logs, and the KL guard


def step_metrics(
    session: Session, rollouts: Rollouts, train_stats: dict, times: list[float]
) -> dict[str, float]:
    """One row of metrics.jsonl: experience and training statistics averaged over processes, plus timing."""
    accelerator = session.accelerator
    critic = session.config.value_model != "none"
    stats = rollout_stats(rollouts, session.kl_controller.value, critic)
    row = mean_across(accelerator, {**stats, **train_stats})
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


def rollout_stats(rollouts: Rollouts, kl_coef: float, critic: bool = True) -> dict[str, float]:
    """Per-step statistics of the experience itself (this process; averaged across processes later).

    Without a critic (`value_model: none`) there are no values to report.
    """
    mask = rollouts.response_mask.float()
    k1 = (losses.kl_k1(rollouts.logprobs, rollouts.ref_logprobs) * mask).sum(dim=1)
    k3 = (losses.kl_k3(rollouts.logprobs, rollouts.ref_logprobs) * mask).sum(dim=1)
    total_reward = rollouts.rewards.sum(dim=1)
    stats = {
        "reward/mean": total_reward.mean().item(),
        "reward/std": total_reward.std().item() if len(rollouts) > 1 else 0.0,
        "score/mean": rollouts.scores.mean().item(),
        "score/std": rollouts.scores.std().item() if len(rollouts) > 1 else 0.0,
        "score/raw_mean": rollouts.raw_scores.mean().item(),
        "kl": rollouts.kl.sum(dim=1).mean().item(),
        "kl/k1": k1.mean().item(),
        "kl/k3": k3.mean().item(),
        "kl/coef": kl_coef,
        "response/length": mask.sum(dim=1).mean().item(),
        "response/eos_rate": rollouts.ended_with_eos.float().mean().item(),
    }
    if critic:
        stats["value/mean"] = losses.masked_mean(rollouts.values, mask).item()
        stats["explained_variance"] = losses.explained_variance(
            rollouts.values, rollouts.returns, mask
        ).item()
    return stats


def mean_across(accelerator, stats: dict[str, float]) -> dict[str, float]:
    """Average each number over processes (one collective for the whole dict)."""
    keys = sorted(stats)
    values = torch.tensor([float(stats[k]) for k in keys], device=accelerator.device, dtype=torch.float64)
    values = accelerator.reduce(values, "mean") if accelerator.num_processes > 1 else values
    return dict(zip(keys, values.tolist()))


def log_samples(session: Session, step: int, rollouts: Rollouts) -> None:
    """A few prompt -> response (score) lines into samples.jsonl and TensorBoard."""
    lines = [
        f"{p!r} -> {r!r} (score {s:.3f})"
        for p, r, s in zip(rollouts.prompts[:4], rollouts.response_texts[:4], rollouts.scores[:4].tolist())
    ]
    session.logger.log_text(step, "samples", "\n".join(lines))


def control_kl(session: Session, step: int, kl: float) -> bool:
    """Adapt beta toward the target KL and enforce the KL ceiling (stop, or double beta).

    Returns True when the run has spent its KL budget: the mean KL of the last `kl_budget_window` steps
    reached `kl_budget`, so the loop ends here and this step's policy is the one saved.
    """
    config = session.config
    session.kl_controller.observe(kl, config.batch_size)
    recent = session.kl_controller.mean_recent_kl()
    if config.kl_budget is not None and recent is not None and recent >= config.kl_budget:
        session.log(
            f"KL budget spent at step {step}: mean KL of the last {config.kl_budget_window} steps "
            f"{recent:.2f} >= {config.kl_budget}; stopping"
        )
        return True
    if config.kl_ceiling is None or kl <= config.kl_ceiling:
        return False
    if config.kl_ceiling_action == "stop":
        session.halt(f"KL {kl:.3f} above kl_ceiling {config.kl_ceiling} at step {step}", step)
    session.kl_controller.value *= 2.0
    session.log(
        f"KL {kl:.3f} above kl_ceiling {config.kl_ceiling}: beta doubled to {session.kl_controller.value:.4g}"
    )
    return False


def suffixed(scores: dict[str, float], when: str) -> dict[str, float]:
    """Held-out scores named for when they were taken (`eval/gold_start`, `eval/gold_end`)."""
    return {f"{key}_{when}": value for key, value in scores.items()}


# ---------------------------------------------------------------------------------------------
# The final models


def save_final_models(session: Session, metrics: dict[str, Any]) -> None:
    """Policy (merged if LoRA) with tokenizer and model card to `model/`; the critic (if any) to `value_model/`.

    Both folders are written atomically. Every process takes part (ZeRO-3 gathers the full weights).
    """
    config, accelerator = session.config, session.accelerator
    unwrapped = accelerator.unwrap_model(session.model)
    with gathered_parameters(unwrapped, accelerator):
        policy = unwrapped.policy
        if config.peft == "lora" and accelerator.is_main_process:
            policy = policy.merge_and_unload()  # the run is over: merging in place is fine
        save_model_folder(
            session.run_dir / "model",
            lambda folder: _save_module(policy, folder, accelerator.is_main_process),
            tokenizer=session.tokenizer,
            card=lambda folder: write_model_card(
                folder,
                "ppo",
                config.to_dict(),
                metrics,
                notes=f"PPO from `{config.model}`; reward: `{config.reward_model or config.reward_fn}`.",
            ),
            is_main=accelerator.is_main_process,
        )
        if unwrapped.has_value_model:
            if unwrapped.critic is not None:
                backbone, head, note = unwrapped.critic.backbone, unwrapped.critic.head, None
            else:
                backbone, head = None, unwrapped.value_head
                note = {"README.md": "Value head on the policy's last hidden state (see ../model).\n"}
            save_model_folder(
                session.run_dir / "value_model",
                lambda folder: _save_critic(backbone, head, folder, accelerator.is_main_process),
                extra_files=note,
                is_main=accelerator.is_main_process,
            )
    accelerator.wait_for_everyone()


def _save_module(model: torch.nn.Module, folder, is_main: bool) -> None:
    """`save_pretrained` with a detached CPU copy of the (gathered) weights, on the main process."""
    if is_main:
        state = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
        model.save_pretrained(folder, state_dict=state)


def _save_critic(backbone, head: torch.nn.Module, folder, is_main: bool) -> None:
    """The critic's backbone (if separate) and its head in `value_head.safetensors`."""
    if not is_main:
        return
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if backbone is not None:
        _save_module(backbone, folder, is_main)
    save_file(
        {k: v.detach().clone().contiguous().cpu() for k, v in head.state_dict().items()},
        str(folder / HEAD_FILE),
    )


def main(argv: list[str] | None = None) -> None:
    """`alignment ppo --config configs/ppo/tiny.yaml [--key value ...]`."""
    run_cli("ppo", lambda args: run(parse_config(Config, args)), argv)
