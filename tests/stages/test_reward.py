"""Stage 2 end to end on tiny models: trains, logs, evaluates by rating gap, saves a loadable reward model."""

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from alignment.core.config import ConfigError, parse_config
from alignment.core.formats import write_jsonl
from alignment.core.logging import read_metrics
from reward.model import load_reward_model, load_reward_stats, score_texts
from reward.train import Config, run

POSITIVE = ["wonderful", "great", "loved", "excellent", "delightful", "charming", "happy", "good"]
NEGATIVE = ["dull", "terrible", "bad", "worst", "boring", "slow", "sad", "grey"]
FILLER = ["the", "movie", "was", "a", "story", "film", "and", "plot", "acting", "day"]


def write_fake_snippets(path: Path, n: int = 300) -> Path:
    """Snippets shaped like cache://datasets/sentiment/snippets.jsonl, rated by their sentiment words."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        n_pos, n_neg = rng.randint(0, 3), rng.randint(0, 3)
        words = rng.choices(POSITIVE, k=n_pos) + rng.choices(NEGATIVE, k=n_neg) + rng.choices(FILLER, k=4)
        rng.shuffle(words)
        rating = max(-4.0, min(4.0, 1.2 * (n_pos - n_neg) + rng.gauss(0, 0.3)))
        rows.append(
            {
                "source": ["movie", "amazon", "nyt", "tweets"][i % 4],
                "id": str(i),
                "text": " ".join(words),
                "mean_rating": rating,
                "ratings": [round(rating)] * 3,
                "split": "heldout" if i % 8 == 0 else "train",
            }
        )
    write_jsonl(rows, path)
    return path


def tiny_argv(model_dir, tmp_path, *extra):
    return [
        "--config",
        "configs/reward/tiny.yaml",
        "--model",
        str(model_dir),
        "--output_dir",
        str(tmp_path / "rm"),
        "--snippets_file",
        str(write_fake_snippets(tmp_path / "s.jsonl")),
        "--max_train_pairs",
        "320",
        "--max_eval_pairs",
        "120",
        "--learning_rate",
        "3e-3",
        "--logging_steps",
        "5",
        *extra,
    ]


def test_shipped_reward_recipes_parse():
    for path in sorted(Path("configs/reward").glob("*.yaml")):
        config = parse_config(Config, ["--config", str(path)])
        assert config.max_length >= 8, path
    with pytest.raises(ConfigError, match="sources"):
        parse_config(Config, ["--sources", "movie,books"])


def test_reward_stage_trains_and_saves_a_scoring_model(tmp_path, tiny_model_dir):
    config = parse_config(
        Config, tiny_argv(tiny_model_dir, tmp_path, "--max_steps", "40", "--save_steps", "20")
    )
    metrics = run(config)

    rows = read_metrics(config.run_dir)
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) >= 4 and losses[-1] < losses[0]
    assert any("eval_loss" in r and "eval_accuracy_gap_ge_1" in r for r in rows)
    assert metrics["pairwise_accuracy"] > 0.7 and metrics["accuracy_gap_ge_2"] >= metrics["accuracy_gap_lt_1"]
    assert (
        metrics["count_gap_lt_1"] + metrics["count_gap_1_2"] + metrics["count_gap_ge_2"]
        == metrics["num_pairs"]
    )

    model_dir = config.run_dir / "model"
    before, after = (
        load_file(tiny_model_dir / "model.safetensors"),
        load_file(model_dir / "model.safetensors"),
    )
    name = "transformer.h.0.attn.c_attn.weight"
    assert not torch.allclose(before[name], after[name])  # the backbone trained, not only the head
    stats = load_reward_stats(str(model_dir))
    assert set(stats) == {"mean", "std", "eval_accuracy", "accuracy_gap_ge_1", "train_pairs", "eval_pairs"}
    assert stats["std"] > 0 and stats["eval_accuracy"] == pytest.approx(metrics["pairwise_accuracy"])
    assert stats["accuracy_gap_ge_1"] == pytest.approx(metrics["accuracy_gap_ge_1"])
    assert "pairwise_accuracy" in (model_dir / "README.md").read_text()

    model, tokenizer = load_reward_model(str(model_dir))
    good, bad = score_texts(
        model, tokenizer, ["a wonderful great charming film", "a terrible boring dull film"]
    )
    assert good > bad
    assert (config.run_dir / "checkpoints" / "checkpoint-40").is_dir()

    # a run killed while saving checkpoint-40 (weights written, trainer state not yet) continues from
    # checkpoint-20: the half-saved one is named, skipped and cleared, and no step is trained twice
    (config.run_dir / "checkpoints" / "checkpoint-40" / "trainer_state.json").unlink()
    shutil.rmtree(model_dir)
    run(config)
    steps = [r["step"] for r in read_metrics(config.run_dir) if "loss" in r]
    assert steps == list(range(5, 45, 5))  # the rows of the killed run after step 20 were dropped
    assert (model_dir / "model.safetensors").exists()
    # a changed config does not silently resume the old run's checkpoints
    with pytest.raises(ConfigError, match="max_steps: 40 -> 45"):
        run(
            parse_config(
                Config, tiny_argv(tiny_model_dir, tmp_path, "--max_steps", "45", "--save_steps", "20")
            )
        )


def test_reward_stage_on_k_way_rankings(tmp_path, tiny_model_dir):
    rng = random.Random(1)
    rows = []
    for q in range(40):
        texts = [" ".join(rng.choices(POSITIVE, k=k) + rng.choices(NEGATIVE, k=3 - k)) for k in range(4)]
        ranks = [4 - k for k in range(4)]
        if q % 3 == 0:
            ranks[0] = ranks[1]  # ties are allowed
        order = rng.sample(range(4), 4)
        rows.append(
            {
                "prompt": f"review {q}: ",
                "completions": [texts[i] for i in order],
                "ranks": [ranks[i] for i in order],
            }
        )
    write_jsonl(rows, tmp_path / "rankings.jsonl")
    config = parse_config(
        Config,
        tiny_argv(
            tiny_model_dir,
            tmp_path,
            "--train_data",
            str(tmp_path / "rankings.jsonl"),
            "--eval_fraction",
            "0.2",
            "--max_steps",
            "6",
        ),
    )
    metrics = run(config)
    assert metrics["num_pairs"] > 0 and metrics["count_gap_lt_1"] == 0  # rankings carry no rating gap
    assert any("loss" in r for r in read_metrics(config.run_dir))
    assert json.loads((config.run_dir / "model" / "reward_stats.json").read_text())["eval_accuracy"] >= 0


def test_a_grouped_batch_scores_the_same_pairs_as_a_pairwise_batch(tiny_model_dir):
    """One ranking as one row (each text once) gives every pair exactly the rewards the pair rows give."""
    from reward.data import ranking_to_pairs, tokenize_comparisons
    from reward.model import build_reward_model, encode_texts
    from reward.train import ComparisonCollator, pair_rewards

    torch.manual_seed(0)
    model, tokenizer = build_reward_model(str(tiny_model_dir))
    model.eval()
    pairs = ranking_to_pairs(
        "Q: ", ["a good film", "dull", "the best day ever", "bad"], [2, 1, 4, 3], "row 1"
    )
    pairs += ranking_to_pairs("R: ", ["yes", "no thanks"], [1, 2], "row 2")

    def tokenize(texts, max_length):
        return encode_texts(tokenizer, texts, max_length, encoder=False)

    collate = ComparisonCollator(tokenizer.pad_token_id)
    rewards = {}
    for grouped in (True, False):
        rows, _ = tokenize_comparisons(pairs, tokenize, 32, 0.0, "train", grouped=grouped)
        batch = collate(rows)
        assert batch["input_ids"].shape[0] == (6 if grouped else 2 * len(pairs))
        with torch.no_grad():
            rewards[grouped] = pair_rewards(model, batch)
        assert batch["weight"].tolist() == pytest.approx([p["weight"] for p in pairs])
    for grouped_side, pair_side in zip(rewards[True], rewards[False]):
        assert torch.allclose(grouped_side, pair_side, atol=1e-5)
