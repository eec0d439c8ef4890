"""Step 5 of a PPO iteration: several epochs of clipped policy and value updates on the step's rollouts.

Each epoch shuffles the step's rollouts and walks them in mini-batches; a mini-batch is one optimizer step,
made of `gradient_accumulation_steps` micro-batches whose gradients add up before it. The loop below says
so in as many words: gradients are synchronised across processes, clipped and applied after the last
micro-batch of each mini-batch, never across an epoch boundary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from alignment.core.launch import accumulation_step
from alignment.core.tokens import (
    concat_query_response,
    position_ids_from_mask,
    response_slice,
    scaled_logits,
    token_logprobs,
)
from alignment.ppo import losses
from alignment.ppo.packing import gather_positions, pack
from alignment.ppo.rollout import Rollouts, autocast

if TYPE_CHECKING:
    from alignment.ppo.session import Session


def optimize(session: Session, rollouts: Rollouts, step: int) -> dict[str, float]:
    """Step 5: `ppo_epochs` passes over this step's rollouts in shuffled mini-batches; mean statistics."""
    config, sizes, accelerator = session.config, session.sizes, session.accelerator
    data = rollouts.tensors()
    # Mini-batch order comes from its own generator, seeded by step: independent of sampling randomness.
    order_rng = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    micro_batch = step * config.ppo_epochs * sizes.micro_batches_per_epoch  # counted over the run (PPO-ptx)
    totals: dict[str, float] = {}
    n_micro = 0
    for epoch in range(config.ppo_epochs):
        order = torch.randperm(sizes.rollouts, generator=order_rng)
        for mini_start in range(0, sizes.rollouts, sizes.mini_batch):
            mini_rows = order[mini_start : mini_start + sizes.mini_batch]
            micro_starts = range(0, sizes.mini_batch, sizes.micro_batch)
            for index, micro_start in enumerate(micro_starts):
                rows = mini_rows[micro_start : micro_start + sizes.micro_batch]
                micro = {key: value[rows] for key, value in data.items()}
                ptx = ptx_batch(session, micro_batch)
                micro_batch += 1
                with accumulation_step(accelerator, session.model, last=index == len(micro_starts) - 1):
                    loss, stats = ppo_loss(session, micro, ptx)
                    if not all_finite(accelerator, loss):
                        session.halt(
                            f"non-finite PPO loss at step {step + 1}, epoch {epoch + 1} "
                            f"(policy {stats['policy_loss'].item()}, value {stats['value_loss'].item()})",
                            step,
                        )
                    accelerator.backward(loss)
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + float(value)
                n_micro += 1
            apply_gradients(session)
    return {key: value / n_micro for key, value in totals.items()}


def apply_gradients(session: Session) -> None:
    """Clip (when `max_grad_norm` > 0), take the optimizer step, clear the gradients."""
    if session.config.max_grad_norm > 0:
        session.accelerator.clip_grad_norm_(session.model.parameters(), session.config.max_grad_norm)
    session.optimizer.step()
    session.optimizer.zero_grad()


