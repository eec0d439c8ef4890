"""The SQLite store: WAL, append-only records, overlap control, resume, order shown; auth and config."""

from __future__ import annotations

import sqlite3

import pytest

from alignment.core.config import ConfigError, parse_config
from reward.app import auth
from reward.app.config import LabelConfig
from reward.app.store import AnswerConflict, LabelStore, NotAssignedError


@pytest.fixture()
def store(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    for name in ("ann", "bob", "cat"):
        store.add_user(name, "labeler", "x")
    store.add_items([(f"p{i}", [f"c{i}.{j}" for j in range(4)]) for i in range(3)], source="test")
    return store


def test_wal_and_append_only(store):
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    item = store.next_assignment("ann", overlap=2, stale_after_s=3600)
    store.add_record("ann", item["item_id"], "rank", [1, 2, 3, 4], "")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE records SET comment = 'x'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM records")


def test_items_load_once(store):
    assert store.add_items([("p0", [f"c0.{j}" for j in range(4)]), ("new", ["a", "b"])], "again") == (1, 1)
    assert store.count_items() == 4


def test_ranks_stored_in_item_order_and_retry_is_idempotent(store):
    item = store.next_assignment("ann", overlap=2, stale_after_s=3600)
    order = item["order_shown"]
    assert sorted(order) == [0, 1, 2, 3]
    assert item["candidates"] == [f"c{item['item_id'] - 1}.{i}" for i in order]
    ranks_shown = [1, 2, 2, 4]
    record_id, created = store.add_record("ann", item["item_id"], "rank", ranks_shown, "ok")
    assert created
    assert store.add_record("ann", item["item_id"], "rank", ranks_shown, "retry") == (record_id, False)
    with pytest.raises(
        AnswerConflict, match=f"record {record_id}"
    ):  # a different answer is never dropped silently
        store.add_record("ann", item["item_id"], "rank", [4, 3, 2, 1], "")
    (row,) = store.records("ann")
    # Candidate order[p] was shown at position p, so it got ranks_shown[p].
    assert [row["ranks"][order[p]] for p in range(4)] == ranks_shown
    assert row["order_shown"] == order and row["seconds_spent"] >= 0
    with pytest.raises(NotAssignedError):
        store.add_record("bob", item["item_id"], "rank", [1, 2, 3, 4], "")


def test_overlap_resume_and_never_twice(store):
    first = store.next_assignment("ann", overlap=2, stale_after_s=3600)
    assert (
        store.next_assignment("ann", overlap=2, stale_after_s=3600) == first
    )  # resume: same item, same order
    assert store.next_assignment("bob", overlap=2, stale_after_s=3600)["item_id"] == first["item_id"]
    # Two holders already: the third labeler gets the next item.
    assert store.next_assignment("cat", overlap=2, stale_after_s=3600)["item_id"] != first["item_id"]
    store.add_record("ann", first["item_id"], "rank", [1, 2, 3, 4], "")
    seen = [first["item_id"]]
    while (item := store.next_assignment("ann", overlap=2, stale_after_s=3600)) is not None:
        assert item["item_id"] not in seen
        seen.append(item["item_id"])
        store.add_record("ann", item["item_id"], "skip", None, "")
    assert len(seen) == 3


def test_skip_frees_the_slot_and_stale_assignments_expire(store):
    a = store.next_assignment("ann", overlap=1, stale_after_s=3600)
    assert store.next_assignment("bob", overlap=1, stale_after_s=3600)["item_id"] != a["item_id"]
    store.add_record("ann", a["item_id"], "skip", None, "")
    assert store.next_assignment("cat", overlap=1, stale_after_s=3600)["item_id"] == a["item_id"]
    # cat holds item a but has not answered; with a zero-second timeout that no longer holds the slot.
    store.add_user("dan", "labeler", "x")
    assert store.next_assignment("dan", overlap=1, stale_after_s=3600)["item_id"] != a["item_id"]
    store.add_user("eve", "labeler", "x")
    assert store.next_assignment("eve", overlap=1, stale_after_s=0)["item_id"] == a["item_id"]
    progress = store.progress(overlap=1)
    assert progress["labelers"]["ann"]["skip"] == 1 and progress["labelers"]["bob"]["open"] == 1


def test_password_hash_and_tokens():
    stored = auth.hash_password("correct horse")
    assert stored.startswith("scrypt$") and "correct horse" not in stored
    assert auth.verify_password("correct horse", stored)
    assert not auth.verify_password("wrong horse", stored)
    assert auth.hash_password("correct horse") != stored  # per-user salt
    assert not auth.verify_password("x", "garbage")
    assert auth.new_token() != auth.new_token() and len(auth.token_digest("t")) == 64


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="overlap"):
        LabelConfig(overlap=0)
    with pytest.raises(ConfigError, match="samples_per_checkpoint"):
        LabelConfig(checkpoints=["a"], samples_per_checkpoint=10)
    with pytest.raises(ConfigError, match=r"users\[0\].role"):
        LabelConfig(users=[{"name": "x", "role": "boss", "password": "p"}])
    with pytest.raises(ConfigError, match=r"users\[0\]"):
        LabelConfig(users=[{"name": "x"}])


@pytest.mark.parametrize("recipe", ["tiny", "ready-items"])
def test_shipped_recipes_parse(recipe):
    config = parse_config(LabelConfig, ["--config", f"configs/label/{recipe}.yaml"])
    assert config.stage == "label"
