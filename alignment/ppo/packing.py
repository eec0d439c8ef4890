"""Padding-free training forwards: a micro-batch's sequences packed end to end into a few rows (torch only).

Responses that stop at EOS leave much of each `[query | response]` row as padding, and a padded forward
spends as much compute on it as on real tokens. Packed, each sequence keeps its own positions (they restart
at 0) and no attention mask is passed: transformers' sdpa and flash attention then build a block-diagonal
mask from the position ids, so no token attends across sequences (checked in tests/unit/test_ppo_packing.py
against the padded forward). Rows are filled first-fit up to `row_tokens` so that attention, quadratic in a
row's length, stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Packed:
    """Sequences packed into rows: model inputs, and where each sequence starts (row, column)."""

    input_ids: torch.Tensor  # [rows, width]
    position_ids: torch.Tensor  # [rows, width], restarting at 0 for every sequence (filler tokens: all 0)
    starts: list[tuple[int, int]]  # (row, column) of each sequence's first token
    width: int

    def flat(self, sequence: int, offset: torch.Tensor) -> torch.Tensor:
        """Flat indices into [rows * width] of the tokens at `offset` within `sequence`."""
        row, column = self.starts[sequence]
        return row * self.width + column + offset


def pack(sequences: list[torch.Tensor], pad_id: int, row_tokens: int = 256) -> Packed:
    """Pack 1-D token tensors into rows of at most `max(row_tokens, longest)` tokens, first fit."""
    capacity = max(row_tokens, max(len(s) for s in sequences))
    rows: list[list[int]] = []  # sequence indices per row
    used: list[int] = []
    for index in sorted(range(len(sequences)), key=lambda i: -len(sequences[i])):
        length = len(sequences[index])
        row = next((r for r, n in enumerate(used) if n + length <= capacity), None)
        if row is None:
            rows.append([])
            used.append(0)
            row = len(rows) - 1
        rows[row].append(index)
        used[row] += length
    width = max(used)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    starts: list[tuple[int, int]] = [(0, 0)] * len(sequences)
    for row, members in enumerate(rows):
        column = 0
        for index in members:
            tokens = sequences[index]
            input_ids[row, column : column + len(tokens)] = tokens
            position_ids[row, column : column + len(tokens)] = torch.arange(len(tokens))
            starts[index] = (row, column)
            column += len(tokens)
        # Filler after the last sequence: position 0 everywhere, so each filler token is a sequence of its own
        # (and no position goes past the model's table, however long the row).
    return Packed(input_ids, position_ids, starts, width)


def gather_positions(
    per_position: torch.Tensor,
    packed: Packed,
    sequences: list[int],
    offsets: torch.Tensor,
    lengths: torch.Tensor,
    width: int,
) -> torch.Tensor:
    """Per-position outputs of some packed sequences, back in a padded [n, width, ...] layout.

    Row i holds `lengths[i]` consecutive positions of packed sequence `sequences[i]` from its offset
    `offsets[i]`; positions past `lengths[i]` repeat the last one and must be masked by the caller.
    `per_position` is [rows, packed width, ...] (logits or values of the packed forward).
    """
    steps = torch.arange(width)
    last = (lengths - 1).clamp(min=0)
    index = torch.stack(
        [packed.flat(s, offsets[i] + torch.minimum(steps, last[i])) for i, s in enumerate(sequences)]
    )
    flat = per_position.reshape(-1, *per_position.shape[2:])
    return flat[index]
