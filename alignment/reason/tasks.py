"""Reasoning tasks: test items and a separate exemplar pool, each item with its checker and worked solution.

A task is either a reasoning-gym generator by name (`generator`, with `options`, `seed`), scored with the
generator's own `score_answer`, or a JSONL file of `{question, answer, solution?}` rows (`file`; `prompt` and
`completion` are read as question and solution too, so the prepared `cache://datasets/reasoning/*.jsonl`
files work as they are), scored by exact match after normalisation.

Exemplars for k-shot prompts come from a pool that never holds a test item: for a generator, items drawn
with a different seed (or an `exemplar_file`), for a file its last `exemplar_pool` rows (or an
`exemplar_file`); in both cases any pool item whose question equals a test question is dropped, because
small generators (single-digit arithmetic) repeat questions.

Worked solutions (for chain-of-thought exemplars) come from, in order: the file's `solution`, the
generator's metadata key `solution_key` (gsm_symbolic keeps its worked solution in `answer_cot`), or, for
generators that record their `expression` (basic_arithmetic, chain_sum), the expression evaluated one
operation at a time.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from alignment.core.answers import answer_kind, normalize_answer
from alignment.core.errors import ConfigError, DatasetFormatError
from alignment.core.formats import read_jsonl
from alignment.core.judges import AnswerJudge, ReasoningGymJudge
from alignment.core.paths import resolve_path

# The exemplar pool of a generator task is drawn with this seed offset, so it is a different sample.
POOL_SEED_OFFSET = 1_000_003


@dataclass
class Item:
    """One problem: what the model is asked, the reference answer, a worked solution, the checker's row."""

    question: str
    answer: str
    solution: str | None
    row: dict[str, Any]  # what the checker reads: {question, answer, metadata}


@dataclass
class Task:
    """Test items, the exemplar pool (disjoint from them), and the answer checker."""

    name: str
    source: str
    items: list[Item]
    exemplars: list[Item]
    checker: AnswerJudge
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """'number' when every reference answer is a number, else 'text' (how answers are extracted)."""
        return "number" if all(answer_kind(i.answer) == "number" for i in self.items) else "text"

    def has_solutions(self, shots: int) -> bool:
        """Whether the pool has `shots` exemplars with worked solutions (few-shot CoT needs them)."""
        return sum(e.solution is not None for e in self.exemplars) >= shots


def load_task(name: str, spec: dict[str, Any], num_items: int, pool_size: int, seed: int) -> Task:
    """A task's test items and exemplar pool (see the module docstring)."""
    num_items = spec.get("num_items", num_items)
    if "generator" in spec:
        task = _generator_task(name, spec, num_items, pool_size, int(spec.get("seed", seed)))
    else:
        task = _file_task(name, spec, num_items, pool_size)
    if "exemplar_file" in spec:
        task.exemplars = _read_items(spec["exemplar_file"], f"tasks.{name}.exemplar_file")
    test_questions = {normalize_answer(i.question) for i in task.items}
    seen: set[str] = set()
    pool = []
    for exemplar in task.exemplars:
        question = normalize_answer(exemplar.question)
        if question not in test_questions and question not in seen:
            seen.add(question)
            pool.append(exemplar)
    task.exemplars = pool
    return task


def _generator_task(name: str, spec: dict[str, Any], num_items: int, pool_size: int, seed: int) -> Task:
    import reasoning_gym

    generator = str(spec["generator"])
    options = generator_options(generator, dict(spec.get("options") or {}))
    solution_key = spec.get("solution_key", "answer_cot")
    datasets = []
    for size, item_seed in ((num_items, seed), (pool_size, seed + POOL_SEED_OFFSET)):
        try:
            datasets.append(reasoning_gym.create_dataset(generator, size=size, seed=item_seed, **options))
        except (TypeError, ValueError, AssertionError, KeyError) as err:
            raise ConfigError(f"tasks.{name}.options: {generator} refuses {options}: {err}") from None
    items, pool = ([_generator_item(entry, solution_key) for entry in ds] for ds in datasets)
    _check_expressions(name, generator, spec.get("options") or {}, items + pool)
    written = spec.get("options") or {}  # as the recipe wrote them (strings, not enum members)
    source = f"reasoning_gym:{generator}" + (f" {written}" if written else "")
    return Task(name, source, items, pool, ReasoningGymJudge(generator, options), spec)


def generator_options(generator: str, options: dict[str, Any]) -> dict[str, Any]:
    """Options from YAML as the generator's config expects them: strings become its enum members.

    Some generators type a setting as an enum (aiw's `task_types: list[TaskType]`) and fail on plain
    strings deep inside generation; a recipe can only write strings.
    """
    import enum
    import typing

    from reasoning_gym.factory import DATASETS

    hints = typing.get_type_hints(DATASETS[generator][1])
    coerced = dict(options)
    for key, value in options.items():
        hint = hints.get(key)
        inner = (
            typing.get_args(hint)[0] if typing.get_origin(hint) is list and typing.get_args(hint) else hint
        )
        if isinstance(inner, type) and issubclass(inner, enum.Enum):
            try:
                coerced[key] = [inner(v) for v in value] if isinstance(value, list) else inner(value)
            except ValueError:
                choices = ", ".join(str(m.value) for m in inner)
                raise ConfigError(f"options.{key}: expected values from {choices}, got {value!r}") from None
    return coerced


