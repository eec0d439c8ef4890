"""Rollouts: which prompts each step uses, and the forward passes that turn sampled text into PPO tensors.

Sequences are laid out as `[query (left-padded) | response (right-padded)]`. The logits at position
`query_len - 1 + t` predict response token `t`, so every per-token tensor here is `[batch, response_len]`
and lines up with `response_ids` and `response_mask` from `alignment.core.generation.generate`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from alignment.core.formats import load_dataset_as
from alignment.core.paths import resolve_path
from alignment.ppo.losses import logprobs_from_logits
from alignment.ppo.value import position_ids_from_mask


class PromptSource:
    """Prompts in a fixed, seeded order: a fresh permutation each pass, so the data position is just the step.

    Step `s` with global batch `B` takes positions `s*B ... s*B + B - 1` of the endless sequence of passes,
    and process `r` of `W` takes its contiguous slice: the same global batch for any number of processes,
    and exact resume from the step number alone.
    """

    def __init__(self, path: str, tokenizer: PreTrainedTokenizerBase, use_chat_template: bool, seed: int):
        dataset, _ = load_dataset_as(resolve_path(path), "prompts")
        self.prompts: list[str] = list(dataset["prompt"])
        self.tokenizer = tokenizer
        self.use_chat_template = use_chat_template
        self.seed = seed
        self._orders: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.prompts)

    def format(self, prompt: str) -> str:
        """What the policy sees: the prompt itself, or a user turn in the chat template."""
        if not self.use_chat_template:
            return prompt
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.prompts))
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._orders = {epoch: torch.randperm(len(self.prompts), generator=generator)}
        return int(self._orders[epoch][offset])

    def batch(self, step: int, global_batch_size: int, rank: int = 0, world_size: int = 1) -> list[str]:
        """Raw prompts for `step` on process `rank` of `world_size`."""
        local = global_batch_size // world_size
        start = step * global_batch_size + rank * local
        return [self.prompts[self._index(position)] for position in range(start, start + local)]


@dataclass
class Rollouts:
    """One step's experience on this process. Per-token tensors are [batch, response_len]."""

    prompts: list[str]  # raw prompt text (what the reward model reads before the response)
    response_texts: list[str]
    query_ids: torch.Tensor  # [batch, query_len], left-padded
    query_mask: torch.Tensor
    response_ids: torch.Tensor  # [batch, response_len], right-padded after the first EOS
    response_mask: torch.Tensor
    ended_with_eos: torch.Tensor  # [batch] bool
    logprobs: torch.Tensor = field(default=None)  # old policy log pi(y_t | x, y_<t)
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
            "values",
            "advantages",
            "returns",
        )
        return {name: getattr(self, name) for name in names}


def concat_sequences(
    query_ids: torch.Tensor, query_mask: torch.Tensor, response_ids: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, position_ids of `[query | response]`, each [batch, query_len + response_len]."""
    input_ids = torch.cat([query_ids, response_ids], dim=1)
    attention_mask = torch.cat([query_mask, response_mask], dim=1)
    return input_ids, attention_mask, position_ids_from_mask(attention_mask)


def sequence_chunks(
    rollouts: Rollouts, chunk_size: int
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Rows of `rollouts` in chunks, each with its `[query | response]` input_ids, attention_mask, position_ids."""
    for start in range(0, len(rollouts), chunk_size):
        rows = slice(start, start + chunk_size)
        yield (
            rows,
            *concat_sequences(
                rollouts.query_ids[rows],
                rollouts.query_mask[rows],
                rollouts.response_ids[rows],
                rollouts.response_mask[rows],
            ),
        )


def response_slice(per_position: torch.Tensor, query_len: int, response_len: int) -> torch.Tensor:
    """The positions whose outputs belong to response tokens: [batch, seq, ...] -> [batch, response_len, ...]."""
    return per_position[:, query_len - 1 : query_len - 1 + response_len]


def scaled_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits of the distribution responses were sampled from (greedy, temperature 0, counts as 1)."""
    return logits / temperature if temperature > 0 else logits


@torch.no_grad()
def policy_logprobs_and_values(
    model: torch.nn.Module, rollouts: Rollouts, temperature: float, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Old log-probs and values of the sampled responses from the (prepared) PolicyAndValue model."""
    logprobs, values = [], []
    query_len, response_len = rollouts.query_ids.shape[1], rollouts.response_ids.shape[1]
    for rows, input_ids, attention_mask, position_ids in sequence_chunks(rollouts, chunk_size):
        logits, all_values = model(input_ids, attention_mask, position_ids)
        logits = scaled_logits(response_slice(logits, query_len, response_len), temperature)
        logprobs.append(logprobs_from_logits(logits, rollouts.response_ids[rows]))
        values.append(response_slice(all_values, query_len, response_len).float())
    return torch.cat(logprobs), torch.cat(values)


@torch.no_grad()
def reference_logprobs(
    reference: torch.nn.Module, rollouts: Rollouts, temperature: float, chunk_size: int
) -> torch.Tensor:
    """Log-probs of the sampled responses under a frozen causal LM (the reference policy)."""
    logprobs = []
    query_len, response_len = rollouts.query_ids.shape[1], rollouts.response_ids.shape[1]
    for rows, input_ids, attention_mask, position_ids in sequence_chunks(rollouts, chunk_size):
        logits = reference(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).logits
        logits = scaled_logits(response_slice(logits, query_len, response_len), temperature)
        logprobs.append(logprobs_from_logits(logits, rollouts.response_ids[rows]))
    return torch.cat(logprobs)


class PtxSource:
    """Pretraining text for PPO-ptx, tokenized on demand in a fixed seeded order (position = call count)."""

    def __init__(self, path: str, tokenizer: PreTrainedTokenizerBase, max_length: int, seed: int):
        dataset, _ = load_dataset_as(resolve_path(path), "text")
        self.texts: list[str] = list(dataset["text"])
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.order = torch.randperm(len(self.texts), generator=torch.Generator().manual_seed(seed))

    def batch(self, position: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded (input_ids, attention_mask) of `size` texts starting at `position` (wrapping around)."""
        texts = [self.texts[int(self.order[(position + i) % len(self.texts)])] for i in range(size)]
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "right"
        try:
            encoded = self.tokenizer(
                texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
            )
        finally:
            self.tokenizer.padding_side = side
        return encoded["input_ids"], encoded["attention_mask"]
