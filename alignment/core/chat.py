"""Conversations in a tokenizer's chat template: SFT labels on assistant tokens, and prompts formatted to match.

Shared by SFT (which trains on demonstrations), evaluation (which measures the loss on their response
tokens) and every stage that samples (PPO, evaluation, the labeling app), so a model is prompted in
exactly the form it was tuned on: `format_prompt` turns a raw prompt into the instruction the tuned model
expects, with or without the chat template.
"""

from __future__ import annotations

from typing import Any, Literal

from transformers import PreTrainedTokenizerBase

from alignment.core.errors import ConfigError, DatasetFormatError

IGNORE_INDEX = -100
PromptFormat = Literal["plain", "chat"]


def format_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str, template: str | None = None, chat: bool = False
) -> str:
    """What a model is prompted with: `template` filled with the prompt, as a user turn when `chat`.

    Without a template the prompt itself is used; with `chat` the text becomes a user turn of the chat
    template, ending in the assistant's generation prompt.
    """
    text = template.format(prompt=prompt) if template else prompt
    if not chat:
        return text
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


def check_template(template: str | None, key: str) -> None:
    """Raise `ConfigError` naming `key` unless `template` is null or holds exactly the field `{prompt}`."""
    if template is None:
        return
    try:
        filled = template.format(prompt="X")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"{key}: expected text with one {{prompt}} field (and no other braces), got {template!r}"
        ) from None
    if "X" not in filled or template.count("{prompt}") != 1:
        raise ConfigError(f"{key}: expected text with one {{prompt}} field, got {template!r}")


def text_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of `text` without automatic BOS/EOS (generation encodes prompts so; templates carry theirs)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def render_chat_segments(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]
) -> list[tuple[str, bool]]:
    """Split a rendered conversation into (text, is_assistant_response) segments.

    Each assistant turn is found as the text that rendering `messages[:i + 1]` adds to rendering
    `messages[:i]` with the generation prompt; this works for any template that renders a conversation
    prefix as a prefix of the whole. Templates that rewrite earlier turns raise a `DatasetFormatError`.
    """
    segments: list[tuple[str, bool]] = []
    rendered = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        after = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if not before.startswith(rendered) or not after.startswith(before):
            raise DatasetFormatError(
                "the chat template does not render a conversation prefix as a prefix of the whole conversation "
                f"(at message {i}), so assistant tokens cannot be located; use a template that appends turns"
            )
        segments += [(before[len(rendered) :], False), (after[len(before) :], True)]
        rendered = after
    return [(text, is_response) for text, is_response in segments if text]


def tokenize_example(
    row: dict[str, Any], tokenizer: PreTrainedTokenizerBase, prompt_format: PromptFormat
) -> tuple[list[int], list[int], str]:
    """Token ids, labels (-100 outside responses) and the generation prompt text of one row.

    `prompt_format` applies to prompt/completion rows: "plain" concatenates prompt, completion and EOS;
    "chat" renders them as a user turn and an assistant turn with the tokenizer's chat template.
    Rows with `messages` always use the chat template.
    """
    if "messages" in row and row["messages"] is not None:
        messages = row["messages"]
    elif prompt_format == "chat":
        messages = [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["completion"]},
        ]
    else:
        prompt_ids = text_ids(tokenizer, row["prompt"]) if row["prompt"] else []
        # EOS ends every completion: it is what teaches the policy to stop.
        completion_ids = text_ids(tokenizer, row["completion"]) + [tokenizer.eos_token_id]
        return prompt_ids + completion_ids, [IGNORE_INDEX] * len(prompt_ids) + completion_ids, row["prompt"]
    input_ids: list[int] = []
    labels: list[int] = []
    for text, is_response in render_chat_segments(tokenizer, messages):
        ids = text_ids(tokenizer, text)
        input_ids += ids
        labels += ids if is_response else [IGNORE_INDEX] * len(ids)
    # The generation prompt for samples: everything before the last assistant response.
    prompt_text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    return input_ids, labels, prompt_text
