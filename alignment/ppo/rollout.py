"""Steps 1-4 of a PPO iteration: generate rollouts, score them, KL-penalize the rewards, compute advantages.

Sequences are laid out as `[query (left-padded) | response (right-padded)]` (see `alignment.core.tokens`),
so every per-token tensor here is `[batch, response_len]` and lines up with `response_ids`/`response_mask`.

What the log-probs are: log pi_T(y_t | x, y_<t), the policy's softmax at the sampling temperature T over the
whole vocabulary. With `top_k`/`top_p` off (the default) that is exactly the distribution the responses
were sampled from. With truncation on, responses come from the renormalised top-k/top-p distribution while
the PPO ratio, the KL penalty and the entropy still use pi_T: the ratio is then the usual surrogate of
the untruncated policy evaluated on samples from a nearby distribution, not an exact importance weight
(tests/unit/test_tokens.py checks the untruncated case against the logits `generate` sampled from).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from alignment.core.generation import SamplingSettings
from alignment.core.launch import forward_module, unwrapped_for_generation
from alignment.core.tokens import (
    concat_query_response,
    response_logprobs,
    response_slice,
    scaled_logits,
    token_logprobs,
)
from alignment.ppo import losses

if TYPE_CHECKING:
    from alignment.ppo.session import Session


@dataclass
class Rollouts:
    """One step's experience on this process. Per-token tensors are [batch, response_len]."""

    prompts: list[str]  # raw prompt text (what the reward model reads before the response)
    rows: list[dict]  # the prompts' data rows (a verifier judge reads their answers)
    response_texts: list[str]
    query_ids: torch.Tensor  # [batch, query_len], left-padded
    query_mask: torch.Tensor
    response_ids: torch.Tensor  # [batch, response_len], right-padded after the first EOS
    response_mask: torch.Tensor
    ended_with_eos: torch.Tensor  # [batch] bool
    logprobs: torch.Tensor = field(default=None)  # old policy log pi_T(y_t | x, y_<t)
    ref_logprobs: torch.Tensor = field(default=None)
    values: torch.Tensor = field(default=None)  # old values V(x, y_<t)
    raw_scores: torch.Tensor = field(default=None)  # [batch], from the RM or judge
    scores: torch.Tensor = field(default=None)  # [batch], after normalization / penalties / clipping
    kl: torch.Tensor = field(default=None)  # per-token KL estimate (masked)
    rewards: torch.Tensor = field(default=None)  # per-token: -beta * KL, plus the score at the last token
    advantages: torch.Tensor = field(default=None)
    returns: torch.Tensor = field(default=None)

    def __len__(self) -> int:
        return self.response_ids.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The fields PPO epochs slice into mini-batches."""
        names = (
            "query_ids",
            "query_mask",
            "response_ids",
            "response_mask",
            "logprobs",
            "ref_logprobs",
            "values",
            "advantages",
            "returns",
        )
        return {name: getattr(self, name) for name in names}


def autocast(session: Session):
    """bfloat16 autocast for sampling and forward passes when `precision: bf16` (a no-op context otherwise)."""
    device_type = session.accelerator.device.type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=session.config.precision == "bf16")


def sampling_settings(session: Session) -> SamplingSettings:
    """How PPO samples responses, from the config."""
    config = session.config
    return SamplingSettings(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
        min_new_tokens=config.min_new_tokens,
    )


def logprobs_from_sampling(session: Session) -> bool:
    """Whether old log-probs come from the sampling pass: with a separate critic (which then runs alone) or none.

    With `policy_head` the values need the policy's own hidden states, so a policy forward runs anyway and
    the log-probs come from it.
    """
    config = session.config
    return config.logprobs_from_sampling and config.value_model in ("separate", "none")


def generate_rollouts(session: Session, rows: list[dict], with_logprobs: bool = False) -> Rollouts:
    """Step 1: sample one response per prompt row with the current policy (all processes together).

    `with_logprobs` keeps the log-prob of each sampled token from the sampling pass (see `generate`).
    """
    prompts = [row["prompt"] for row in rows]
    with unwrapped_for_generation(session.model, session.accelerator) as unwrapped, autocast(session):
        session.sampler.sync(unwrapped.policy)
        batch = session.sampler.sample(
            unwrapped.policy,
            session.tokenizer,
            [session.prompts.format(p) for p in prompts],
            sampling_settings(session),
            session.config.max_prompt_length,
            with_logprobs,
        )
    return Rollouts(
        prompts=prompts,
        rows=rows,
        response_texts=batch.response_texts,
        query_ids=batch.query_ids,
        query_mask=batch.query_mask,
        response_ids=batch.response_ids,
        response_mask=batch.response_mask,
        ended_with_eos=batch.ended_with_eos,
        logprobs=batch.logprobs,
    )


def score_rollouts(session: Session, rollouts: Rollouts) -> None:
    """Step 2: sequence scores, and per-token old log-probs, values and reference log-probs (in place).

    No-grad passes run `forward_batch_size` rollouts at a time (all of them by default: on CPU one large
    batch is faster than several small ones). Old log-probs already taken from the sampling pass leave only
    the critic to run.
    """
    with autocast(session):
        _score_with_models(session, rollouts)
    rollouts.logprobs, rollouts.values = rollouts.logprobs.float(), rollouts.values.float()
    rollouts.ref_logprobs, rollouts.raw_scores = rollouts.ref_logprobs.float(), rollouts.raw_scores.float()
    device = rollouts.logprobs.device
    scores = session.shaping(rollouts.raw_scores, rollouts.ended_with_eos.to(device))
    if session.config.whiten_rewards:
        scores = losses.masked_whiten(scores, torch.ones_like(scores), False, all_reduce(session))
    rollouts.scores = scores


def _score_with_models(session: Session, rollouts: Rollouts) -> None:
    """The forward passes of step 2: old log-probs (unless sampled), values, reference log-probs, raw scores."""
    config = session.config
    chunk = config.forward_batch_size or len(rollouts)
    if rollouts.logprobs is None:
        rollouts.logprobs, rollouts.values = policy_logprobs_and_values(
            session.model, rollouts, config.temperature, chunk
        )
    else:
        critic = session.accelerator.unwrap_model(session.model).critic
        if critic is None:  # value_model: none
            rollouts.values = torch.zeros_like(rollouts.logprobs)
        else:
            rollouts.values = critic_values(critic, rollouts, chunk)
    if session.reference is None:  # LoRA: the reference is the policy without its adapter
        policy = session.accelerator.unwrap_model(session.model).policy
        with policy.disable_adapter():
            rollouts.ref_logprobs = reference_logprobs(policy, rollouts, config.temperature, chunk)
    else:
        reference = forward_module(session.reference)
        rollouts.ref_logprobs = reference_logprobs(reference, rollouts, config.temperature, chunk)
    # The RM has its own tokenizer: it reads prompt + response as text, re-encoded its way.
    device = rollouts.logprobs.device
    token_ids = (rollouts.query_ids, rollouts.query_mask, rollouts.response_ids, rollouts.response_mask)
    raw = session.scorer(rollouts.prompts, rollouts.response_texts, rollouts.rows, token_ids=token_ids)
    rollouts.raw_scores = raw.to(device)


def penalize(rollouts: Rollouts, kl_coef: float, estimator: str) -> None:
    """Step 3: per-token KL estimate and KL-penalized rewards (in place)."""
    mask = rollouts.response_mask.float()
    rollouts.kl = losses.kl_per_token(rollouts.logprobs, rollouts.ref_logprobs, estimator) * mask
    rollouts.rewards = losses.penalized_rewards(rollouts.scores, rollouts.kl, mask, kl_coef)


def compute_advantages(session: Session, rollouts: Rollouts) -> None:
    """Step 4: advantages and returns, advantages whitened over the whole batch of every process (in place).

    GAE needs the critic's values; `rloo` judges each response against the other responses to its prompt.
    The returns (GAE's) are the critic's targets: without a critic there are none to compute.
    """
    config = session.config
    mask = rollouts.response_mask.float()
    if config.advantage_estimator == "gae" or config.value_model != "none":
        advantages, returns = losses.gae_advantages(
            rollouts.rewards, rollouts.values, mask, config.gamma, config.lam
        )
    else:
        returns = torch.zeros_like(mask)
    if config.advantage_estimator == "rloo":
        advantages = losses.leave_one_out_advantages(rollouts.rewards, mask, config.samples_per_prompt)
    if config.whiten_advantages:
        advantages = losses.masked_whiten(advantages, mask, True, all_reduce(session))
    rollouts.advantages, rollouts.returns = advantages, returns


def all_reduce(session: Session):
    """A function summing a tensor over processes (None with one process: nothing to add)."""
    accelerator = session.accelerator
    if accelerator.num_processes == 1:
        return None
    return lambda tensor: accelerator.reduce(tensor.to(accelerator.device), "sum")


# ---------------------------------------------------------------------------------------------
# The forward passes over sampled sequences


def sequence_chunks(
    rollouts: Rollouts, chunk_size: int
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Rows of `rollouts` in chunks, each with its `[query | response]` input_ids, attention_mask, position_ids."""
    for start in range(0, len(rollouts), chunk_size):
        rows = slice(start, start + chunk_size)
        yield (
            rows,
            *concat_query_response(
                rollouts.query_ids[rows],
                rollouts.query_mask[rows],
                rollouts.response_ids[rows],
                rollouts.response_mask[rows],
            ),
        )


@torch.no_grad()
def policy_logprobs_and_values(
    model: torch.nn.Module, rollouts: Rollouts, temperature: float, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Old log-probs and values of the sampled responses from the (prepared) PolicyAndValue model."""
    logprobs, values = [], []
    query_len, response_len = rollouts.query_ids.shape[1], rollouts.response_ids.shape[1]
    for rows, input_ids, attention_mask, position_ids in sequence_chunks(rollouts, chunk_size):
        # The head only where it predicts response tokens: the last response_len + 1 positions, but the last.
        logits, all_values = model(input_ids, attention_mask, position_ids, logits_to_keep=response_len + 1)
        logits = scaled_logits(logits[:, :-1], temperature)
        logprobs.append(token_logprobs(logits, rollouts.response_ids[rows]))
        values.append(response_slice(all_values, query_len, response_len).float())
    return torch.cat(logprobs), torch.cat(values)


@torch.no_grad()
def critic_values(critic: torch.nn.Module, rollouts: Rollouts, chunk_size: int) -> torch.Tensor:
    """Old values of the sampled responses from the critic alone, [batch, response_len]."""
    values = []
    query_len, response_len = rollouts.query_ids.shape[1], rollouts.response_ids.shape[1]
    for _, input_ids, attention_mask, position_ids in sequence_chunks(rollouts, chunk_size):
        all_values = critic(input_ids, attention_mask, position_ids)
        values.append(response_slice(all_values, query_len, response_len).float())
    return torch.cat(values)


@torch.no_grad()
def reference_logprobs(
    reference: torch.nn.Module, rollouts: Rollouts, temperature: float, chunk_size: int
) -> torch.Tensor:
    """Log-probs of the sampled responses under a frozen causal LM (the reference policy), chunk by chunk."""
    logprobs = []
    for start in range(0, len(rollouts), chunk_size):
        rows = slice(start, start + chunk_size)
        logprobs.append(
            response_logprobs(
                reference,
                rollouts.query_ids[rows],
                rollouts.query_mask[rows],
                rollouts.response_ids[rows],
                rollouts.response_mask[rows],
                temperature,
            )
        )
    return torch.cat(logprobs)
