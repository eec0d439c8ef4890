"""Reasoning tasks: exemplars never include a test item, worked solutions, and the answer checkers as judges."""

import json

import pytest

from alignment.core.errors import ConfigError, DatasetFormatError
from alignment.core.judges import check_judge_spec, load_judge, score
from alignment.reason.config import check_task_spec
from alignment.reason.prompts import Prompter, mode_prompt
from alignment.reason.tasks import arithmetic_steps, load_task

# Single-digit sums have few distinct questions, so an independent pool repeats test questions.
SUMS = {
    "generator": "basic_arithmetic",
    "options": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "allow_negation": False},
}


def test_generator_exemplars_never_include_a_test_item():
    import reasoning_gym

    task = load_task("sums", SUMS, num_items=150, pool_size=150, seed=3)
    test_questions = {item.question for item in task.items}
    assert not {e.question for e in task.exemplars} & test_questions
    # The filter had work to do: the raw pool does repeat test questions.
    raw_pool = reasoning_gym.create_dataset(
        "basic_arithmetic", size=150, seed=3 + 1_000_003, **SUMS["options"]
    )
    assert {entry["question"] for entry in raw_pool} & test_questions
    assert len(task.exemplars) < 150
    # and no k-shot prompt shows its own question among the exemplars
    prompter = Prompter(tokenizer=None, chat=False)
    for item in task.items:
        prompt = mode_prompt(prompter, "few_shot", item.question, task.exemplars[:4])
        assert prompt.count(item.question) == 1


def test_file_exemplars_are_the_held_out_rows_minus_repeats(tmp_path):
    rows = [{"question": f"q{i}", "answer": str(i), "solution": f"s{i}"} for i in range(10)]
    rows.append({"question": "q1", "answer": "1"})  # a repeat of a test question in the pool region
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task("t", {"file": str(path)}, num_items=100, pool_size=3, seed=0)
    assert [i.question for i in task.items] == [f"q{i}" for i in range(8)]
    assert [e.question for e in task.exemplars] == ["q8", "q9"]  # "q1" dropped from the pool


def test_worked_solutions():
    assert arithmetic_steps("3 + 4 * 2") == "4 * 2 = 8\n3 + 8 = 11"
    assert arithmetic_steps("( 56 + -33 ) - 84") == "56 + -33 = 23\n23 - 84 = -61"
    assert arithmetic_steps("7 / 2 * 2") is None  # would show a fraction
    task = load_task("gsm", {"generator": "gsm_symbolic"}, num_items=2, pool_size=2, seed=1)
    assert all(e.solution and "####" not in e.solution for e in task.exemplars)


def test_missing_answer_names_the_row(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n{"question": "b"}\n')
    with pytest.raises(DatasetFormatError, match="row 2: key 'answer'"):
        load_task("t", {"file": str(path)}, num_items=10, pool_size=0, seed=0)


def test_task_spec_errors_name_the_key():
    with pytest.raises(
        ConfigError, match="tasks.x.generator: unknown reasoning-gym generator 'basic_arithmetc'"
    ):
        check_task_spec("x", {"generator": "basic_arithmetc"})
    with pytest.raises(ConfigError, match="tasks.x: expected exactly one of"):
        check_task_spec("x", {"generator": "aiw", "file": "f.jsonl"})
    with pytest.raises(ConfigError, match="tasks.x: unknown key 'optons'"):
        check_task_spec("x", {"generator": "aiw", "optons": {}})


def test_answer_judges_give_exactly_one_for_a_right_answer():
    # A real SmolLM2-135M-Instruct few-shot CoT output (configs/reason/smollm2.yaml run).
    response = "4 - 9 = -5.\nThe answer is -5."
    for spec in ("answer", "reasoning_gym:basic_arithmetic"):
        check_judge_spec(spec, "reward_fn")
        judge = load_judge(spec, "reward_fn")
        assert judge.needs_reference
        right = score(judge, "Calculate 4 - 9.", response, {"prompt": "Calculate 4 - 9.", "answer": "-5"})
        wrong = score(judge, "Calculate 4 - 9.", response, {"prompt": "Calculate 4 - 9.", "answer": "5"})
        assert right == 1.0 and type(right) is float
        assert wrong < 1.0
    assert score(load_judge("answer"), "q", "So the total is 1,000.", {"answer": 1000}) == 1.0
    with pytest.raises(ConfigError, match="unknown reasoning-gym generator"):
        check_judge_spec("reasoning_gym:nope", "reward_fn")
