"""Reward models: a scalar head on a decoder (read at the last real token) or an encoder (pooled [CLS]).

Every reward model is an `AutoModelForSequenceClassification` with `num_labels=1`, saved with its own
tokenizer, so it may use a different vocabulary than the policy it scores: callers hand it text, never ids.

Silent failures this module guards against (see ../shared/STACK-NOTES.md):
- `config.pad_token_id` unset, or equal to EOS: transformers reads the score at the rightmost token that is
  not the pad id, so with pad == EOS the EOS appended to every text is skipped and with pad unset a batch fails;
- left padding shifts positions of the real tokens unless `position_ids` are given, so the same text would get
  a different score depending on how much padding its batch needed (`check_score_position` tests this).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from alignment.core.models import (
    DEFAULT_CHAT_TEMPLATE,
    ModelLoadError,
    ensure_pad_token,
    fuse_activations,
    loading,
    max_positions,
    model_folder,
)
from alignment.core.tokens import position_ids_from_mask

# Backbones whose classification head pools the first ([CLS]) token rather than the last real one.
ENCODER_MODEL_TYPES = {
    "bert",
    "roberta",
    "distilbert",
    "albert",
    "electra",
    "deberta",
    "deberta-v2",
    "mpnet",
    "xlm-roberta",
    "modernbert",
}
STATS_FILE = "reward_stats.json"


def is_encoder(config: PretrainedConfig) -> bool:
    """True for encoder backbones (pooled [CLS] score); False for decoders (score at the last real token)."""
    return config.model_type in ENCODER_MODEL_TYPES


def load_backbone_tokenizer(name_or_path: str, encoder: bool) -> PreTrainedTokenizerBase:
    """Tokenizer for a new reward model: a pad token distinct from EOS (decoders) and a chat template."""
    folder = model_folder(name_or_path)
    with loading(f"tokenizer {folder}"):
        tokenizer = AutoTokenizer.from_pretrained(folder)
    if encoder:
        if tokenizer.pad_token is None:
            raise ModelLoadError(f"encoder tokenizer {name_or_path!r} has no pad token")
    else:
        ensure_pad_token(tokenizer)
    if not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer


def build_reward_model(
    name_or_path: str, tokenizer: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A reward model from any backbone folder (an SFT causal LM, MiniLM, ...): a fresh scalar head on top.

    Returns the model and its tokenizer, with `config.pad_token_id` set to the tokenizer's pad id.
    """
    path = model_folder(name_or_path)
    with loading(f"model {path}"):
        encoder = is_encoder(AutoConfig.from_pretrained(path))
    tokenizer = load_backbone_tokenizer(tokenizer or name_or_path, encoder)
    with loading(f"model {path}"):
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    fuse_activations(model)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        model.config.eos_token_id = tokenizer.eos_token_id
    check_pad_token(model, tokenizer)
    return model, tokenizer


def check_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise `ModelLoadError` unless the model's pad id is the tokenizer's and (for decoders) differs from EOS."""
    pad_id = model.config.pad_token_id
    if pad_id is None or pad_id != tokenizer.pad_token_id:
        raise ModelLoadError(
            f"reward model config.pad_token_id={pad_id} but its tokenizer pads with {tokenizer.pad_token_id}: "
            "the score would be read at the wrong token"
        )
    if not is_encoder(model.config) and pad_id == tokenizer.eos_token_id:
        raise ModelLoadError(
            f"reward model pads with its EOS token (id {pad_id}): the EOS that ends every text would be "
            "taken for padding and the score read one token early"
        )


def load_reward_model(path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a saved reward model and its own tokenizer, in eval mode; checks the pad-token set-up."""
    folder = model_folder(path)
    with loading(f"reward model {folder}"):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
    fuse_activations(model)
    if model.config.num_labels != 1:
        raise ModelLoadError(f"{folder}: a reward model needs num_labels=1, found {model.config.num_labels}")
    check_pad_token(model, tokenizer)
    return model.eval(), tokenizer


def load_reward_stats(path: str) -> dict[str, float]:
    """`reward_stats.json` of a saved reward model: {mean, std, eval_accuracy}."""
    stats_path = Path(model_folder(path)) / STATS_FILE
    if not stats_path.is_file():
        raise ModelLoadError(
            f"{stats_path} does not exist: was the reward model trained by `alignment reward`? "
            "(or set normalize_reward: false)"
        )
    try:
        stats = json.loads(stats_path.read_text())
        float(stats["mean"]), float(stats["std"])
    except (ValueError, KeyError, TypeError):
        raise ModelLoadError(f"{stats_path}: expected JSON with numbers 'mean' and 'std'") from None
    return stats


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int | None, encoder: bool
) -> list[list[int]]:
    """Token ids of each text as the reward model reads it (the same in training and scoring).

    Decoders are scored at the last token of the text itself. We do not append EOS (as TRL does): in a
    model pretrained on EOS-separated documents the EOS state mostly encodes "a new document starts" and
    varies little between texts (measured on the tiny SFT model: between-text spread 0.14 of its norm at
    EOS against 0.39 at the last text token), so it is a poor place to read a score from. A trailing
    EOS is stripped, so a policy sample with or without it scores the same. Encoders get [CLS] ... [SEP].
    `max_length=None` does not truncate (the start-up checks use it to see what truncation removed).
    """
    if encoder:
        if max_length is None:
            return tokenizer(texts, truncation=False, verbose=False)["input_ids"]
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    eos = tokenizer.eos_token_id
    encoded = []
    for ids in tokenizer(texts)["input_ids"]:
        while len(ids) > 1 and ids[-1] == eos:
            ids = ids[:-1]
        encoded.append(ids if max_length is None else ids[:max_length])
    return encoded


