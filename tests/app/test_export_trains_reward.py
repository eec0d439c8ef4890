"""Labels collected through the app train a reward model with the reward stage (reward.train.run)."""

from __future__ import annotations

import json

import httpx
import torch
from app_helpers import ADMIN, LABELERS, api_client, call, login, make_config
from safetensors.torch import load_file

from alignment.core.config import parse_config
from alignment.core.formats import load_dataset_as
from alignment.core.logging import read_metrics

GOOD = ["wonderful", "great", "loved", "excellent", "charming"]
BAD = ["dull", "terrible", "boring", "worst", "slow"]


def test_exported_pairs_train_the_reward_model(tmp_path, running_app, tiny_model_dir):
    from reward.train import Config, run

    # 12 items of 3 candidates with 0, 1 or 2 positive words; two labelers prefer more positive words.
    items = []
    for i in range(12):
        texts = [
            f"the film was {GOOD[(i + k) % 5] if k else BAD[i % 5]} and {GOOD[i % 5] if k == 2 else BAD[(i + k) % 5]}"
            for k in range(3)
        ]
        items.append({"prompt": f"review {i}:", "completions": texts})
    items_file = tmp_path / "sentiment_items.jsonl"
    items_file.write_text("".join(json.dumps(r) + "\n" for r in items))
    config = make_config(tmp_path, n_items=0, labelers=2, overlap=2, items_path=str(items_file))
    _, url = running_app(config)

    positives = {text: sum(word in text for word in GOOD) for item in items for text in item["completions"]}
    with httpx.Client() as http:
        for name, password in LABELERS[:2]:
            token = login(http, url, name, password)
            payload = call(http, url, "next_item", token=token)[1]
            while payload["item"] is not None:
                item = payload["item"]
                ranks = [3 - positives[text] for text in item["candidates"]]  # most positive = rank 1
                ok, payload = call(http, url, "submit", item["item_id"], "rank", ranks, "", token=token)
                assert ok, payload

    client, _ = api_client(url, *ADMIN)
    summary = client.predict(False, api_name="/export")
    assert summary["rankings"] == 24 and summary["pairs"] == 72
    assert summary["agreement"]["overall"]["pairwise_agreement"] == 1.0
    assert summary["agreement"]["overall"]["krippendorff_alpha_ordinal"] == 1.0
    pairs_file = summary["files"]["pairs"]
    pairs, _ = load_dataset_as(pairs_file, "pairs")
    assert all(positives[row["chosen"]] > positives[row["rejected"]] for row in pairs)
    # The rankings file is read by the reward stage too (expanded to the same 72 pairs).
    from reward.data import load_preference_file

    assert len(load_preference_file(summary["files"]["rankings"])) == 72

    reward_config = parse_config(
        Config,
        [
            "--config",
            "configs/reward/tiny.yaml",
            "--model",
            str(tiny_model_dir),
            "--output_dir",
            str(tmp_path / "rm"),
            "--train_data",
            pairs_file,
            "--eval_fraction",
            "0.5",
            "--max_steps",
            "4",
            "--logging_steps",
            "1",
            "--learning_rate",
            "3e-3",
        ],
    )
    metrics = run(reward_config)
    assert metrics["num_pairs"] > 0
    assert [r["loss"] for r in read_metrics(reward_config.run_dir) if "loss" in r]
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(reward_config.run_dir / "model" / "model.safetensors")
    name = "transformer.h.0.attn.c_attn.weight"
    assert not torch.allclose(before[name], after[name])
