"""`alignment label add-user` / `export`, and items generated on demand from checkpoints."""

from __future__ import annotations

import io
import json

import pytest
from app_helpers import make_config

from alignment.cli import main as cli_main
from reward.app.service import BadRequest, LabelService
from reward.app.store import LabelStore


def test_add_user_from_env_and_stdin_then_export(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "labels.sqlite")
    monkeypatch.setenv("ALIGNMENT_LABEL_PASSWORD", "secret-admin-pw")
    cli_main(["label", "add-user", "--db", db, "--name", "boss", "--role", "admin"])
    monkeypatch.delenv("ALIGNMENT_LABEL_PASSWORD")
    monkeypatch.setattr("sys.stdin", io.StringIO("secret-ann-pw\n"))
    cli_main(["label", "add-user", "--db", db, "--name", "ann", "--role", "labeler"])
    assert "added labeler ann" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="already exists"):
        monkeypatch.setattr("sys.stdin", io.StringIO("another-pw-123\n"))
        cli_main(["label", "add-user", "--db", db, "--name", "ann", "--role", "labeler"])
    with pytest.raises(SystemExit, match="password"):
        monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
        cli_main(["label", "add-user", "--db", db, "--name", "cat", "--role", "labeler"])
    store = LabelStore(db)
    assert {u["name"]: u["role"] for u in store.users()} == {"ann": "labeler", "boss": "admin"}
    assert "secret" not in store.user("ann")["password_hash"]

    # The accounts log in to a service on that database; a labeler's answers export from the CLI.
    service = LabelService(make_config(tmp_path, db_path=db, users=[]), store)
    assert service.login("boss", "secret-admin-pw")["role"] == "admin"
    token = service.login("ann", "secret-ann-pw")["token"]
    store.add_items([("p", ["a", "b", "c"])], "test")
    item = service.next_item(token)["item"]
    service.submit(token, item["item_id"], "rank", [3, 1, 2], "")
    cli_main(["label", "export", "--db", db, "--out", str(tmp_path / "out")])
    pairs = [json.loads(line) for line in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 3 and all(p.keys() == {"prompt", "chosen", "rejected"} for p in pairs)


def test_items_generated_from_checkpoints(tmp_path, tiny_model_dir, tiny_llama_dir):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"prompt": "the movie was"})
        + "\n"
        + json.dumps({"prompt": "a dull film", "completions": ["x", "y", "x"]})
        + "\n"
    )
    config = make_config(
        tmp_path,
        n_items=0,
        labelers=1,
        items_path=None,
        checkpoints=[str(tiny_model_dir), str(tiny_llama_dir)],
        samples_per_checkpoint=2,
        max_new_tokens=6,
        temperature=1.0,
    )
    service = LabelService(config)
    result = service.load_items_file(str(prompts))
    assert result["rows"] == 2 and result["added"] + result["dropped"] == 2
    items = service.store.items()
    by_prompt = {item["prompt"]: item["completions"] for item in items.values()}
    assert by_prompt["a dull film"] == ["x", "y"]  # the repeated candidate is dropped
    if "the movie was" in by_prompt:  # random tiny models: up to 4 distinct samples (2 per checkpoint)
        assert 2 <= len(by_prompt["the movie was"]) <= 4
    else:
        assert result["dropped"] == 1
    # Prompt-only rows without checkpoints, and malformed rows, are refused with the row and key named.
    (tmp_path / "bare").mkdir()
    bare = LabelService(make_config(tmp_path / "bare", n_items=0, labelers=0, items_path=None))
    with pytest.raises(BadRequest, match="row 1: key 'completions'"):
        bare.load_items_file(str(prompts))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "completions": ["only one"]}) + "\n")
    with pytest.raises(BadRequest, match=r"bad.jsonl: row 1: key 'completions'"):
        bare.load_items_file(str(bad))
