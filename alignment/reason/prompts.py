"""Prompts for each mode: direct (zero- and k-shot), few-shot chain-of-thought, zero-shot CoT, self-consistency.

Every prompt is a conversation: k exemplar turns (question, then the exemplar's answer), then the test
question. With a chat template it is rendered by the model's own template (each exemplar a user and an
assistant turn); without one it is plain text, `Question: ...` / `Answer: ...` blocks separated by blank lines
(generation then also stops at the next "Question:").

- direct: the answer turn is opened with "The answer is" and the model completes it, so it must answer at
  once (Kojima et al. 2022 prompt their zero-shot baseline the same way); exemplars answer "The answer is X.".
- cot (few-shot chain of thought, Wei et al. 2022): exemplars answer with their worked solution, then
  "The answer is X."; the test answer is left open. Self-consistency samples this same prompt.
- zero_shot_cot (Kojima et al. 2022): the answer turn is opened with "Let's think step by step."; the
  reasoning the model writes is then followed by "Therefore, the answer (arabic numerals) is" (or
  "Therefore, the answer is" for answers that are not numbers) and a short second generation.

No instruction names a placeholder ("answer with N"): the issue's calibration run saw SmolLM2 copy "N".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the config imports this module, and configs stay light to import
    from alignment.reason.tasks import Item

ANSWER_TRIGGER = "The answer is"
COT_TRIGGER = "Let's think step by step."
EXTRACTION_TRIGGERS = {
    "number": "Therefore, the answer (arabic numerals) is",
    "text": "Therefore, the answer is",
}
PLAIN_STOP = ("\nQuestion:",)
MODES = ("direct", "few_shot", "cot", "zero_shot_cot", "self_consistency")


@dataclass
class Prompter:
    """Renders conversations for one model: with its chat template (`chat`) or as plain text."""

    tokenizer: object
    chat: bool

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Where a plain-text answer ends (a chat answer ends at the template's end-of-turn token)."""
        return () if self.chat else PLAIN_STOP

    def render(self, turns: Sequence[tuple[str, str]], question: str, opening: str = "") -> str:
        """Exemplar turns (question, answer), then `question`, then the start of the answer (`opening`)."""
        if self.chat:
            messages = []
            for q, a in turns:
                messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            messages.append({"role": "user", "content": question})
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return text + opening
        blocks = [f"Question: {q}\nAnswer: {a}" for q, a in turns]
        blocks.append(f"Question: {question}\nAnswer:" + (f" {opening}" if opening else ""))
        return "\n\n".join(blocks)


def exemplar_answer(item: Item, with_solution: bool) -> str:
    """What an exemplar answers: "The answer is X.", after its worked solution for chain of thought."""
    final = f"{ANSWER_TRIGGER} {item.answer}."
    return f"{item.solution}\n{final}" if with_solution and item.solution else final


def mode_prompt(prompter: Prompter, mode: str, question: str, exemplars: Sequence[Item]) -> str:
    """The first-stage prompt of `mode` for one question (exemplars only where the mode uses them)."""
    if mode == "direct":
        return prompter.render([], question, ANSWER_TRIGGER)
    if mode == "few_shot":
        return prompter.render(
            [(e.question, exemplar_answer(e, False)) for e in exemplars], question, ANSWER_TRIGGER
        )
    if mode in ("cot", "self_consistency"):
        return prompter.render([(e.question, exemplar_answer(e, True)) for e in exemplars], question)
    if mode == "zero_shot_cot":
        return prompter.render([], question, COT_TRIGGER)
    raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")


def extraction_prompt(first_stage: str, reasoning: str, kind: str) -> str:
    """Zero-shot CoT's second stage: the prompt, the model's reasoning, then the answer trigger."""
    return f"{first_stage} {reasoning.strip()}\n{EXTRACTION_TRIGGERS[kind]}"


def shared_prefix(prompts: Sequence[str]) -> str:
    """The longest start all prompts share, cut after its last line break (a safe token boundary).

    `core.generation.generate_prefilled` encodes it once for all prompts; k-shot prompts share all their
    exemplars, so most of the prompt is encoded once instead of once per question.
    """
    common = os.path.commonprefix(list(prompts))
    cut = common.rfind("\n")
    return common[: cut + 1] if cut >= 0 else ""
