"""`alignment iterate` on tiny models: two rounds, interrupted twice, resumed without redoing a finished step.

Each round runs reward, PPO and evaluation as their own processes (the real commands), so this is one of the
suite's slower tests; it checks everything the loop promises in one run.
"""

import json
from pathlib import Path

import pytest
import yaml
from ranking_helpers import pair_count

from alignment.core.config import build_config
from alignment.core.errors import DatasetFormatError
from alignment.core.formats import read_jsonl
from alignment.core.logging import read_metrics
from alignment.iterate.config import Config
from alignment.iterate.run import RoundStageFailed, run

JUDGES = """
def count_e(text):
    return float(text.count("e")) / 4.0
"""


@pytest.fixture()
def setting(tmp_path, tiny_model_dir, sentences, monkeypatch):
    from reward.model import build_reward_model

    (tmp_path / "iterate_test_judges.py").write_text(JUDGES)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the round's stage processes import the judge too
    model, tokenizer = build_reward_model(str(tiny_model_dir))
    rm_dir = tmp_path / "rm0"
    model.save_pretrained(rm_dir)
    tokenizer.save_pretrained(rm_dir)
    (rm_dir / "reward_stats.json").write_text(json.dumps({"mean": 0.0, "std": 1.0, "eval_accuracy": 0.5}))
    prompts = tmp_path / "prompts.jsonl"

    def write_prompts(count):
        rows = [{"prompt": " ".join(s.split()[:3]) + f" {i}"} for i, s in enumerate((sentences * 2)[:count])]
        prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))

    judge = "iterate_test_judges:count_e"

    def make(**overrides):
        values = dict(
            run_name="it",
            output_root=str(tmp_path / "runs"),
            sft_model=str(tiny_model_dir),
            policy=str(tiny_model_dir),
            reward_model=str(rm_dir),
            rounds=2,
            prompts=str(prompts),
            prompts_per_round=4,
            completions_per_prompt=3,
            heldout_fraction=0.25,
            labeler_judge=judge,
            prompt_template=None,
            use_chat_template=False,
            max_new_tokens=6,
            recipes={},
            overrides={
                "reward": {
                    "max_steps": 2,
                    "per_device_train_batch_size": 4,
                    "logging_steps": 1,
                    "save_steps": 1000,
                    "max_length": 32,
                },
                "ppo": {
                    "train_data": str(prompts),
                    "eval_data": str(prompts),
                    "eval_judge": judge,
                    "eval_steps": 1,
                    "select_by": "gold",  # each round carries on with its best held-out step's policy
                    "max_eval_samples": 4,
                    "batch_size": 4,
                    "mini_batch_size": 2,
                    "ppo_epochs": 1,
                    "max_new_tokens": 6,
                    "max_steps": 2,
                    "value_head_init": "fresh",
                    "progress_bar": False,
                    "sample_steps": 0,
                    "normalize_reward": False,
                },
                "evaluate": {
                    "prompts": str(prompts),
                    "max_prompts": 4,
                    "judges": [judge],
                    "perplexity_data": None,
                    "max_new_tokens": 6,
                    "batch_size": 4,
                    "best_of_n": 4,
                    "best_of_n_prompts": 2,
                },
            },
        )
        values.update(overrides)
        return build_config(Config, values)

    return make, write_prompts, tmp_path / "runs" / "it" / "iterate"


def mtimes(folder: Path) -> dict[str, float]:
    return {
        p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.log")) + sorted(folder.glob("*.jsonl"))
    }


def test_rounds_resume_and_every_ranking_reaches_the_reward_model_once(setting):
    make, write_prompts, out = setting
    write_prompts(5)  # enough for round 1 only: round 2 stops at its sampling step
    with pytest.raises(DatasetFormatError, match="round 2 needs prompts 5..8"):
        run(make())
    round1 = out / "round-1"
    assert set(json.loads((round1 / "state.json").read_text())["done"]) == {
        "sample",
        "label",
        "reward",
        "rm_accuracy",
        "ppo",
        "evaluate",
    }
    round1_files = mtimes(round1)

    write_prompts(12)
    broken = make()
    broken.overrides["evaluate"]["max_new_tokens"] = 0  # round 2's evaluation now fails (a config error)
    with pytest.raises(RoundStageFailed, match="round 2: stage 'evaluate' failed"):
        run(broken)
    round2 = out / "round-2"
    assert mtimes(round1) == round1_files  # round 1 was not run again
    assert set(json.loads((round2 / "state.json").read_text())["done"]) == {
        "sample",
        "label",
        "reward",
        "rm_accuracy",
        "ppo",
    }
    round2_files = mtimes(round2)

    report = run(make())
    after = mtimes(round2)
    assert mtimes(round1) == round1_files
    assert {k: v for k, v in after.items() if k != "evaluate.log"} == {
        k: v for k, v in round2_files.items() if k != "evaluate.log"
    }  # only the failed evaluation ran again

    # Every ranking: tagged with its round, drawn on that round's fresh prompts, used for training once.
    rankings = {r: read_jsonl(out / f"round-{r}" / "rankings.jsonl") for r in (1, 2)}
    heldout = {r: read_jsonl(out / f"round-{r}" / "rankings_heldout.jsonl") for r in (1, 2)}
    union = read_jsonl(round2 / "rankings_train_all.jsonl")
    assert all(row["round"] == r for r in (1, 2) for row in rankings[r])
    assert not {row["prompt"] for row in rankings[1]} & {row["prompt"] for row in rankings[2]}
    trained = {r: [row for row in rankings[r] if row not in heldout[r]] for r in (1, 2)}
    assert heldout[1] and heldout[2] and trained[1] and trained[2]
    assert sorted(map(json.dumps, union)) == sorted(map(json.dumps, trained[1] + trained[2]))
    stats = json.loads((round2 / "reward" / "model" / "reward_stats.json").read_text())
    assert stats["train_pairs"] == pair_count(trained[1]) + pair_count(trained[2])
    assert stats["eval_pairs"] == pair_count(heldout[2])

    # Round 2 starts from round 1's policy and reward model; PPO's KL stays to the SFT model.
    ppo2 = yaml.safe_load((round2 / "ppo" / "config.yaml").read_text())
    assert ppo2["model"] == str(round1 / "ppo" / "model") and ppo2["reference_model"] == make().sft_model
    reward2 = yaml.safe_load((round2 / "reward" / "config.yaml").read_text())
    assert reward2["model"] == str(round1 / "reward" / "model")

    # The report: one row per round, the best-of-n baseline, the over-optimization plot.
    assert [row["round"] for row in report["rounds"]] == [1, 2]
    for row in report["rounds"]:
        assert 0.0 <= row["rm_accuracy_before"] <= 1.0 and 0.0 <= row["rm_accuracy_after"] <= 1.0
        assert isinstance(row["gold"], float) and isinstance(row["kl_to_sft"], float)
        evals = [r for r in read_metrics(out / f"round-{row['round']}" / "ppo") if "eval/gold" in r]
        best = max(evals, key=lambda r: r["eval/gold"])["step"]  # the first of equals, as PPO keeps it
        assert row["ppo_step_kept"] == f"{best} of 2 (gold)"
    rounds_table = (out / "report.md").read_text().split("Best-of-n")[0]
    assert rounds_table.count("\n| 1 |") == rounds_table.count("\n| 2 |") == 1
    assert (out / "plots" / "overoptimization.png").read_bytes()[:4] == b"\x89PNG"
    assert [p["n"] for p in report["best_of_n"]] == [1, 2, 4]
