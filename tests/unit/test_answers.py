"""Answer extraction on real SmolLM2-135M-Instruct outputs (kept in fixtures/), and the formats it must read."""

import json
from pathlib import Path

import pytest

from alignment.core.answers import answers_match, extract_answer, normalize_answer, score_exact

FIXTURES = Path(__file__).parent / "fixtures" / "smollm2_outputs.jsonl"
REAL = [json.loads(line) for line in FIXTURES.read_text().splitlines()]


@pytest.mark.parametrize("case", REAL, ids=[f"{i}:{c['source']}" for i, c in enumerate(REAL)])
def test_extracts_the_stated_answer_from_real_outputs(case):
    # `expected` is the final answer a person reads in the output (None: it states none).
    assert extract_answer(case["text"], "number", case["which"]) == case["expected"]


def test_the_fixture_table_covers_the_hard_cases():
    assert len(REAL) >= 20
    assert any(c["expected"] is None for c in REAL)  # outputs that answer nothing
    assert any(c["expected"].startswith("-") for c in REAL if c["expected"])  # signs
    sources = " ".join(c["source"] for c in REAL)
    assert "few-shot CoT" in sources and "zero-shot CoT" in sources and "direct" in sources


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("There are 12 x 2 = 24 students.\n#### 1,024", "1024"),  # GSM8K marker, thousands separator
        ("so the result is \\boxed{-3.50} in total", "-3.5"),  # boxed, sign, trailing zero
        ("The answer is $1,234.05.", "1234.05"),  # currency, separator, decimals
        ("The answer is \u22127.", "-7"),  # a Unicode minus
        ("The answer is +8", "8"),
        ("The answer is N. Then 5 + 3 = 8", "8"),  # a copied placeholder is no answer: fall through
        ("First 3 + 4 = 7, then the answer is 2 + 3 = 5.", "5"),  # the result after the last '='
        ("The final answer: **42**", "42"),
        ("I think it is 0.5 or maybe .75", "0.75"),  # the last number
        ("No number at all.", None),
    ],
)
def test_formats(text, expected):
    assert extract_answer(text) == expected


def test_text_answers_and_normalisation():
    assert extract_answer("Amelia is his wife. The answer is **Wife**.", "text") == "Wife"
    assert answers_match("Wife", "wife") and not answers_match("wife", "husband")
    assert normalize_answer("1,000.00") == normalize_answer("+1000") == "1000"
    assert normalize_answer("-0") == "0"
    assert answers_match("-3.50", "-3.5") and not answers_match(None, "3")
    assert score_exact("So she has 4 + 1 = 5 sisters. The answer is 5.", "5") == 1.0
    assert score_exact("The answer is 6.", "5") == 0.0
