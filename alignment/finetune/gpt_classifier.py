"""The GPT-1 classifier (Radford et al. 2018): a linear head on a decoder's last token, plus the auxiliary LM loss.

The trained model is a transformers `*ForSequenceClassification` (GPT-2, Llama, ...): its `score` head is
linear without bias and reads the last non-pad token, exactly what GPT-1's head reads, so the saved model
loads with `AutoModelForSequenceClassification` and serves as a judge like any other classifier. During
training it is wrapped here, because the auxiliary loss L1 needs the language-model logits of the same
forward pass and the similarity and multiple-choice transformations need several sequences per example.
The LM logits come from the input embedding matrix when the decoder ties it to its output layer (GPT-2,
SmolLM2); an untied decoder's output layer is kept as a frozen copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from alignment.finetune.losses import Transform, combine_sequences, gpt_loss, language_model_loss, task_loss


class GPTClassifier(torch.nn.Module):
    """A decoder `*ForSequenceClassification` (maybe peft-wrapped) trained with L3 = L2 + lambda * L1.

    `forward` takes input_ids and attention_mask of shape [batch, sequences, length] (right padded): one
    sequence per example, two for the similarity transformation, one per option for multiple choice.
    The last task and LM losses are kept in `last_losses` for logging.
    """

    def __init__(
        self,
        classifier: torch.nn.Module,
        transform: Transform,
        lm_loss_weight: float,
        regression: bool = False,
        lm_head_weight: torch.Tensor | None = None,
    ):
        super().__init__()
        self.classifier = classifier
        self.transform = transform
        self.lm_loss_weight = lm_loss_weight
        self.regression = regression
        self.config = self.inner.config  # the Trainer and the layer helpers read the backbone's config
        if self.inner.score.bias is not None:
            raise ValueError(
                "the GPT classifier head must be linear without bias (similarity adds its outputs)"
            )
        # An untied output layer, frozen: only the LM loss reads it, and it is not part of the saved classifier.
        self.lm_head = None
        if lm_head_weight is not None:
            self.lm_head = torch.nn.Parameter(lm_head_weight.detach().clone(), requires_grad=False)
        self.last_losses: dict[str, float] = {}

    @property
    def inner(self) -> PreTrainedModel:
        """The transformers classifier (under a peft wrapper, if any)."""
        get_base = getattr(self.classifier, "get_base_model", None)
        return get_base() if get_base is not None else self.classifier

    def get_input_embeddings(self) -> torch.nn.Module:
        """The decoder's token embeddings (for freezing and layer-wise rates)."""
        return self.inner.get_input_embeddings()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> SequenceClassifierOutput:
        """Logits [batch, classes] (choices: [batch, options]) and, with labels, the loss L3."""
        batch, sequences, length = input_ids.shape
        flat_ids = input_ids.reshape(batch * sequences, length)
        flat_mask = attention_mask.reshape(batch * sequences, length)
        inner = self.inner
        backbone = getattr(inner, inner.base_model_prefix)
        hidden = backbone(
            input_ids=flat_ids, attention_mask=flat_mask
        ).last_hidden_state  # [b*s, length, hidden]
        last = flat_mask.sum(dim=-1) - 1  # right padding: the last real token
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # [b*s, hidden]
        scores = inner.score(pooled).view(batch, sequences, -1)  # [batch, sequences, outputs]
        logits = combine_sequences(scores, self.transform)
        loss = None
        if labels is not None:
            task = task_loss(logits, labels, self.regression)
            lm = None
            if self.lm_loss_weight > 0:
                weight = self.lm_head if self.lm_head is not None else inner.get_input_embeddings().weight
                lm = language_model_loss(F.linear(hidden, weight), flat_ids, flat_mask)
            loss = gpt_loss(task, lm, self.lm_loss_weight)
            self.last_losses = {
                "task_loss": task.item(),
                **({"lm_loss": lm.item()} if lm is not None else {}),
            }
        return SequenceClassifierOutput(loss=loss, logits=logits)
