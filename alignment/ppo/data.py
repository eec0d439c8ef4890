"""PPO's two data streams: the prompts rollouts start from, and the pretraining texts of PPO-ptx.

Both read positions of one endless, seeded sequence: pass `p` over the data is a fresh permutation seeded
by `seed + p`, so every item is visited once per pass, in that order, and the position alone says where
the stream is. Positions are computed from the step (and micro-batch) counters, never accumulated, so any
number of processes take disjoint slices of the same global order and a resumed run continues exactly.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from alignment.core.chat import format_prompt
from alignment.core.formats import load_dataset_as
from alignment.core.paths import resolve_path
from alignment.core.tokens import padding_side


class SeededOrder:
    """Item index at each position of `size` items repeated in endless passes, a fresh permutation per pass."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.seed = seed
        self._pass: tuple[int, torch.Tensor] | None = None  # the permutation of the pass last read

    def __getitem__(self, position: int) -> int:
        """The item at `position` (0, 1, 2, ... over all passes)."""
        number, offset = divmod(position, self.size)
        if self._pass is None or self._pass[0] != number:
            generator = torch.Generator().manual_seed(self.seed + number)
            self._pass = (number, torch.randperm(self.size, generator=generator))
        return int(self._pass[1][offset])


class PromptSource:
    """Training prompts: step `s` with global batch `B` reads positions `s*B ... s*B + B - 1`.

    Process `r` of `W` takes its contiguous slice of those B, so the global batch is the same for any number
    of processes.
    """

    def __init__(
        self,
        path: str,
        tokenizer: PreTrainedTokenizerBase,
        use_chat_template: bool,
        seed: int,
        template: str | None = None,
    ):
        dataset, _ = load_dataset_as(resolve_path(path), "prompts")
        self.rows: list[dict] = list(dataset)  # every column: a verifier judge reads the row's answer
        self.prompts: list[str] = [row["prompt"] for row in self.rows]
        self.tokenizer = tokenizer
        self.use_chat_template = use_chat_template
        self.template = template
        self.order = SeededOrder(len(self.prompts), seed)

    def __len__(self) -> int:
        return len(self.prompts)

    def format(self, prompt: str) -> str:
        """What the policy sees: the prompt in its instruction template, as a chat turn if asked."""
        return format_prompt(self.tokenizer, prompt, self.template, self.use_chat_template)

    def batch(self, step: int, global_batch_size: int, rank: int = 0, world_size: int = 1) -> list[dict]:
        """The prompt rows ({prompt, ...}) for `step` on process `rank` of `world_size`."""
        local = global_batch_size // world_size
        start = step * global_batch_size + rank * local
        return [self.rows[self.order[position]] for position in range(start, start + local)]


class PtxSource:
    """Pretraining texts for PPO-ptx: micro-batch `m` (counted over the whole run) reads the next texts in order.

    With `size` texts per process per micro-batch, micro-batch `m` on process `r` of `W` reads positions
    `(m * W + r) * size ...`: consecutive micro-batches (and processes) read consecutive texts, so each
    text is read once per pass whatever the PPO batch sizes are.
    """

    def __init__(self, path: str, tokenizer: PreTrainedTokenizerBase, max_length: int, seed: int):
        dataset, _ = load_dataset_as(resolve_path(path), "text")
        self.texts: list[str] = list(dataset["text"])
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.order = SeededOrder(len(self.texts), seed)

    def positions(self, micro_batch: int, size: int, rank: int = 0, world_size: int = 1) -> range:
        """The stream positions micro-batch `micro_batch` reads on process `rank`."""
        start = (micro_batch * world_size + rank) * size
        return range(start, start + size)

    def texts_at(self, positions: range) -> list[str]:
        """The texts at those positions."""
        return [self.texts[self.order[p]] for p in positions]

    def batch(
        self, micro_batch: int, size: int, rank: int = 0, world_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded (input_ids, attention_mask) of this process's texts for `micro_batch`."""
        texts = self.texts_at(self.positions(micro_batch, size, rank, world_size))
        with padding_side(self.tokenizer, "right"):
            encoded = self.tokenizer(
                texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
            )
        return encoded["input_ids"], encoded["attention_mask"]
