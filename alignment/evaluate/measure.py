"""Running models for evaluation: sampling with token ids kept, response log-probs, text perplexity.

These functions do the forward passes; the arithmetic on their outputs lives in `metrics.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from alignment.core.generation import GeneratedBatch, SamplingSettings, generate
from alignment.core.models import max_positions
from alignment.core.tokens import padding_side, response_logprobs, token_logprobs
from alignment.evaluate.metrics import sequence_kl


@dataclass
class Samples:
    """One model's responses to a prompt list, with the generated batches kept for log-prob passes."""

    prompts: list[str]  # as the model saw them (templated)
    texts: list[str]
    lengths: list[int]  # response tokens, through the first EOS
    batches: list[GeneratedBatch]
    ended: list[bool]  # whether each response stopped at EOS by itself


def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    settings: SamplingSettings,
    batch_size: int,
    seed: int,
    max_prompt_length: int | None = None,
) -> Samples:
    """Sample one response per prompt in batches, seeded once up front like `generate_texts`.

    Every model gets the same seed and the same batches, so two identical models give identical
    responses (and a win rate of exactly 0.5 against each other).
    """
    torch.manual_seed(seed)
    batches = [
        generate(model, tokenizer, prompts[i : i + batch_size], settings, max_prompt_length=max_prompt_length)
        for i in range(0, len(prompts), batch_size)
    ]
    texts = [text for batch in batches for text in batch.response_texts]
    lengths = [int(n) for batch in batches for n in batch.response_mask.sum(dim=1).tolist()]
    ended = [bool(e) for batch in batches for e in batch.ended_with_eos.tolist()]
    return Samples(prompts=list(prompts), texts=texts, lengths=lengths, batches=batches, ended=ended)


def _retokenize(
    batch: GeneratedBatch, prompts: list[str], tokenizer: PreTrainedTokenizerBase
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Re-encode a batch's prompts (left-padded) and responses (right-padded) with another tokenizer."""
    with padding_side(tokenizer, "left"):
        query = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    # The EOS ends the response the model sampled (when it did end), so the reference pays for it too.
    responses = [
        text + (tokenizer.eos_token if ended else "")
        for text, ended in zip(batch.response_texts, batch.ended_with_eos.tolist())
    ]
    with padding_side(tokenizer, "right"):
        response = tokenizer(responses, return_tensors="pt", padding=True, add_special_tokens=False)
    return query["input_ids"], query["attention_mask"], response["input_ids"], response["attention_mask"]


def sequence_kls(
    samples: Samples,
    model: PreTrainedModel,
    ref_model: PreTrainedModel,
    ref_tokenizer: PreTrainedTokenizerBase | None = None,
) -> list[float]:
    """Per-sample KL(model || ref) estimate on the model's own samples (see `metrics.sequence_kl`).

    With `ref_tokenizer` (a reference whose vocabulary differs) the reference scores the same prompt
    and response strings under its own tokenization.
    """
    kls: list[float] = []
    start = 0
    for batch in samples.batches:
        prompts = samples.prompts[start : start + len(batch.response_texts)]
        start += len(batch.response_texts)
        logprobs = response_logprobs(
            model, batch.query_ids, batch.query_mask, batch.response_ids, batch.response_mask
        ).cpu()
        policy_seq = (logprobs * batch.response_mask).sum(dim=-1)
        if ref_tokenizer is None:
            ref_logprobs = response_logprobs(
                ref_model, batch.query_ids, batch.query_mask, batch.response_ids, batch.response_mask
            ).cpu()
            kls.extend(sequence_kl(logprobs, ref_logprobs, batch.response_mask).tolist())
        else:
            q_ids, q_mask, r_ids, r_mask = _retokenize(batch, prompts, ref_tokenizer)
            ref_logprobs = response_logprobs(ref_model, q_ids, q_mask, r_ids, r_mask).cpu()
            ref_seq = (ref_logprobs * r_mask).sum(dim=-1)
            kls.extend((policy_seq - ref_seq).tolist())
    return kls


@torch.no_grad()
def text_nll(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    batch_size: int = 16,
    max_length: int = 128,
) -> tuple[float, int]:
    """Total negative log-likelihood of `texts` and the number of predicted tokens.

    Each text is encoded without special tokens and truncated to `max_length`; every token after the
    first is predicted from the ones before it (the first has no context, so it is not counted).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    with padding_side(tokenizer, "right"):
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(
                texts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length,
                add_special_tokens=False,
            ).to(device)
            logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
            logprobs = token_logprobs(logits[:, :-1], encoded["input_ids"][:, 1:])
            mask = encoded["attention_mask"][:, 1:].float()
            total_nll -= float((logprobs * mask).sum())
            total_tokens += int(mask.sum())
    model.train(was_training)
    return total_nll, total_tokens


@torch.no_grad()
def response_nll(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict], prompt_format: str = "chat"
) -> tuple[float, int]:
    """Total negative log-likelihood of demonstrations' response tokens, and their count.

    Each row (messages, or prompt/completion rendered per `prompt_format`) is tokenized exactly as SFT
    tokenizes it (`core.chat.tokenize_example`), so the number is the loss SFT optimises, measured on any model.
    """
    from alignment.core.chat import IGNORE_INDEX, tokenize_example

    device = next(model.parameters()).device
    limit = max_positions(model.config)
    total, count = 0.0, 0
    for row in rows:
        input_ids, labels, _ = tokenize_example(row, tokenizer, prompt_format)
        if limit is not None:
            input_ids, labels = input_ids[:limit], labels[:limit]
        ids = torch.tensor([input_ids], device=device)
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1]
        targets = torch.tensor(labels[1:], device=device)
        keep = targets != IGNORE_INDEX
        if keep.any():
            logprobs = token_logprobs(logits[keep].unsqueeze(0), targets[keep].unsqueeze(0))
            total -= float(logprobs.sum())
            count += int(keep.sum())
    return total, count
