"""`alignment evaluate` end to end on tiny models: report files, win rates, KL, user prompt files."""

from __future__ import annotations

import json
import math

import pytest

from alignment.core.config import ConfigError, parse_config
from alignment.evaluate.run import Config, main


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, tiny_model_dir):
    """A tiny decoder reward model saved the way reward/model.py expects, with reward_stats.json."""
    import torch

    from reward.model import build_reward_model

    torch.manual_seed(0)
    model, tokenizer = build_reward_model(str(tiny_model_dir))
    folder = tmp_path_factory.mktemp("tiny-rm")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "reward_stats.json").write_text(json.dumps({"mean": 0.0, "std": 1.0, "eval_accuracy": 0.625}))
    return folder


def test_evaluate_writes_a_report_on_a_user_prompt_file(
    tmp_path, tiny_model_dir, tiny_llama_dir, reward_dir, sentences
):
    prompts = tmp_path / "my_prompts.txt"
    prompts.write_text("the movie was\n\na dull film | with\ni loved\nsad news\nhappy people\n")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": s, "source": "movie"}) + "\n" for s in sentences))
    runs = tmp_path / "runs"
    # Stage folders the report reads: training curves with assorted key names and a pipeline timing.
    sft_dir = runs / "demo" / "sft"
    sft_dir.mkdir(parents=True)
    (sft_dir / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": i, "loss": 3.0 - 0.1 * i, "eval_loss": 3.1 - 0.1 * i}) + "\n"
            for i in range(5)
        )
    )
    (sft_dir / "timing.json").write_text(json.dumps({"stage": "sft", "wall_s": 12.5}))
    (runs / "demo" / "pipeline").mkdir()  # the pipeline's own summary is not a stage timing
    (runs / "demo" / "pipeline" / "timing.json").write_text(
        json.dumps({"stages": {}, "total_s": 1, "wall_s": 99})
    )
    ppo_dir = runs / "demo" / "ppo"
    ppo_dir.mkdir()
    (ppo_dir / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": i, "reward/mean": 0.1 * i, "objective/kl": 0.01 * i}) + "\n" for i in range(5)
        )
        # held-out rows as PPO logs them: the over-optimization plot draws them beside best-of-n; step 2 twice,
        # as a resumed run logs it (the later row counts); a held-out reward model chose step 2's policy
        + "".join(
            json.dumps(
                {
                    "step": i,
                    "eval/gold": gold,
                    "eval/score_raw": 0.2 * i,
                    "eval/kl": 0.09 * i * i,
                    "eval/sqrt_kl": 0.3 * i,
                }
            )
            + "\n"
            for i, gold in ((0, 0.1), (2, 0.9), (2, 0.6), (4, 0.4))
        )
        + json.dumps({"step": 4, "eval/selected_step": 2})
        + "\n"
        + '{"step": 5, "kl": '  # a half-written last line must not break the report
    )
    (ppo_dir / "config.yaml").write_text(f"eval_judge: classifier:{reward_dir}\nselect_by: gold\n")

    models = json.dumps(
        {"sft": str(tiny_model_dir), "ppo": str(tiny_llama_dir), "sft_copy": str(tiny_model_dir)}
    )
    main(
        [
            "--models",
            models,
            "--baseline",
            "sft",
            "--reference",
            "sft",
            "--reward_model",
            str(reward_dir),
            "--prompts",
            str(prompts),
            "--perplexity_data",
            str(corpus),
            "--perplexity_source",
            "movie",
            "--max_new_tokens",
            "6",
            "--batch_size",
            "3",
            "--run_name",
            "demo",
            "--output_root",
            str(runs),
            "--judges",
            "vader,alignment.core.judges:vader_compound",
            "--best_of_n",
            "4",
            "--best_of_n_prompts",
            "3",
        ]
    )

    out = runs / "demo" / "evaluate"
    report = json.loads((out / "report.json").read_text())
    assert report["num_prompts"] == 5  # the blank line is skipped
    assert set(report["models"]) == {"sft", "ppo", "sft_copy"}
    for name, m in report["models"].items():
        for key in (
            "gold_score",
            "rm_score",
            "kl_to_ref",
            "perplexity",
            "distinct_2",
            "mean_length",
            "win_rate_vs_baseline",
            "win_rate_vs_baseline_rm",
        ):
            assert isinstance(m[key], float), (name, key)
        assert -1.0 <= m["gold_score"] <= 1.0 and 0.0 <= m["distinct_2"] <= 1.0 and m["perplexity"] > 1.0
    sft, copy, ppo = report["models"]["sft"], report["models"]["sft_copy"], report["models"]["ppo"]
    # The same weights sampled with the same seed: identical outputs, so exactly 0.5 and zero KL.
    assert sft["win_rate_vs_baseline"] == copy["win_rate_vs_baseline"] == 0.5
    assert copy["win_rate_vs_baseline_rm"] == 0.5
    assert sft["kl_to_ref"] == pytest.approx(0.0, abs=1e-5) and copy["kl_to_ref"] == pytest.approx(
        0.0, abs=1e-5
    )
    assert abs(ppo["kl_to_ref"]) > 1e-3
    assert copy["perplexity"] == pytest.approx(sft["perplexity"])
    assert report["reward_model"]["eval_accuracy"] == 0.625
    assert report["timings_s"]["sft"] == 12.5 and report["timings_s"]["evaluate"] > 0
    assert report["timings_s"]["total"] == pytest.approx(12.5 + report["timings_s"]["evaluate"], abs=0.02)
    assert {c["name"] for c in report["checks"]} == {"gold_gain", "distinct_2_ratio", "perplexity_ratio"}

    curve = report["best_of_n"]  # from the KL reference (sft), 4 samples on each of 3 prompts
    assert [p["n"] for p in curve] == [1, 2, 4] and {p["model"] for p in curve} == {"sft"}
    assert [p["kl"] for p in curve] == pytest.approx([0.0, math.log(2) - 0.5, math.log(4) - 0.75])
    proxies = [p["proxy"] for p in curve]  # the expected maximum of n can only grow with n
    assert proxies[0] <= proxies[1] + 1e-9 <= proxies[2] + 2e-9
    for plot in (
        "plots/curves_sft.png",
        "plots/curves_ppo.png",
        "plots/gold_vs_kl.png",
        "plots/overoptimization.png",
    ):
        assert plot in report["plots"]
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    held_out = report["ppo_held_out"]["ppo"]
    assert [(e["step"], e["gold"]) for e in held_out["evaluations"]] == [(0, 0.1), (2, 0.6), (4, 0.4)]
    assert (
        held_out["selected_step"] == 2 and held_out["last_step"] == 4 and held_out["judge_accuracy"] == 0.625
    )
    markdown = (out / "report.md").read_text()
    assert "`ppo/model` holds the policy of step 2 of 4" in markdown
    assert "held-out pairwise accuracy 0.625" in markdown and "| 2 | 0.36 | 0.4 | 0.6 | yes |" in markdown
    assert "| sft_copy |" in markdown and "## Checks" in markdown and "## Best-of-n from `sft`" in markdown
    assert ("PASS" in markdown or "FAIL" in markdown) and "a dull film \\| with" in markdown
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 15 and {"prompt", "model", "response", "gold", "rm", "kl"} <= set(samples[0])


def test_evaluate_config_errors_name_the_key(tmp_path, capsys):
    for argv, key in (([], "models"), (["--models", "{a: x}", "--baseline", "b"], "baseline")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"alignment evaluate: error: {key}:") and "\n" not in error
    with pytest.raises(ConfigError, match="temperature"):
        parse_config(Config, ["--temperature", "-1"])
    with pytest.raises(ConfigError, match="judges"):
        parse_config(Config, ["--models", "{a: x}", "--judges", "gpt4"])
    with pytest.raises(ConfigError, match="best_of_n: expected 0 .off. or a power of 2"):
        parse_config(Config, ["--best_of_n", "6", "--reward_model", "rm"])
    with pytest.raises(ConfigError, match="reward_model: expected a reward model folder"):
        parse_config(Config, ["--best_of_n", "4"])
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(SystemExit):
        main(["--models", "{a: x}", "--prompts", str(missing), "--output_root", str(tmp_path)])
    assert "nope.jsonl" in capsys.readouterr().err
