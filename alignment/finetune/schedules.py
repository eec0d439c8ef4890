"""ULMFiT's slanted triangular learning rate (Howard & Ruder 2018, https://arxiv.org/abs/1801.06146, eq. 3).

A short linear rise to the peak over the first `cut_frac` of the steps, then a long linear decay:

    cut = floor(T * cut_frac)
    p   = t / cut                                   if t < cut
          1 - (t - cut) / (cut * (1 / cut_frac - 1))  otherwise
    lr  = lr_max * (1 + p * (ratio - 1)) / ratio

so the rate starts and ends at lr_max / ratio. Pure: imports only torch.
"""

from __future__ import annotations

import math

import torch


def slanted_triangular(step: int, total_steps: int, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    """The multiplier of the peak rate at `step` (0-based) of `total_steps`, from eq. 3 above."""
    cut = max(math.floor(total_steps * cut_frac), 1)
    if step < cut:
        p = step / cut
    else:
        p = max(1 - (step - cut) / (cut * (1 / cut_frac - 1)), 0.0)
    return (1 + p * (ratio - 1)) / ratio


def slanted_triangular_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, cut_frac: float, ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying the multiplier to every parameter group's own peak (discriminative rates stay apart)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: slanted_triangular(step, total_steps, cut_frac, ratio)
    )
