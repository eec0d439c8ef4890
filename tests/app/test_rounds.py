"""Iterate rounds in the app: the round tag from load to export, closing a round (admins only), old databases."""

from __future__ import annotations

import json
import sqlite3

import pytest
from app_helpers import ADMIN, LABELERS, make_config

from alignment.cli import main as cli_main
from alignment.core.formats import load_dataset_as
from reward.app.export import export_all
from reward.app.service import BadRequest, Conflict, Forbidden, LabelService
from reward.app.store import LabelStore, RoundOwned


def rank_all(store: LabelStore, labeler: str, overlap: int) -> int:
    """`labeler` ranks every item the store gives them (the first candidate shown best); returns how many."""
    count = 0
    while (item := store.next_assignment(labeler, overlap, stale_after_s=3600)) is not None:
        store.add_record(labeler, item["item_id"], "rank", list(range(1, len(item["candidates"]) + 1)), "")
        count += 1
    return count


def test_round_tag_survives_load_rank_export(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    for name in ("ann", "bob"):
        store.add_user(name, "labeler", "x")
    store.add_items([("by hand", ["a", "b"])], source="file")
    round1 = [(f"r1 p{i}", [f"x{i}", f"y{i}", f"z{i}"]) for i in range(3)]
    round2 = [(f"r2 p{i}", [f"u{i}", f"v{i}"]) for i in range(2)]
    assert store.add_round_items(1, "run-a", round1, "iterate") == (3, 0)
    assert store.add_round_items(2, "run-a", round2, "iterate") == (2, 0)
    assert store.add_round_items(1, "run-a", round1, "iterate") == (0, 3)  # a rerun adds nothing
    # The same prompt and candidates in a round are a new item, not the one loaded by hand.
    assert store.add_round_items(2, "run-a", [("by hand", ["a", "b"])], "iterate") == (1, 0)
    with pytest.raises(RoundOwned, match="run-a"):  # another run's round 1 would mix with this one's
        store.add_round_items(1, "run-b", round1, "iterate")
    assert sorted(i["round"] or 0 for i in store.items().values()) == [0, 1, 1, 1, 2, 2, 2]

    assert rank_all(store, "ann", overlap=2) == rank_all(store, "bob", overlap=2) == 7
    status = store.round_status(1, overlap=2)
    assert status == {
        "round": 1,
        "owner": "run-a",
        "items": 3,
        "complete": 3,
        "answers": 6,
        "closed": False,
        "closed_by": None,
    }
    assert store.round_status(9, overlap=2) is None

    # Export of one round: its rows only, each carrying the round; the reward stage's formats accept them.
    summary = export_all(store.records(round_number=1), tmp_path / "r1")
    rankings = [json.loads(x) for x in (tmp_path / "r1" / "rankings.jsonl").read_text().splitlines()]
    assert len(rankings) == 6 and {r["round"] for r in rankings} == {1}
    assert {r["prompt"] for r in rankings} == {p for p, _ in round1}
    assert summary["pairs"] == 6 * 3
    pairs, _ = load_dataset_as(summary["files"]["pairs"], "pairs")  # the reward stage reads them as before
    assert len(pairs) == 18
    assert {json.loads(x)["round"] for x in (tmp_path / "r1" / "pairs.jsonl").read_text().splitlines()} == {1}
    records = [json.loads(x) for x in (tmp_path / "r1" / "records.jsonl").read_text().splitlines()]
    assert {r["round"] for r in records} == {1}
    # Everything: rows of items without a round keep their old columns.
    export_all(store.records(), tmp_path / "all")
    rows = [json.loads(x) for x in (tmp_path / "all" / "rankings.jsonl").read_text().splitlines()]
    assert sorted(r.get("round", 0) for r in rows) == [0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    assert next(r for r in rows if "round" not in r).keys() == {"prompt", "completions", "ranks"}

    # The command line exports one round too.
    cli_main(["label", "export", "--db", str(store.path), "--out", str(tmp_path / "cli"), "--round", "2"])
    cli_rows = [json.loads(x) for x in (tmp_path / "cli" / "rankings.jsonl").read_text().splitlines()]
    assert len(cli_rows) == 6 and {r["round"] for r in cli_rows} == {2}


def test_close_round_is_for_admins_and_stops_the_round(tmp_path, capsys):
    config = make_config(tmp_path, n_items=0, labelers=2, overlap=2, items_path=None)
    service = LabelService(config)
    service.ensure_config_users()
    store = service.store
    store.add_round_items(1, "run", [(f"p{i}", ["a", "b", "c"]) for i in range(3)], "iterate")
    ann = service.login(*LABELERS[0])["token"]
    bob = service.login(*LABELERS[1])["token"]
    admin = service.login(*ADMIN)["token"]
    held = service.next_item(bob)["item"]  # bob holds an item when the round closes

    # A labeler may not close a round, whatever they send; nothing changes.
    for value in (1, "1", None):
        with pytest.raises(Forbidden, match="only an admin"):
            service.close_round(ann, value)
    assert store.round_status(1, 2)["closed"] is False
    with pytest.raises(BadRequest, match="round"):
        service.close_round(admin, "1")
    with pytest.raises(BadRequest, match="round"):
        service.close_round(admin, True)
    with pytest.raises(BadRequest, match="no items of round 7"):
        service.close_round(admin, 7)

    closed = service.close_round(admin, 1)
    assert closed["status"] == "closed round 1" and closed["closed_by"] == ADMIN[0] and closed["items"] == 3
    assert "round 1 closed by admin" in capsys.readouterr().out
    assert service.close_round(admin, 1)["status"] == "round 1 was already closed"
    # Its items are handed out no more, and an answer to one held from before is refused, not lost silently.
    assert service.next_item(ann)["item"] is None
    with pytest.raises(Conflict, match="round 1, which is closed"):
        service.submit(bob, held["item_id"], "rank", [1, 2, 3], "")
    assert service.next_item(bob)["item"] is None and service.my_progress(bob)["open"] == 0
    assert service.progress(admin)["rounds"][0]["closed"] is True

    # The command line closes rounds too (it opens the database file, as add-user does).
    store.add_round_items(2, "run", [("q", ["a", "b"])], "iterate")
    cli_main(["label", "close-round", "--db", str(config.database), "--round", "2"])
    assert "closed round 2" in capsys.readouterr().out
    assert store.round_status(2, 2)["closed_by"] == "command line"
    with pytest.raises(SystemExit, match="no items of round 5"):
        cli_main(["label", "close-round", "--db", str(config.database), "--round", "5"])


OLD_SCHEMA = """
CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE items (id INTEGER PRIMARY KEY, content_key TEXT NOT NULL UNIQUE, prompt TEXT NOT NULL,
    completions TEXT NOT NULL, source TEXT NOT NULL, created_at REAL NOT NULL);
"""


def test_a_database_from_before_rounds_is_migrated_in_place(tmp_path):
    from reward.app.store import SCHEMA_VERSION, content_key

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.execute(
        "INSERT INTO items (content_key, prompt, completions, source, created_at) VALUES (?, ?, ?, ?, ?)",
        (content_key("old", ["a", "b"]), "old", json.dumps(["a", "b"]), "file", 0.0),
    )
    conn.commit()
    conn.close()
    store = LabelStore(path)
    assert store.items() == {1: {"prompt": "old", "completions": ["a", "b"], "round": None}}
    assert store.add_items([("old", ["a", "b"])], "again") == (0, 1)  # its identity did not change
    store.add_user("ann", "labeler", "x")
    assert store.next_assignment("ann", 1, 3600)["item_id"] == 1
    store.add_round_items(1, "run", [("new", ["c", "d"])], "iterate")
    store.close()
    again = LabelStore(path)  # opening a migrated database changes nothing
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert sorted(i["round"] or 0 for i in again.items().values()) == [0, 1]