def ptx_batch(session: Session, micro_batch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """PPO-ptx texts of this process for a micro-batch (None without PPO-ptx)."""
    if session.ptx is None:
        return None
    accelerator = session.accelerator
    ids, mask = session.ptx.batch(
        micro_batch, session.config.ptx_batch_size, accelerator.process_index, accelerator.num_processes
    )
    return ids.to(accelerator.device), mask.to(accelerator.device)


def pad_right(
    ids: torch.Tensor, mask: torch.Tensor, width: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad [batch, len] ids and mask to `width` columns (causal models ignore what comes after)."""
    extra = width - ids.shape[1]
    if extra <= 0:
        return ids, mask
    return (torch.nn.functional.pad(ids, (0, extra), value=pad_id), torch.nn.functional.pad(mask, (0, extra)))


def padded_forward(session: Session, micro: dict[str, torch.Tensor], ptx: tuple | None):
    """Response logits [n, R, V] and values [n, R], and the PPO-ptx LM loss, from one padded forward."""
    pad_id = session.tokenizer.pad_token_id
    query_len, response_len = micro["query_ids"].shape[1], micro["response_ids"].shape[1]
    input_ids, attention_mask, _ = concat_query_response(
        micro["query_ids"], micro["query_mask"], micro["response_ids"], micro["response_mask"]
    )
    n_rollouts = input_ids.shape[0]
    if ptx is not None:  # one forward for both batches, so DDP/DeepSpeed see a single graph per backward
        ptx_ids, ptx_mask = ptx
        width = max(input_ids.shape[1], ptx_ids.shape[1])
        input_ids, attention_mask = pad_right(input_ids, attention_mask, width, pad_id)
        ptx_ids, ptx_mask = pad_right(ptx_ids, ptx_mask, width, pad_id)
        input_ids, attention_mask = torch.cat([input_ids, ptx_ids]), torch.cat([attention_mask, ptx_mask])
    position_ids = position_ids_from_mask(attention_mask)
    # Without PPO-ptx only the positions that predict response tokens need the LM head.
    keep = 0 if ptx is not None else response_len + 1
    logits, values = session.model(input_ids, attention_mask, position_ids, logits_to_keep=keep)
    if keep:
        response_logits = logits[:n_rollouts, :-1]
    else:
        response_logits = response_slice(logits[:n_rollouts], query_len, response_len)
    response_values = response_slice(values[:n_rollouts], query_len, response_len)
    ptx_loss = losses.causal_lm_loss(logits[n_rollouts:], ptx_ids, ptx_mask) if ptx is not None else None
    return response_logits, response_values, ptx_loss


def packed_forward(session: Session, micro: dict[str, torch.Tensor], ptx: tuple | None):
    """What `padded_forward` returns, from a forward over the real tokens only (see packing.py)."""
    query_ids, query_mask = micro["query_ids"], micro["query_mask"]
    response_ids, response_mask = micro["response_ids"], micro["response_mask"]
    query_lengths, response_lengths = query_mask.sum(1).cpu(), response_mask.sum(1).cpu()
    query_len, response_len = query_ids.shape[1], response_ids.shape[1]
    sequences = [
        torch.cat([query_ids[i, query_len - int(q) :], response_ids[i, : int(r)]]).cpu()
        for i, (q, r) in enumerate(zip(query_lengths, response_lengths))
    ]
    n_rollouts = len(sequences)
    if ptx is not None:
        ptx_ids, ptx_mask = ptx
        ptx_lengths = ptx_mask.sum(1).cpu()
        sequences += [ptx_ids[j, : int(length)].cpu() for j, length in enumerate(ptx_lengths)]
    packed = pack(sequences, session.tokenizer.pad_token_id)
    device = query_ids.device
    logits, values = session.model(packed.input_ids.to(device), None, packed.position_ids.to(device))
    rollouts = list(range(n_rollouts))
    # Response token t of sequence i is predicted at its offset query_length - 1 + t.
    offsets = query_lengths - 1
    response_logits = gather_positions(logits, packed, rollouts, offsets, response_lengths, response_len)
    response_values = gather_positions(values, packed, rollouts, offsets, response_lengths, response_len)
    ptx_loss = None
    if ptx is not None:
        width = int(ptx_lengths.max()) - 1
        rows = list(range(n_rollouts, len(sequences)))
        starts = torch.zeros_like(ptx_lengths)
        predicted = gather_positions(logits, packed, rows, starts, ptx_lengths - 1, width)
        targets = ptx_ids[:, 1 : width + 1]
        target_mask = (torch.arange(width).unsqueeze(0) < (ptx_lengths - 1).unsqueeze(1)).float().to(device)
        ptx_loss = -losses.masked_mean(token_logprobs(predicted, targets), target_mask)
    return response_logits, response_values, ptx_loss


def ppo_loss(session: Session, micro: dict[str, torch.Tensor], ptx: tuple | None):
    """One micro-batch's total loss and its statistics (the PPO objective plus optional PPO-ptx)."""
    config = session.config
    forward = packed_forward if config.packing else padded_forward
    with autocast(session):  # bf16 forward when asked; everything below is fp32
        response_logits, response_values, ptx_loss = forward(session, micro, ptx)
    mask = micro["response_mask"].float()
    response_logits = scaled_logits(response_logits, config.temperature)
    new_logprobs = token_logprobs(response_logits, micro["response_ids"])
    pg_loss, pg_stats = losses.clipped_policy_loss(
        new_logprobs, micro["logprobs"], micro["advantages"], mask, config.cliprange
    )
    if config.entropy_coef:
        entropy = losses.masked_mean(losses.entropy_from_logits(response_logits), mask)
    else:  # only logged: outside the graph, it costs no softmax backward over the vocabulary
        with torch.no_grad():
            entropy = losses.masked_mean(losses.entropy_from_logits(response_logits), mask)
    loss, stats = pg_loss, {"policy_loss": pg_loss.detach(), **pg_stats}
    if config.value_model != "none":
        vf_loss, vf_stats = losses.clipped_value_loss(
            response_values.float(), micro["values"], micro["returns"], mask, config.cliprange_value
        )
        loss = loss + config.vf_coef * vf_loss
        stats.update(value_loss=vf_loss.detach(), **vf_stats)
    loss = loss - config.entropy_coef * entropy
    stats["entropy"] = entropy.detach()
    if config.kl_loss_coef:
        kl_loss = losses.kl_k2_loss(new_logprobs, micro["ref_logprobs"], mask)
        loss = loss + config.kl_loss_coef * kl_loss
        stats["kl_loss"] = kl_loss.detach()
    if ptx_loss is not None:
        loss = loss + config.ptx_coef * ptx_loss
        stats["ptx_loss"] = ptx_loss.detach()
    stats["loss"] = loss.detach()
    return loss, stats


def all_finite(accelerator, *tensors: torch.Tensor) -> bool:
    """True when every tensor on every process is finite (a collective, so all ranks agree)."""
    bad = sum(int(not torch.isfinite(t).all()) for t in tensors)
    flag = torch.tensor([float(bad)], device=accelerator.device)
    return accelerator.reduce(flag, "sum").item() == 0