def pad_batch(
    sequences: list[list[int]], pad_token_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad id lists into input_ids, attention_mask and position_ids (counted over real tokens only)."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        span = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
        input_ids[row, span] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, span] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids_from_mask(attention_mask),
    }


@torch.no_grad()
def score_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    batch_size: int = 32,
    max_length: int = 512,
) -> torch.Tensor:
    """Scalar reward of each text, shape [n], float32 on CPU (texts encoded the way training encoded them)."""
    encoder = is_encoder(model.config)
    max_length = _fitting_length(model, max_length)
    return score_token_ids(model, tokenizer, encode_texts(tokenizer, texts, max_length, encoder), batch_size)


def score_token_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sequences: list[list[int]],
    batch_size: int = 32,
) -> torch.Tensor:
    """Scalar reward of token-id sequences already encoded as `encode_texts` would, shape [n], float32 on CPU.

    PPO hands a reward model that shares the policy's tokenizer its ids directly (no decode and re-encode).
    Padding follows `tokenizer.padding_side` (encoders always pad on the right: they pool the first token).
    """
    encoder = is_encoder(model.config)
    side = "right" if encoder else tokenizer.padding_side
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            batch = pad_batch(sequences[start : start + batch_size], tokenizer.pad_token_id, side)
            if encoder:
                batch.pop("position_ids")  # right padding: the default positions are the real ones
            batch = {k: v.to(device) for k, v in batch.items()}
            scores.append(model(**batch).logits[:, 0].float().cpu())
    model.train(was_training)
    return torch.cat(scores) if scores else torch.zeros(0)


def sequences_from_rollout_ids(
    tokenizer: PreTrainedTokenizerBase,
    query_ids: torch.Tensor,
    query_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    max_length: int,
) -> list[list[int]]:
    """What `encode_texts` would make of `prompt + response` texts, built from the generated ids themselves.

    Real query ids, then real response ids with trailing EOS stripped (as `encode_texts` does), after the
    special tokens the tokenizer puts in front of every text (a BOS for some), cut at `max_length`.
    """
    prefix, suffix = special_tokens_around(tokenizer)
    eos = tokenizer.eos_token_id
    sequences = []
    for q, qm, r, rm in zip(
        query_ids.tolist(), query_mask.tolist(), response_ids.tolist(), response_mask.tolist()
    ):
        ids = prefix + [t for t, m in zip(q, qm) if m] + [t for t, m in zip(r, rm) if m] + suffix
        while len(ids) > 1 and ids[-1] == eos:
            ids = ids[:-1]
        sequences.append(ids[:max_length])
    return sequences


def special_tokens_around(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after every text it encodes (a BOS for some, nothing for GPT-2)."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


def _fitting_length(model: PreTrainedModel, max_length: int) -> int:
    """`max_length`, or the model's positions if fewer (past them it would index out of range)."""
    limit = max_positions(model.config)
    return min(max_length, limit) if limit is not None else max_length


def reward_max_length(model: PreTrainedModel, max_length: int = 512) -> int:
    """The longest input this reward model reads (for callers that build ids themselves)."""
    return _fitting_length(model, max_length)


def check_score_position(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str = "a short probe text",
    atol: float = 1e-4,
) -> None:
    """Raise `ModelLoadError` unless `text` scores the same alone, right-padded and left-padded in a batch.

    A different score means the head reads a pad (or the wrong) position: the classic silent reward-model bug.
    """
    encoder = is_encoder(model.config)
    ids = encode_texts(tokenizer, [text], 64, encoder)[0]
    longer = ids + ids[1:] + ids[1:]  # forces padding of `ids` in the same batch
    sides = ["right"] if encoder else ["right", "left"]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        alone = model(
            **{k: v.to(device) for k, v in pad_batch([ids], tokenizer.pad_token_id).items()}
        ).logits[0, 0]
        for side in sides:
            batch = {
                k: v.to(device) for k, v in pad_batch([ids, longer], tokenizer.pad_token_id, side).items()
            }
            padded = model(**batch).logits[0, 0]
            if not torch.allclose(alone, padded, atol=atol):
                model.train(was_training)
                raise ModelLoadError(
                    f"reward model scores the same text {alone.item():.5f} alone but {padded.item():.5f} with "
                    f"{side} padding: the score is not read at the last real token (check config.pad_token_id)"
                )
    model.train(was_training)
