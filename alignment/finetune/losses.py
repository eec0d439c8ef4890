"""The GPT-1 classifier's losses and its task input transformations (Radford et al. 2018, section 3.2-3.3).

Pure functions of tensors (torch only), tested against numbers worked by hand:

    L2 = task loss (cross-entropy over classes or options; MSE for regression)
    L1 = language-model loss on the task inputs: mean over predicted tokens of -log P(u_i | u_<i)
    L3 = L2 + lambda * L1

The input transformations decide how the per-sequence scores [batch, sequences, outputs] of a batch become
its logits: one sequence ("single", also `premise <delim> hypothesis` for entailment); both orders of a pair
with their representations added ("similarity": the head is linear without bias, so adding the two
last-token representations before it equals adding its two outputs); one sequence per option with a softmax
over the options ("choices").
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Transform = Literal["single", "similarity", "choices"]


def combine_sequences(scores: torch.Tensor, transform: Transform) -> torch.Tensor:
    """Task logits from per-sequence head outputs.

    scores: [batch, sequences, outputs]. single: sequences = 1 -> [batch, outputs]; similarity: sequences = 2
    (text+pair, pair+text) -> their sum [batch, outputs]; choices: outputs = 1 -> [batch, sequences], one
    logit per option.
    """
    if transform == "single":
        return scores[:, 0]
    if transform == "similarity":
        return scores.sum(dim=1)
    return scores[..., 0]


def task_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """L2: cross-entropy of logits [batch, classes] against class indices [batch], or MSE of [batch, 1] vs [batch]."""
    if regression:
        return F.mse_loss(logits[:, 0], labels.to(logits.dtype))
    return F.cross_entropy(logits, labels)


def language_model_loss(
    lm_logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """L1: mean next-token cross-entropy over the real tokens of every sequence.

    lm_logits: [n, length, vocab]; input_ids, attention_mask: [n, length]. Position i predicts token i + 1;
    a prediction counts when the predicted token is real (mask 1), so padding is never a target.
    """
    predicted = lm_logits[:, :-1]  # [n, length - 1, vocab]
    targets = input_ids[:, 1:]
    counted = attention_mask[:, 1:].bool()
    return F.cross_entropy(predicted[counted], targets[counted])


def gpt_loss(task: torch.Tensor, lm: torch.Tensor | None, lm_loss_weight: float) -> torch.Tensor:
    """L3 = L2 + lambda * L1 (L1 may be None when lambda is 0: it is not computed at all then)."""
    if lm is None or lm_loss_weight == 0:
        return task
    return task + lm_loss_weight * lm
