"""`alignment iterate` with `labeler: app`: people rank a round's samples in the labeling app.

The unit tests drive the waiting loop on a store; the end-to-end test serves the app in this process, lets
scripted labelers (gradio_client, in threads) rank every item, and runs the loop up to its reward step.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest
import yaml
from app_helpers import ADMIN, LABELERS, api_client, free_port
from gradio_client.exceptions import AppError
from ranking_helpers import pair_count

from alignment.core.config import ConfigError, build_config, parse_config
from alignment.core.formats import read_jsonl
from alignment.iterate import app_labels
from alignment.iterate import run as iterate_run
from alignment.iterate.config import Config
from reward.app.config import LabelConfig
from reward.app.store import LabelStore


def write_app_config(tmp_path: Path, overlap: int = 2) -> Path:
    """The labeling app's YAML, as the person running the app would write it."""
    users = [{"name": ADMIN[0], "role": "admin", "password": ADMIN[1]}]
    users += [{"name": name, "role": "labeler", "password": pw} for name, pw in LABELERS[:2]]
    values = {
        "output_dir": str(tmp_path / "label"),
        "db_path": str(tmp_path / "label" / "labels.sqlite"),
        "users": users,
        "overlap": overlap,
        "port": free_port(),
        "guidelines_path": "data/guidelines.md",
    }
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_config_checks_the_app_keys(tmp_path):
    app_yaml = write_app_config(tmp_path, overlap=2)
    with pytest.raises(ConfigError, match="app_config"):
        Config(labeler="app")
    with pytest.raises(ConfigError, match="app_config: .*does not exist"):
        Config(labeler="app", app_config=str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"app_overlap: expected 1 to the app's overlap \(2"):
        Config(labeler="app", app_config=str(app_yaml), app_overlap=3)
    with pytest.raises(ConfigError, match="completions_per_prompt"):
        Config(labeler="app", app_config=str(app_yaml), completions_per_prompt=10)
    with pytest.raises(ConfigError, match="app_poll_seconds"):
        Config(labeler="app", app_config=str(app_yaml), app_poll_seconds=0)
    with pytest.raises(ConfigError, match="unknown key 'app_overlapp'.*did you mean 'app_overlap'"):
        build_config(Config, {"labeler": "app", "app_config": str(app_yaml), "app_overlapp": 1})
    with pytest.raises(ConfigError, match="labeler"):
        build_config(Config, {"labeler": "crowd"})
    assert Config(labeler="app", app_config=str(app_yaml), app_overlap=1).app_overlap == 1
    assert Config().labeler == "simulated"


def rank_one(store: LabelStore, labeler: str) -> bool:
    """`labeler` ranks the next item the app would give them; False when none is left for them."""
    item = store.next_assignment(labeler, overlap=2, stale_after_s=3600)
    if item is None:
        return False
    store.add_record(labeler, item["item_id"], "rank", list(range(1, len(item["candidates"]) + 1)), "")
    return True


