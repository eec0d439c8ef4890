"""`alignment reason` end to end on tiny models: every mode, every sample kept, the report, the pipeline, PPO.

The tiny decoders answer at chance; these tests check the harness: each mode runs through the real entry
point, verdicts agree with the checker, the self-consistency curve is the vote recomputed from the kept
samples, two checkpoints sit side by side, the stage runs inside a pipeline, and the answer checker works
as PPO's reward.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignment.core.config import build_config, parse_config
from alignment.core.errors import DatasetFormatError
from alignment.core.judges import load_judge
from alignment.core.logging import read_metrics
from alignment.reason.config import Config
from alignment.reason.run import run
from alignment.reason.vote import majority_vote

REPO = Path(__file__).resolve().parents[2]
TINY_RECIPE = REPO / "configs" / "reason" / "tiny.yaml"
POSITIVE = ["i loved every minute of this", "an excellent cast", "a charming story", "the acting was great"]
NEGATIVE = ["the worst movie", "a dull film", "boring slow and far too long", "a terrible plot"]


@pytest.fixture(scope="module")
def reason_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("reason-data")
    rows = []
    for split, copies in (("heldout", 3), ("train", 2)):
        for i in range(copies):
            rows += [
                {"text": f"{t} {i}", "mean_rating": 2.5, "split": split, "source": "movie"} for t in POSITIVE
            ]
            rows += [
                {"text": f"{t} {i}", "mean_rating": -2.5, "split": split, "source": "movie"} for t in NEGATIVE
            ]
    rows.append(
        {"text": "it was a film", "mean_rating": 0.2, "split": "heldout", "source": "movie"}
    )  # neutral: left out
    (folder / "snippets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    qa = [
        {"question": f"{a} + {b}?", "answer": str(a + b), "solution": f"{a} + {b} = {a + b}"}
        for a in range(4)
        for b in range(3)
    ]
    (folder / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    return folder


def tiny_run(models: dict, data: Path, out: Path, *extra: str) -> dict:
    argv = ["--config", str(TINY_RECIPE), "--models", json.dumps(models), "--output_dir", str(out)]
    argv += ["--classify_data", str(data / "snippets.jsonl"), *extra]
    return run(parse_config(Config, argv))


def test_tiny_recipe_runs_every_mode_and_keeps_every_sample(tiny_model_dir, reason_data, tmp_path):
    out = tmp_path / "reason"
    report = tiny_run({"tiny": str(tiny_model_dir)}, reason_data, out)
    assert {r["mode"] for r in report["results"]} == {
        "direct",
        "few_shot",
        "cot",
        "zero_shot_cot",
        "self_consistency",
    }
    for r in report["results"]:
        assert r["n"] == (4 if r["mode"] == "self_consistency" else 8)
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"] and r["tokens"] > 0 and r["seconds"] > 0
    for name in ("report.json", "report.md", "samples.jsonl", "plots/self_consistency.png", "config.yaml"):
        assert (out / name).is_file(), name
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    reasoning = [s for s in samples if s["kind"] == "reasoning"]
    counts = {
        m: sum(s["mode"] == m for s in reasoning)
        for m in ("direct", "few_shot", "cot", "zero_shot_cot", "self_consistency")
    }
    assert counts == {
        "direct": 8,
        "few_shot": 16,
        "cot": 16,
        "zero_shot_cot": 8,
        "self_consistency": 4,
    }  # 2 orders
    checker = load_judge("reasoning_gym:basic_arithmetic")
    for s in reasoning:  # every verdict is the checker's, on the answer that was extracted
        row = {"question": s["question"], "answer": s["reference"]}
        assert s["score"] == checker.score_answer(s["extracted"], row)
        assert s["correct"] == (s["score"] >= 1.0)
        assert s["prompt"] and "generation" in s
    # The curve is the vote over the first n kept samples, recomputed here from samples.jsonl.
    sc = [s for s in reasoning if s["mode"] == "self_consistency"]
    curve = report["self_consistency"]["tiny"]["sums"]["curve"]
    assert len(curve) == 3 and all(len(s["sample_answers"]) == 3 and len(s["generation"]) == 3 for s in sc)
    for n in range(1, 4):
        right = [
            checker.score_answer(majority_vote(s["sample_answers"][:n]), {"answer": s["reference"]}) == 1.0
            for s in sc
        ]
        assert curve[n - 1] == sum(right) / len(sc)
    assert report["sensitivity"]["tiny"]["sums"]["few_shot"]["count"] == 2
    # Classification: 16 balanced held-out snippets (the neutral one left out), each variant kept.
    by_shots = report["classification"]["tiny"]["by_shots"]
    assert sorted(by_shots) == ["0", "1", "2"]
    assert by_shots["2"]["spread"]["order"]["raw"]["count"] == 2
    assert by_shots["0"]["spread"]["label_words"]["raw"]["count"] == 2
    assert "order" not in by_shots["0"]["spread"]
    classified = [s for s in samples if s["kind"] == "classification"]
    assert len(classified) == 16 * sum(len(v["variants"]) for v in by_shots.values())
    assert sum(s["label"] for s in classified if s["variant"] == "k0/main0") == 8
    text = (out / "report.md").read_text()
    assert (
        "## Accuracy" in text and "self-consistency" in text and "In-context sentiment classification" in text
    )


def test_two_checkpoints_side_by_side_on_a_file_task(tiny_model_dir, tiny_llama_dir, reason_data, tmp_path):
    out = tmp_path / "reason"
    tasks = json.dumps({"qa": {"file": str(reason_data / "qa.jsonl")}})
    report = tiny_run(
        {"gpt2": str(tiny_model_dir), "llama": str(tiny_llama_dir)},
        reason_data,
        out,
        *["--tasks", tasks, "--modes", "direct,few_shot", "--exemplar_pool", "4", "--classify_data", "null"],
        *["--chat_template", "plain"],
    )
    assert {(r["model"], r["mode"]) for r in report["results"]} == {
        (m, mode) for m in ("gpt2", "llama") for mode in ("direct", "few_shot")
    }
    assert all(r["n"] == 8 for r in report["results"])  # 12 rows, the last 4 held out as exemplars
    header = next(
        line for line in (out / "report.md").read_text().splitlines() if line.startswith("| task | mode")
    )
    assert header == "| task | mode | gpt2 | llama |"
    first = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert first["prompt"].startswith("Question: ") and first["prompt"].endswith("Answer: The answer is")


def test_reason_runs_as_a_pipeline_stage(tiny_model_dir, reason_data, tmp_path, monkeypatch):
    # The pipeline runs a stage as `python -m alignment.cli reason <options>`; the same command line runs
    # here in-process (a subprocess would spend its time importing torch), then the shipped demo recipe
    # wires the SFT and PPO models of the demo into the stage.
    from alignment.cli import main as cli_main
    from alignment.pipeline import Config as PipelineConfig
    from alignment.pipeline import build_command, check_stage_configs, expected_outputs

    monkeypatch.chdir(REPO)
    config = build_config(
        PipelineConfig,
        {
            "run_name": "p",
            "output_root": str(tmp_path),
            "stages": ["reason"],
            "recipes": {"reason": str(TINY_RECIPE)},
            "inputs": {"reason": {"models": {"tiny": str(tiny_model_dir)}}},
            "overrides": {
                "reason": {"classify_data": None, "modes": ["direct", "self_consistency"], "num_items": 4}
            },
            "outputs": {"reason": ["{run_dir}/report.json"]},
        },
    )
    check_stage_configs(config)  # what the pipeline validates before its first stage
    command = build_command(config, "reason")
    assert command[1:4] == ["-m", "alignment.cli", "reason"]
    cli_main(command[3:])
    (report_file,) = expected_outputs(config, "reason")
    report = json.loads(report_file.read_text())
    assert report_file == tmp_path / "p" / "reason" / "report.json"
    assert {r["mode"] for r in report["results"]} == {"direct", "self_consistency"}
    demo = parse_config(
        PipelineConfig, ["--config", str(REPO / "configs/pipeline/tiny-sentiment-reason.yaml")]
    )
    words = build_command(demo, "reason")
    models = json.loads(words[words.index("--models") + 1])
    assert models == {"sft": "runs/tiny-sentiment/sft/model", "ppo": "runs/tiny-sentiment/ppo/model"}
    assert (
        demo.stages[-1] == "reason"
        and demo.stages[:-1]
        == parse_config(
            PipelineConfig, ["--config", str(REPO / "configs/pipeline/tiny-sentiment.yaml")]
        ).stages
    )


def test_ppo_with_the_answer_checker_as_reward(tiny_model_dir, tmp_path):
    from alignment.ppo.config import Config as PPOConfig
    from alignment.ppo.train import run as run_ppo

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"{a} + 2 =", "answer": str(a + 2)}) + "\n" for a in range(8))
    )

    def ppo(out: Path, reward_fn: str):
        values = dict(
            output_dir=str(out),
            model=str(tiny_model_dir),
            reward_model=None,
            reward_fn=reward_fn,
            train_data=str(prompts),
            eval_data=None,
            batch_size=8,
            mini_batch_size=4,
            ppo_epochs=1,
            max_new_tokens=6,
            max_steps=2,
            progress_bar=False,
            sample_steps=0,
            value_model="policy_head",
            value_head_init="fresh",
        )
        return run_ppo(build_config(PPOConfig, values))

    for spec in ("answer", "reasoning_gym:basic_arithmetic"):
        ppo(tmp_path / spec.replace(":", "_"), spec)
        rows = [r for r in read_metrics(tmp_path / spec.replace(":", "_")) if "score/mean" in r]
        assert [r["step"] for r in rows] == [1, 2]
        assert all(0.0 <= r["score/mean"] <= 1.0 for r in rows)
    prompts.write_text(json.dumps({"prompt": "1 + 2 ="}) + "\n")  # rows without an answer reach the judge
    with pytest.raises(DatasetFormatError, match="no key 'answer'"):
        ppo(tmp_path / "no-answer", "answer")
