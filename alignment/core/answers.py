r"""Final answers in model outputs: extraction, normalisation and exact-match scoring (pure: stdlib only).

Shared by the reasoning evaluation (`alignment reason`) and by the answer-checking judges that PPO can use
as a verifiable reward (`reward_fn: answer`, `reward_fn: reasoning_gym:<generator>`; see `core/judges.py`),
so a checkpoint is rewarded during training by exactly the rule it is measured with afterwards.

Extraction looks, in this order, for the conventions models are prompted or trained with:
1. `#### N` (GSM8K's worked solutions end so);
2. `\boxed{N}` (MATH-style answers);
3. "the answer is N", "final answer: N", "answer: N" (Wei et al. 2022's exemplars end in "The answer is N.");
4. for numeric answers only, the last number in the text.
The last match of the first rule that matches wins, because small models restate the question's numbers
before answering. A marker followed by no usable answer (a model copying a placeholder such as "N" from
an instruction) does not count, and extraction falls through to the next rule.

Numbers are compared as numbers: thousands separators, a leading plus, a Unicode minus, "$" and trailing
zeros do not matter ("1,000.0" matches "1000"); anything else is compared after case folding and trimming.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Literal

AnswerKind = Literal["number", "text"]

# A number as people write it: sign, digits with or without thousands separators, decimals.
NUMBER = r"[-+\u2212]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+\u2212]?\$?\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\w.])(?:{NUMBER})(?![\d])")
_HASHES_RE = re.compile(r"####\s*(?P<answer>[^\n]*)")
_BOXED_RE = re.compile(r"\\boxed\s*\{(?P<answer>(?:[^{}]|\{[^{}]*\})*)\}")
# "The answer is 12", "the final answer is: 12", "Answer: 12", "answer = 12" (case-insensitive).
_MARKER_RE = re.compile(
    r"(?:(?:the\s+)?(?:final\s+)?answer\s*(?:is|:|=|would be|will be)|answer\s*\((?:arabic numerals)\)\s*is)"
    r"\s*:?\s*(?P<answer>[^\n]*)",
    re.IGNORECASE,
)
# Wrappers models put around an answer: markdown bold, quotes, brackets, a trailing full stop.
_WRAPPERS = " \t*_`'\"()[]{}<>"
# A full stop ends a sentence unless it sits between digits (a decimal point).
_SENTENCE_END = re.compile(r"(?<!\d)\.|\.(?!\d)|\n")


def parse_number(text: str) -> Decimal | None:
    """The value of a number written as `text` ("1,000", "-3.50", "+7", "$12", "\u22122"), else None."""
    cleaned = text.strip().strip(_WRAPPERS).rstrip(".").replace("\u2212", "-").replace("$", "")
    if not re.fullmatch(rf"(?:{NUMBER})", cleaned):
        return None
    try:
        return Decimal(cleaned.replace(",", ""))
    except InvalidOperation:
        return None


def canonical_number(value: Decimal) -> str:
    """A number's one spelling: no exponent, no trailing zeros, no "-0" ("5.0" -> "5", "-0.50" -> "-0.5")."""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def answer_kind(gold: str) -> AnswerKind:
    """Whether a reference answer is a number (compared by value) or text (compared as a string)."""
    return "number" if parse_number(str(gold)) is not None else "text"


def normalize_answer(answer: str) -> str:
    """The form answers are compared (and voted) in: a canonical number, or trimmed case-folded text."""
    value = parse_number(answer)
    if value is not None:
        return canonical_number(value)
    text = " ".join(answer.split()).strip(_WRAPPERS).rstrip(".").strip(_WRAPPERS)
    return text.casefold()


def answers_match(predicted: str | None, gold: str) -> bool:
    """True when an extracted answer equals the reference after normalisation (numbers by value)."""
    if predicted is None:
        return False
    return normalize_answer(predicted) == normalize_answer(str(gold))


def _answer_in(fragment: str, kind: AnswerKind) -> str | None:
    """The answer a marker introduces: its first number (numeric tasks), or its text up to a full stop."""
    sentence = _SENTENCE_END.split(fragment, maxsplit=1)[0]
    if kind == "number":
        # "The answer is 2 + 3 = 5": the result is what follows the last "=".
        sentence = sentence.rsplit("=", 1)[-1]
        match = _NUMBER_RE.search(sentence)
        # The number must open the sentence (after wrappers such as "**" or "$"), not sit later in it:
        # in "The answer is not 5 but ..." nothing was answered.
        if match is None or sentence[: match.start()].strip(_WRAPPERS + ":$\\"):
            return None
        return canonical_number(parse_number(match.group(0)))
    text = sentence.strip().strip(_WRAPPERS)
    return text or None


def extract_answer(
    text: str, kind: AnswerKind = "number", which: Literal["last", "first"] = "last"
) -> str | None:
    """The final answer stated in a model's output, or None when it states none (see the module docstring).

    `kind="number"` returns a canonical number (so answers vote and compare by value) and falls back to the
    last number in the text; `kind="text"` returns the text after the marker. `which="first"` takes the first
    match instead of the last: the second stage of zero-shot CoT ("Therefore, the answer is") answers at once
    and then often rambles on (Kojima et al. 2022 take the first number there too).
    """
    for pattern in (_HASHES_RE, _BOXED_RE, _MARKER_RE):
        matches = list(pattern.finditer(text))
        if which == "last":
            matches.reverse()
        for match in matches:
            answer = _answer_in(match.group("answer"), kind)
            if answer is not None:
                return answer
    if kind == "number":
        numbers = _NUMBER_RE.findall(text)
        if numbers:
            return canonical_number(parse_number(numbers[-1] if which == "last" else numbers[0]))
        return None
    if which == "first":
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[0].strip().strip(_WRAPPERS).rstrip(".") if lines else None
    return None


def score_exact(response: str, gold: str) -> float:
    """1.0 when the answer extracted from `response` equals `gold` after normalisation, else 0.0."""
    return 1.0 if answers_match(extract_answer(response, answer_kind(str(gold))), str(gold)) else 0.0