def test_waiting_ends_when_every_item_has_its_rankings_or_the_round_is_closed(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    for name in ("ann", "bob"):
        store.add_user(name, "labeler", "x")
    rows = [{"prompt": f"p{i}", "completions": ["a", "b", "c"], "round": 1} for i in range(3)]
    assert app_labels.load_round(store, rows, 1, "run") == {"items": 3, "added": 3, "already_loaded": 0}
    assert app_labels.load_round(store, rows, 1, "run")["already_loaded"] == 3
    with pytest.raises(ConfigError, match="its own app database"):
        app_labels.load_round(store, rows, 1, "another run")

    # Between polls the labelers answer one item each; the wait ends once all 3 items have 2 answers.
    lines: list[str] = []
    polls = []

    def labelers_work(_seconds: float) -> None:
        polls.append(1)
        rank_one(store, "ann")
        rank_one(store, "bob")

    status = app_labels.wait_for_round(store, 1, 2, 0.01, None, lines.append, sleep=labelers_work)
    assert status["complete"] == status["items"] == 3 and not status["closed"] and len(polls) == 3
    assert lines[0] == "round 1: 0/3 items have 2 rankings (0 answers in all)"
    assert lines[-1] == "round 1: 3/3 items have 2 rankings (6 answers in all)"

    # Round 2: one labeler only (overlap 2 is never reached); an admin closes it, and the wait ends.
    store.add_round_items(2, "run", [(f"q{i}", ["a", "b"]) for i in range(2)], "iterate")
    rank_one(store, "ann")
    lines.clear()

    def admin_closes(_seconds: float) -> None:
        store.close_round(2, closed_by="admin")

    status = app_labels.wait_for_round(store, 2, 2, 0.01, 60, lines.append, sleep=admin_closes)
    assert status["closed"] and status["complete"] == 0 and status["answers"] == 1
    assert lines[-1].endswith("; closed by admin")

    # Round 3: nobody labels; the timeout stops the wait with the command that would close the round.
    store.add_round_items(3, "run", [("r", ["a", "b"])], "iterate")
    now = [0.0]

    def clock() -> float:
        return now[0]

    def tick(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(app_labels.LabelingTimedOut, match="close-round --db .* --round 3"):
        app_labels.wait_for_round(store, 3, 2, 10.0, 25.0, lines.append, sleep=tick, clock=clock)
    assert now[0] == 25.0  # the last sleep is cut to the time left


class ScriptedLabeler:
    """A person in a thread: logs in through the API and ranks whatever the app gives them, until stopped."""

    def __init__(self, url: str, name: str, password: str, seed: int):
        self.url, self.name, self.password = url, name, password
        self.rng = random.Random(seed)
        self.given: list[dict] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.work, daemon=True)

    def work(self) -> None:
        client, _ = api_client(self.url, self.name, self.password)
        try:
            self.label(client)
        finally:
            client.close()  # its heartbeat stream would keep the server from closing for 10 s

    def label(self, client) -> None:
        while not self.stop.is_set():
            item = client.predict(api_name="/next_item")["item"]
            if item is None:
                time.sleep(0.05)
                continue
            k = len(item["candidates"])
            ranks = self.rng.sample(range(1, k + 1), k)  # distinct ranks: every ranking says something
            try:
                client.predict(item["item_id"], "rank", ranks, "", api_name="/submit")
            except AppError as err:
                self.errors.append(str(err))
                continue
            self.given.append({"item_id": item["item_id"], "prompt": item["prompt"]})

    def __enter__(self) -> ScriptedLabeler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


class StopAfterReward(Exception):
    """Raised instead of the round's PPO step: this test checks what the reward step was given."""


def test_a_round_ranked_by_people_in_the_app(
    tmp_path, running_app, tiny_model_dir, sentences, monkeypatch, capsys
):
    from reward.model import build_reward_model

    app_yaml = write_app_config(tmp_path, overlap=2)
    service, url = running_app(parse_config(LabelConfig, ["--config", str(app_yaml)]))
    model, tokenizer = build_reward_model(str(tiny_model_dir))
    model.save_pretrained(tmp_path / "rm0")
    tokenizer.save_pretrained(tmp_path / "rm0")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": " ".join(s.split()[:3])}) + "\n" for s in sentences[:4]))
    values = dict(
        run_name="it",
        output_root=str(tmp_path / "runs"),
        sft_model=str(tiny_model_dir),
        policy=str(tiny_model_dir),
        reward_model=str(tmp_path / "rm0"),
        rounds=1,
        prompts=str(prompts),
        prompts_per_round=4,
        completions_per_prompt=3,
        labeler="app",
        app_config=str(app_yaml),
        app_poll_seconds=0.1,
        prompt_template=None,
        use_chat_template=False,
        max_new_tokens=6,
        recipes={},
        overrides={
            "reward": {"max_steps": 2, "per_device_train_batch_size": 4, "save_steps": 1000, "max_length": 32}
        },
    )
    real_run_stage = iterate_run.run_stage

    def until_reward(config, folder, number, stage, options):
        if stage != "reward":
            raise StopAfterReward(stage)
        return real_run_stage(config, folder, number, stage, options)

    monkeypatch.setattr(iterate_run, "run_stage", until_reward)
    store = service.store
    out = tmp_path / "runs" / "it" / "iterate" / "round-1"

    # One labeler alone cannot give every item its 2 rankings: the loop times out (as a kill would stop it).
    with ScriptedLabeler(url, *LABELERS[0], seed=1) as ann:
        with pytest.raises(app_labels.LabelingTimedOut, match="items have 2 rankings"):
            iterate_run.run(build_config(Config, {**values, "app_timeout_minutes": 0.1}))
    items = store.items()
    assert items and {i["round"] for i in items.values()} == {1}
    assert len(ann.given) == len(items)  # she ranked each once, before the timeout
    first_records = store.records()

    # Run again with a second labeler: nothing is loaded twice, ann's rankings stay, the round completes.
    with ScriptedLabeler(url, *LABELERS[1], seed=2) as bob:
        with pytest.raises(StopAfterReward, match="ppo"):
            iterate_run.run(build_config(Config, values))
    assert store.items() == items and len(bob.given) == len(items)
    records = store.records()
    assert records[: len(first_records)] == first_records and len(records) == 2 * len(items)
    assert ann.errors == bob.errors == []
    status = store.round_status(1, 2)
    assert status["closed"] and status["closed_by"] == "iterate (complete)"
    printed = capsys.readouterr().out
    assert (
        f"round 1: {len(items)}/{len(items)} items have 2 rankings ({2 * len(items)} answers in all)"
        in printed
    )

    # The rankings the round hands on are the people's, each once, tagged with the round.
    rankings = read_jsonl(out / "rankings.jsonl")
    given = sorted((r["prompt"], r["completions"], r["ranks"]) for r in records)
    assert sorted((r["prompt"], r["completions"], r["ranks"]) for r in rankings) == given
    assert {r["round"] for r in rankings} == {1}
    train, heldout = read_jsonl(out / "rankings_train_all.jsonl"), read_jsonl(out / "rankings_heldout.jsonl")
    assert sorted(map(json.dumps, train + heldout)) == sorted(map(json.dumps, rankings))
    assert train and heldout and not {r["prompt"] for r in train} & {r["prompt"] for r in heldout}
    # ...and the reward step trained on exactly the train part's pairs, measured on the held-out part's.
    stats = json.loads((out / "reward" / "model" / "reward_stats.json").read_text())
    assert stats["train_pairs"] == pair_count(train) and stats["eval_pairs"] == pair_count(heldout)
    done = json.loads((out / "state.json").read_text())["done"]
    assert set(done) == {"sample", "label", "reward", "rm_accuracy"}
    assert done["label"]["closed_by"] == "iterate (complete)" and done["label"]["records"] == len(records)
    assert (out / "app" / "agreement.json").is_file()
