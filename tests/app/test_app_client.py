"""The app driven through gradio_client: log in, label, skip, resume, export; and its access rules."""

from __future__ import annotations

import httpx
import pytest
from app_helpers import ADMIN, LABELERS, call, make_config
from gradio_client import Client
from gradio_client.exceptions import AppError

from alignment.core.formats import load_dataset_as


def login(client: Client, name: str, password: str) -> str:
    return client.predict(name, password, api_name="/login")["token"]


def test_label_skip_resume_export(tmp_path, running_app):
    config = make_config(tmp_path, n_items=4, labelers=2, overlap=2)
    _, url = running_app(config)
    client = Client(url, verbose=False)
    (ann, ann_pw), (bob, bob_pw) = LABELERS[:2]
    token = login(client, ann, ann_pw)

    # Get an item and rank it (ranks in the order shown; a tie between the last two).
    first = client.predict(token, api_name="/next_item")["item"]
    assert len(first["candidates"]) == 3 and "order_shown" not in first
    done = client.predict(token, first["item_id"], "rank", [2, 1, 3], "first", api_name="/submit")
    assert done["status"] == "recorded" and done["progress"]["done"] == 1
    # A retried submission is acknowledged and stored once.
    again = client.predict(token, first["item_id"], "rank", [2, 1, 3], "", api_name="/submit")
    assert again["status"] == "already recorded" and again["record_id"] == done["record_id"]

    # Skip the next one.
    second = done["item"]
    skipped = client.predict(token, second["item_id"], "skip", None, "", api_name="/submit")
    assert skipped["status"] == "recorded" and skipped["progress"]["skip"] == 1
    third = skipped["item"]
    assert third["item_id"] not in (first["item_id"], second["item_id"])

    # Leave and come back in a new client and session: the same item, in the same order.
    client.predict(token, api_name="/logout")
    with pytest.raises(AppError, match="not logged in"):
        client.predict(token, api_name="/next_item")
    client2 = Client(url, verbose=False)
    token = login(client2, ann, ann_pw)
    assert client2.predict(token, api_name="/next_item")["item"] == third
    tied = client2.predict(token, third["item_id"], "rank", [1, 1, 2], "", api_name="/submit")
    assert tied["status"] == "recorded"

    # A second labeler ranks the first item too (overlap 2), so agreement can be computed.
    bob_token = login(client2, bob, bob_pw)
    bob_item = client2.predict(bob_token, api_name="/next_item")["item"]
    assert bob_item["item_id"] == first["item_id"]
    client2.predict(bob_token, bob_item["item_id"], "rank", [1, 2, 3], "", api_name="/submit")
    history = client2.predict(token, "", api_name="/history")
    assert [h["action"] for h in history] == ["rank", "skip", "rank"] and {h["labeler"] for h in history} == {
        ann
    }

    # Admin: everyone's progress and the export, which the reward stage's formats accept.
    admin = login(client2, *ADMIN)
    progress = client2.predict(admin, api_name="/progress")
    assert progress["labelers"][ann]["rank"] == 2 and progress["labelers"][bob]["rank"] == 1
    summary = client2.predict(admin, True, api_name="/export")
    assert summary["records"] == 4 and summary["rankings"] == 3 and summary["skipped"] == 1
    assert summary["pairs"] == 3 + 2 + 3 and summary["tied_pairs"] == 1
    pairs, report = load_dataset_as(summary["files"]["pairs"], "pairs")
    assert len(pairs) == 8 and report.rows_kept == 8
    rankings, _ = load_dataset_as(summary["files"]["rankings"], "rankings")
    assert len(rankings) == 3
    assert summary["pairs_rows"][0].keys() == {"prompt", "chosen", "rejected"}
    overall = summary["agreement"]["overall"]
    assert overall["items_with_overlap"] == 1 and overall["pairwise_agreement"] is not None


def test_access_rules_on_every_endpoint(tmp_path, running_app):
    service, url = running_app(make_config(tmp_path, n_items=3, labelers=2, overlap=1))
    client = Client(url, verbose=False)
    ann = login(client, *LABELERS[0])
    bob = login(client, *LABELERS[1])
    item = client.predict(ann, api_name="/next_item")["item"]
    client.predict(ann, item["item_id"], "rank", [1, 2, 3], "ann's secret comment", api_name="/submit")
    items_file = str(tmp_path / "items.jsonl")

    calls = {
        "/logout": (),
        "/next_item": (),
        "/submit": (1, "skip", None, ""),
        "/my_progress": (),
        "/history": ("",),
        "/progress": (),
        "/add_user": ("eve", "labeler", "long-password"),
        "/load_items": (items_file,),
        "/export": (False,),
    }
    # Without a session (no token, an empty one, a made-up one) every endpoint refuses: checked through
    # gradio_client for one token, and for the others by plain HTTP (same endpoints, 10x faster).
    for name, args in calls.items():
        with pytest.raises(AppError, match="not logged in"):
            client.predict(None, *args, api_name=name)
    with httpx.Client() as http:
        for token in ("", "made-up-token"):
            for name, args in calls.items():
                assert call(http, url, name.strip("/"), token, *args) == (
                    False,
                    "not logged in: "
                    + (
                        "log in first" if not token else "the session is unknown or has expired; log in again"
                    ),
                )
    # A labeler cannot read another labeler's records, everyone's progress, load items, add users or export.
    with pytest.raises(AppError, match="only their own"):
        client.predict(bob, LABELERS[0][0], api_name="/history")
    assert client.predict(bob, "", api_name="/history") == []
    for name in ("/progress", "/add_user", "/load_items", "/export"):
        with pytest.raises(AppError, match="only an admin"):
            client.predict(bob, *calls[name], api_name=name)
    # Malformed answers are refused, naming the field.
    bob_item = client.predict(bob, api_name="/next_item")["item"]
    for ranks, match in (([1, 2], "ranks"), ([0, 1, 2], "ranks"), ([1, 2, 4], "ranks"), (None, "ranks")):
        with pytest.raises(AppError, match=match):
            client.predict(bob, bob_item["item_id"], "rank", ranks, "", api_name="/submit")
    with pytest.raises(AppError, match="action"):
        client.predict(bob, bob_item["item_id"], "delete", None, "", api_name="/submit")
    with pytest.raises(AppError, match="wrong name or password"):
        client.predict(LABELERS[0][0], "not-the-password", api_name="/login")
    with pytest.raises(AppError, match="wrong name or password"):
        client.predict("nobody", "whatever-pass", api_name="/login")
    # Bob cannot answer an item given to ann.
    with pytest.raises(AppError, match="not one you were given"):
        client.predict(bob, item["item_id"], "rank", [1, 2, 3], "", api_name="/submit")
    # The page's own events are not callable by API clients, and a raw HTTP call has no session to use.
    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises ValueError or AppError here
        client.predict("", api_name="/ui_history")
    with httpx.Client() as http:
        ok, value = call(http, url, "ui_history", "")
        assert not ok or "secret" not in str(value)
    assert not (tmp_path / "label" / "export").exists()
    # The admin may do all of it.
    admin = login(client, *ADMIN)
    assert client.predict(admin, LABELERS[0][0], api_name="/history")[0]["comment"] == "ann's secret comment"
    assert client.predict(admin, "eve", "labeler", "long-password", api_name="/add_user")["status"]
    assert client.predict(admin, items_file, api_name="/load_items")["already_loaded"] == 3
    assert service.store.user("eve")["role"] == "labeler"
