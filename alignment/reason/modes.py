"""Running the reasoning modes on one model and one task: prompts -> generations -> answers -> verdicts.

Every mode goes through `generate_all`: prompts sorted by length (so a batch pads little), batches whose
exemplars are encoded once (`core.generation.generate_prefilled`), all N self-consistency samples of a
prompt in the same call, a progress bar, and a count of generated tokens and seconds. Each mode returns a
`ModeRun`: one record per test item (prompt, generations, extracted answer, score, verdict) and the totals.
A verdict is right when the task's checker scores the extracted answer exactly 1.0 (reasoning-gym scorers
give partial credit below that).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from alignment.core.answers import extract_answer
from alignment.core.generation import SamplingSettings, generate_prefilled
from alignment.reason import vote
from alignment.reason.prompts import ANSWER_TRIGGER, Prompter, extraction_prompt, mode_prompt, shared_prefix
from alignment.reason.tasks import Item, Task


@dataclass
class Budget:
    """Generation settings shared by the modes (from the config and the task's own overrides)."""

    max_new_tokens: int
    cot_max_new_tokens: int
    answer_max_new_tokens: int
    num_samples: int
    temperature: float
    top_k: int
    top_p: float
    batch_size: int
    seed: int
    progress_bar: bool = True


@dataclass
class ModeRun:
    """One mode on one task: per-item records, verdicts, and what it cost."""

    mode: str
    records: list[dict[str, Any]]
    correct: list[bool]
    tokens: int = 0
    seconds: float = 0.0
    order: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Generations:
    """Texts in prompt order (N per prompt for sampling), generated tokens and seconds."""

    texts: list[list[str]]
    tokens: int
    seconds: float


def generate_all(
    model: Any,
    tokenizer: Any,
    prompter: Prompter,
    prompts: list[str],
    settings: SamplingSettings,
    budget: Budget,
    samples: int = 1,
    desc: str = "",
) -> Generations:
    """Generate for every prompt (N `samples` each), longest prompts first, in batches; results in input order."""
    started = time.perf_counter()
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])  # longest first: memory peaks early
    per_call = max(1, budget.batch_size // samples)  # rows per call stay near batch_size
    texts: list[list[str]] = [[] for _ in prompts]
    tokens = 0
    torch.manual_seed(budget.seed)  # each mode's samples depend on the seed only, not on what ran before
    batches = range(0, len(order), per_call)
    for start in tqdm(batches, desc=desc, disable=not budget.progress_bar, leave=False):
        indices = order[start : start + per_call]
        batch_prompts = [prompts[i] for i in indices]
        out = generate_prefilled(
            model,
            tokenizer,
            batch_prompts,
            settings,
            num_return_sequences=samples,
            shared_prefix=shared_prefix(batch_prompts),
            stop_strings=prompter.stop_strings,
        )
        tokens += int(out.response_mask.sum())
        for row, i in enumerate(indices):
            texts[i] = [
                _cut(t, prompter.stop_strings)
                for t in out.response_texts[row * samples : (row + 1) * samples]
            ]
    return Generations(texts, tokens, time.perf_counter() - started)


def _cut(text: str, stops: tuple[str, ...]) -> str:
    """A generation up to (not including) the first stop string."""
    for stop in stops:
        if stop in text:
            text = text[: text.index(stop)]
    return text


def pick_exemplars(task: Task, shots: int, seed: int, with_solutions: bool) -> list[Item]:
    """`shots` exemplars from the task's pool (seeded); only ones with worked solutions when asked."""
    pool = [e for e in task.exemplars if e.solution is not None] if with_solutions else list(task.exemplars)
    return random.Random(seed).sample(pool, min(shots, len(pool)))


def orderings(exemplars: list[Item], orders: int, seed: int) -> list[list[Item]]:
    """The exemplars in `orders` orders: as drawn first, then seeded shuffles."""
    rng = random.Random(seed + 1)
    return [list(exemplars)] + [rng.sample(exemplars, len(exemplars)) for _ in range(orders - 1)]


def verdicts(task: Task, items: list[Item], answers: list[str | None]) -> tuple[list[float], list[bool]]:
    """The checker's score of each extracted answer, and whether it is right (exactly 1.0)."""
    scores = [task.checker.score_answer(a, item.row, item.question) for a, item in zip(answers, items)]
    return scores, [s >= 1.0 for s in scores]


def run_single(
    mode: str,
    model: Any,
    tokenizer: Any,
    prompter: Prompter,
    task: Task,
    exemplars: list[Item],
    budget: Budget,
    order: int = 0,
    label: str = "",
) -> ModeRun:
    """direct, few_shot or cot: one greedy generation per item, its answer extracted and checked."""
    items = task.items
    prompts = [
        mode_prompt(prompter, mode, item.question, exemplars if mode != "direct" else []) for item in items
    ]
    cot = mode == "cot"
    tokens = task.spec.get("cot_max_new_tokens" if cot else "max_new_tokens")
    tokens = tokens or (budget.cot_max_new_tokens if cot else budget.max_new_tokens)
    settings = SamplingSettings(max_new_tokens=tokens, temperature=0)
    gen = generate_all(model, tokenizer, prompter, prompts, settings, budget, desc=label)
    texts = [t[0] for t in gen.texts]
    if cot:  # the reasoning ends in "The answer is X.": its last statement counts
        answers = [extract_answer(t, task.kind) for t in texts]
    else:  # the answer turn was opened with "The answer is": the first statement counts
        answers = [extract_answer(f"{ANSWER_TRIGGER}{t}", task.kind, "first") for t in texts]
    scores, right = verdicts(task, items, answers)
    records = [
        _record(i, item, prompt, text, answer, score, ok)
        for i, (item, prompt, text, answer, score, ok) in enumerate(
            zip(items, prompts, texts, answers, scores, right)
        )
    ]
    return ModeRun(mode, records, right, gen.tokens, gen.seconds, order)


def run_zero_shot_cot(
    model: Any, tokenizer: Any, prompter: Prompter, task: Task, budget: Budget, label: str = ""
) -> ModeRun:
    """Zero-shot CoT: "Let's think step by step." reasoning, then "Therefore, the answer ... is" (two stages)."""
    items = task.items
    first = [mode_prompt(prompter, "zero_shot_cot", item.question, []) for item in items]
    tokens = task.spec.get("cot_max_new_tokens") or budget.cot_max_new_tokens
    reasoning = generate_all(
        model,
        tokenizer,
        prompter,
        first,
        SamplingSettings(max_new_tokens=tokens, temperature=0),
        budget,
        desc=label,
    )
    second = [extraction_prompt(p, t[0], task.kind) for p, t in zip(first, reasoning.texts)]
    answer_settings = SamplingSettings(max_new_tokens=budget.answer_max_new_tokens, temperature=0)
    stated = generate_all(
        model, tokenizer, prompter, second, answer_settings, budget, desc=f"{label} (answers)"
    )
    answers = [extract_answer(f"{ANSWER_TRIGGER}{t[0]}", task.kind, "first") for t in stated.texts]
    scores, right = verdicts(task, items, answers)
    records = []
    for i, item in enumerate(items):
        record = _record(i, item, first[i], reasoning.texts[i][0], answers[i], scores[i], right[i])
        record.update(answer_prompt_tail=second[i][len(first[i]) :], answer_generation=stated.texts[i][0])
        records.append(record)
    return ModeRun(
        "zero_shot_cot", records, right, reasoning.tokens + stated.tokens, reasoning.seconds + stated.seconds
    )


def run_self_consistency(
    model: Any,
    tokenizer: Any,
    prompter: Prompter,
    task: Task,
    exemplars: list[Item],
    budget: Budget,
    num_items: int,
    label: str = "",
) -> ModeRun:
    """Self-consistency: N sampled CoT paths per item, answers voted; the n = 1..N curve from the same samples."""
    items = task.items[:num_items]
    prompts = [mode_prompt(prompter, "self_consistency", item.question, exemplars) for item in items]
    settings = SamplingSettings(
        max_new_tokens=task.spec.get("cot_max_new_tokens") or budget.cot_max_new_tokens,
        temperature=budget.temperature,
        top_k=budget.top_k,
        top_p=budget.top_p,
    )
    gen = generate_all(model, tokenizer, prompter, prompts, settings, budget, budget.num_samples, label)
    paths = [[extract_answer(t, task.kind) for t in texts] for texts in gen.texts]
    voted = [vote.majority_vote(p) for p in paths]
    scores, right = verdicts(task, items, voted)
    cache: dict[tuple[int, str | None], bool] = {}  # scoring is deterministic: each distinct answer once

    def is_right(i: int, answer: str | None) -> bool:
        if (i, answer) not in cache:
            cache[(i, answer)] = task.checker.score_answer(answer, items[i].row, items[i].question) >= 1.0
        return cache[(i, answer)]

    curve = vote.vote_curve(paths, is_right)
    agreement = [vote.agreement(p) for p in paths]
    any_right = [any(is_right(i, a) for a in p) for i, p in enumerate(paths)]
    records = []
    for i, item in enumerate(items):
        record = _record(i, item, prompts[i], gen.texts[i], voted[i], scores[i], right[i])
        record.update(sample_answers=paths[i], agreement=agreement[i])
        records.append(record)
    extra = {
        "curve": curve,
        "agreement": sum(agreement) / len(agreement) if agreement else 0.0,
        "any_correct": sum(any_right),
        "n_items": len(items),
        "num_samples": budget.num_samples,
    }
    return ModeRun("self_consistency", records, right, gen.tokens, gen.seconds, extra=extra)


def _record(
    index: int,
    item: Item,
    prompt: str,
    generation: str | list[str],
    answer: str | None,
    score: float,
    right: bool,
) -> dict[str, Any]:
    return {
        "item": index,
        "question": item.question,
        "reference": item.answer,
        "prompt": prompt,
        "generation": generation,
        "extracted": answer,
        "score": score,
        "correct": right,
    }