def _check_expressions(name: str, generator: str, options: dict[str, Any], items: list[Item]) -> None:
    """Refuse a generator whose items' answers disagree with their own `expression` metadata.

    reasoning-gym 0.1.25's basic_arithmetic with `allow_parentheses: false` picks a new divisor (or turns
    "/" into "*") after writing the question, so "Calculate 7 / 3." comes with the answer 49; measuring a
    model against such references would be measuring the generator.
    """
    wrong = []
    for item in items:
        expression = item.row["metadata"].get("expression")
        value = arithmetic_value(expression) if isinstance(expression, str) else None
        if (
            value is not None
            and answer_kind(item.answer) == "number"
            and value != Fraction(normalize_answer(item.answer))
        ):
            wrong.append(item)
    if wrong:
        raise ConfigError(
            f"tasks.{name}.options: {len(wrong)} of {len(items)} {generator} items with {options} have an answer "
            f"that differs from their own expression (e.g. {wrong[0].question!r} -> {wrong[0].answer}); "
            "a generator bug: with basic_arithmetic, allow_parentheses false and '/' give wrong answers, so drop "
            "'/' from operators or allow parentheses"
        )


def _generator_item(entry: dict[str, Any], solution_key: str) -> Item:
    metadata = entry.get("metadata") or {}
    solution = metadata.get(solution_key)
    if not isinstance(solution, str) and isinstance(metadata.get("expression"), str):
        solution = arithmetic_steps(metadata["expression"])
    row = {"question": entry["question"], "answer": str(entry["answer"]), "metadata": metadata}
    return Item(entry["question"], str(entry["answer"]), _clean_solution(solution), row)


def _file_task(name: str, spec: dict[str, Any], num_items: int, pool_size: int) -> Task:
    rows = _read_items(spec["file"], f"tasks.{name}.file")
    if "exemplar_file" in spec:
        items, pool = rows[:num_items], []
    else:
        if len(rows) <= pool_size:
            raise DatasetFormatError(
                f"tasks.{name}.file: {spec['file']} has {len(rows)} rows, not more than exemplar_pool "
                f"({pool_size}) whose last rows are held out as exemplars; lower exemplar_pool or give an "
                "exemplar_file"
            )
        items, pool = rows[: len(rows) - pool_size][:num_items], rows[len(rows) - pool_size :]
    return Task(name, str(spec["file"]), items, pool, AnswerJudge(), spec)


def _read_items(source: str, key: str) -> list[Item]:
    """{question|prompt, answer, solution|completion?} rows of a JSONL file, each checked, as items."""
    path = Path(resolve_path(str(source)))
    hint = " (run `alignment prepare` first)" if str(source).startswith("cache://") else ""
    if not path.is_file():
        raise DatasetFormatError(f"{key}: {path} does not exist{hint}")
    if path.suffix != ".jsonl":
        raise DatasetFormatError(f"{key}: {path}: expected a .jsonl file of {{question, answer}} rows")
    items = []
    for number, row in enumerate(read_jsonl(path), start=1):
        question = row.get("question", row.get("prompt"))
        if not isinstance(question, str) or not question.strip():
            raise DatasetFormatError(f"{path}: row {number}: key 'question': expected a non-empty string")
        answer = row.get("answer")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
            raise DatasetFormatError(
                f"{path}: row {number}: key 'answer': expected the reference answer (a string or number), "
                f"got {answer!r}"
            )
        solution = row.get("solution", row.get("completion"))
        if not isinstance(solution, str) or normalize_answer(solution) == normalize_answer(str(answer)):
            solution = None  # a completion that is only the answer is no worked solution
        checker_row = {"question": question, "answer": str(answer), "metadata": row.get("metadata") or {}}
        items.append(Item(question, str(answer), _clean_solution(solution), checker_row))
    if not items:
        raise DatasetFormatError(f"{key}: {path} has no rows")
    return items


def _clean_solution(solution: str | None) -> str | None:
    """A worked solution without its final `#### N` line (prompts end every solution the same way)."""
    if not isinstance(solution, str) or not solution.strip():
        return None
    return re.sub(r"\n?\s*####[^\n]*\s*$", "", solution.strip()).strip() or None


_OPERATORS = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
}


def arithmetic_steps(expression: str) -> str | None:
    """A worked solution of an arithmetic expression, one operation per line, in evaluation order.

    "3 + 4 * 2" gives "4 * 2 = 8", then "3 + 8 = 11". None for anything but + - * / on numbers, or when a
    step is not a whole number (a worked solution must not round).
    """
    evaluated = _evaluate(expression)
    if evaluated is None:
        return None
    steps, result = evaluated
    if result.denominator != 1 or any("/" in step.split("=")[-1] for step in steps):
        return None
    return "\n".join(steps) or None


def arithmetic_value(expression: str) -> Fraction | None:
    """The exact value of an arithmetic expression of numbers and + - * /, else None."""
    evaluated = _evaluate(expression)
    return None if evaluated is None else evaluated[1]


def _evaluate(expression: str) -> tuple[list[str], Fraction] | None:
    """(one "a op b = c" line per operation, the value), exactly (fractions), or None for anything else."""
    try:
        tree = ast.parse(expression.strip().rstrip("=").strip(), mode="eval").body
    except SyntaxError:
        return None
    steps: list[str] = []

    def value(node: ast.AST) -> Fraction | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            inner = value(node.operand)
            return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = value(node.left), value(node.right)
            if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
                return None
            symbol, apply = _OPERATORS[type(node.op)]
            result = apply(left, right)
            steps.append(f"{_number(left)} {symbol} {_number(right)} = {_number(result)}")
            return result
        return None

    result = value(tree)
    return None if result is None else (steps, result)


def _number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
