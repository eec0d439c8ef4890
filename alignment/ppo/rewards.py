"""Where PPO's scores come from, how they are shaped, and the KL coefficient that trades them against drift.

A score source is either a trained reward model (reward/model.py; it has its own tokenizer, so it reads
text: the prompt and the decoded response, re-encoded its way) or any Python judge `text -> float`
(configured as `reward_fn: "module:function"`, for verifiable rewards). Per-token KL penalties are added
in `losses.penalized_rewards`; this module holds the sequence-level part and the KL controllers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from alignment.core.judges import score


class Scorer:
    """Raw scores of responses from a reward model (on `prompt + response`) or a judge (see `core.judges`).

    A reward model with the policy's own tokenizer (`same_vocab`) reads the generated ids directly, as
    `reward.model.encode_texts` would have encoded the text; another tokenizer gets the decoded text,
    re-encoded its way.
    """

    def __init__(
        self,
        judge: Callable[..., float] | None = None,
        reward_model: torch.nn.Module | None = None,
        reward_tokenizer=None,
        batch_size: int = 32,
        same_vocab: bool = False,
    ):
        self.judge = judge
        self.reward_model = reward_model
        self.reward_tokenizer = reward_tokenizer
        self.batch_size = batch_size
        self.same_vocab = same_vocab

    def __call__(
        self,
        prompts: list[str],
        responses: list[str],
        rows: list[dict] | None = None,
        token_ids: tuple[torch.Tensor, ...] | None = None,
    ) -> torch.Tensor:
        """Scores [n] (float32, CPU) of each response to its prompt.

        `rows` are the prompts' data rows (for verifier judges); `token_ids` the rollout's
        (query_ids, query_mask, response_ids, response_mask), used when the reward model shares the vocabulary.
        """
        if self.judge is not None:
            rows = rows or [{}] * len(prompts)
            scores = [score(self.judge, p, r, row) for p, r, row in zip(prompts, responses, rows)]
            return torch.tensor(scores, dtype=torch.float32)
        # the stages may import reward/; lazily, judges need none of it
        from reward.model import reward_max_length, score_texts, score_token_ids, sequences_from_rollout_ids

        if self.same_vocab and token_ids is not None:
            length = reward_max_length(self.reward_model)
            sequences = sequences_from_rollout_ids(self.reward_tokenizer, *token_ids, max_length=length)
            return score_token_ids(self.reward_model, self.reward_tokenizer, sequences, self.batch_size)
        texts = [prompt + response for prompt, response in zip(prompts, responses)]
        return score_texts(self.reward_model, self.reward_tokenizer, texts, batch_size=self.batch_size)


@dataclass
class ScoreShaping:
    """Sequence-level score transforms applied before the KL penalty, in this order.

    normalize with the RM's training statistics -> missing-EOS penalty -> clip to [-clip, clip].
    """

    mean: float = 0.0
    std: float = 1.0
    missing_eos_penalty: float | None = None
    clip: float | None = None

    def __call__(self, raw_scores: torch.Tensor, ended_with_eos: torch.Tensor) -> torch.Tensor:
        """Shaped scores [n] from raw scores [n] and whether each response emitted EOS [n] (bool)."""
        scores = (raw_scores - self.mean) / self.std
        if self.missing_eos_penalty is not None:
            scores = scores - self.missing_eos_penalty * (~ended_with_eos.bool()).float()
        if self.clip is not None:
            scores = scores.clamp(-self.clip, self.clip)
        return scores


class FixedKLController:
    """A constant KL coefficient beta; remembers the last `window` steps' KL (for the run's KL budget)."""

    def __init__(self, value: float, window: int = 10):
        self.value = value
        self.recent_kl: deque[float] = deque(maxlen=window)

    def observe(self, current_kl: float, n_samples: int) -> None:
        """Record one step's mean sequence KL, then adapt beta (`update`)."""
        self.recent_kl.append(current_kl)
        self.update(current_kl, n_samples)

    def update(self, current_kl: float, n_samples: int) -> None:
        """Nothing adapts."""

    def mean_recent_kl(self) -> float | None:
        """Mean KL of the last `window` steps; None until that many steps were seen."""
        if len(self.recent_kl) < (self.recent_kl.maxlen or 0):
            return None
        return sum(self.recent_kl) / len(self.recent_kl)

    def state_dict(self) -> dict:
        """For checkpoints: a resumed run sees the same window as an uninterrupted one."""
        return {"value": self.value, "recent_kl": list(self.recent_kl)}

    def load_state_dict(self, state: dict) -> None:
        """Restore from a checkpoint."""
        self.value = state["value"]
        self.recent_kl.clear()
        self.recent_kl.extend(state.get("recent_kl", []))


class AdaptiveKLController(FixedKLController):
    """Ziegler et al. 2019, section 2.2: steer the observed KL toward `target` with a proportional controller.

    e_t = clip(KL_t / target - 1, -0.2, 0.2);  beta_{t+1} = beta_t * (1 + K_beta * e_t),
    with K_beta = n_samples / horizon (the paper's K_beta = 0.1 per step over its horizon).
    """

    def __init__(self, value: float, target: float, horizon: int, window: int = 10):
        super().__init__(value, window)
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_samples: int) -> None:
        """Move beta by at most +-20% of n_samples / horizon."""
        if not math.isfinite(current_kl):
            return
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_samples / self.horizon
