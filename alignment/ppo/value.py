"""The critic, and the one trainable module PPO hands to accelerate: policy and value model together.

Critic layouts (config `value_model`):
- `separate`: its own transformer backbone (by default the reward model's, so it starts out knowing what
  scores well; InstructGPT initialized its value function from the RM) with a scalar head per token;
- `policy_head`: a scalar head on the policy's last hidden state (cheaper, shares features and gradients);
- `none`: no critic at all, for advantages that need none (`advantage_estimator: rloo`); values read 0.

`PolicyAndValue` wraps both so DeepSpeed sees a single engine with a single optimizer (a DeepSpeed engine
holds exactly one model); the policy and critic keep separate parameter groups and learning rates.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification, PreTrainedModel

from alignment.core.models import fuse_activations, loading
from alignment.core.tokens import position_ids_from_mask

HEAD_FILE = "value_head.safetensors"


class ValueModel(nn.Module):
    """A transformer backbone plus a linear head: one value per token, [batch, seq_len]."""

    def __init__(self, backbone: PreTrainedModel, head: nn.Linear):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Values for every position, [batch, seq_len]."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        return self.head(hidden).squeeze(-1)


def fresh_head(hidden_size: int) -> nn.Linear:
    """A zero-initialized value head: the critic starts by predicting 0 for every state."""
    head = nn.Linear(hidden_size, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def hidden_size_of(model: PreTrainedModel) -> int:
    """The width of the model's last hidden state."""
    config = model.config
    return getattr(config, "hidden_size", None) or config.n_embd


def critic_from_reward_model(path: str, reuse_head: bool, mean: float = 0.0, std: float = 1.0) -> ValueModel:
    """A critic on the reward model's backbone; with `reuse_head` its scalar head, rescaled to normalized scores.

    The RM head maps a hidden state h to s = w.h; the PPO score is (s - mean) / std, so the value head
    starts as w / std with bias -mean / std and predicts normalized scores from the first step.
    """
    with loading(f"value model backbone {path}"):
        reward_model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=torch.float32
        )
    fuse_activations(reward_model)
    backbone = reward_model.base_model
    head = fresh_head(hidden_size_of(backbone))
    rm_head = getattr(reward_model, "score", None)
    if reuse_head and isinstance(rm_head, nn.Linear):
        with torch.no_grad():
            head.weight.copy_(rm_head.weight / std)
            head.bias.fill_(-mean / std + (rm_head.bias.item() / std if rm_head.bias is not None else 0.0))
    return ValueModel(backbone, head)


def critic_from_causal_lm(path: str) -> ValueModel:
    """A critic on a causal LM's backbone (the policy's starting point) with a fresh head."""
    with loading(f"value model backbone {path}"):
        backbone = AutoModel.from_pretrained(path, dtype=torch.float32)
    fuse_activations(backbone)
    return ValueModel(backbone, fresh_head(hidden_size_of(backbone)))


class PolicyAndValue(nn.Module):
    """Policy logits and per-token values from one forward call; the unit accelerate/DeepSpeed trains."""

    def __init__(
        self, policy: nn.Module, critic: ValueModel | None = None, value_head: nn.Linear | None = None
    ):
        super().__init__()
        if critic is not None and value_head is not None:
            raise ValueError(
                "PolicyAndValue takes at most one of `critic` (separate) or `value_head` (policy_head)"
            )
        self.policy = policy
        self.critic = critic
        self.value_head = value_head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [batch, seq_len or logits_to_keep, vocab], values [batch, seq_len]).

        `logits_to_keep > 0` computes the LM head only on the last positions (PPO needs logits only where
        they predict response tokens; the head is 20-40% of a small decoder's compute).
        """
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        shared = self.value_head is not None
        out = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            output_hidden_states=shared,
            logits_to_keep=logits_to_keep,
        )
        if shared:
            values = self.value_head(out.hidden_states[-1]).squeeze(-1)
        elif self.critic is not None:
            values = self.critic(input_ids, attention_mask, position_ids)
        else:
            values = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        return out.logits, values

    @property
    def has_value_model(self) -> bool:
        """Whether a critic or a value head is trained beside the policy."""
        return self.critic is not None or self.value_head is not None

    def parameter_groups(self, policy_lr: float, value_lr: float) -> list[dict]:
        """Optimizer groups: the policy's trainable weights, and the critic's (or the shared head's)."""
        policy_params = [p for p in self.policy.parameters() if p.requires_grad]
        groups = [{"params": policy_params, "lr": policy_lr}]
        if self.has_value_model:
            value_module = self.critic if self.critic is not None else self.value_head
            value_params = [p for p in value_module.parameters() if p.requires_grad]
            groups.append({"params": value_params, "lr": value_lr})
        return groups
