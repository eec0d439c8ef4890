"""The app driven through gradio_client: log in, label, skip, resume, export; and its access rules."""

from __future__ import annotations

import httpx
import pytest
from app_helpers import ADMIN, LABELERS, api_client, call, make_config
from gradio_client.exceptions import AppError

from alignment.core.formats import load_dataset_as


def test_label_skip_resume_export(tmp_path, running_app):
    config = make_config(tmp_path, n_items=4, labelers=2, overlap=2)
    _, url = running_app(config)
    (ann, ann_pw), (bob, bob_pw) = LABELERS[:2]
    client, old_token = api_client(url, ann, ann_pw)

    # Get an item and rank it (ranks in the order shown; a tie between the last two).
    first = client.predict(api_name="/next_item")["item"]
    assert len(first["candidates"]) == 3 and "order_shown" not in first
    done = client.predict(first["item_id"], "rank", [2, 1, 3], "first", api_name="/submit")
    assert done["status"] == "recorded" and done["progress"]["done"] == 1
    # A retried submission is acknowledged and stored once.
    again = client.predict(first["item_id"], "rank", [2, 1, 3], "", api_name="/submit")
    assert again["status"] == "already recorded" and again["record_id"] == done["record_id"]

    # Skip the next one.
    second = done["item"]
    skipped = client.predict(second["item_id"], "skip", None, "", api_name="/submit")
    assert skipped["status"] == "recorded" and skipped["progress"]["skip"] == 1
    third = skipped["item"]
    assert third["item_id"] not in (first["item_id"], second["item_id"])

    # Leave and come back in a new client and session: the same item, in the same order.
    with httpx.Client() as http:
        logout = http.post(f"{url}api/logout", headers={"Authorization": f"Bearer {old_token}"})
        assert logout.status_code == 200
        assert call(http, url, "next_item", token=old_token)[0] is False  # the old token opens nothing now
    client2, _ = api_client(url, ann, ann_pw)
    assert client2.predict(api_name="/current_item")["item"] == third
    assert client2.predict(api_name="/next_item")["item"] == third
    tied = client2.predict(third["item_id"], "rank", [1, 1, 2], "", api_name="/submit")
    assert tied["status"] == "recorded"

    # A second labeler ranks the first item too (overlap 2), so agreement can be computed.
    bob_client, _ = api_client(url, bob, bob_pw)
    bob_item = bob_client.predict(api_name="/next_item")["item"]
    assert bob_item["item_id"] == first["item_id"]
    bob_client.predict(bob_item["item_id"], "rank", [1, 2, 3], "", api_name="/submit")
    history = client2.predict("", api_name="/history")
    assert [h["action"] for h in history] == ["rank", "skip", "rank"] and {h["labeler"] for h in history} == {
        ann
    }

    # Admin: everyone's progress and the export, which the reward stage's formats accept.
    admin, _ = api_client(url, *ADMIN)
    progress = admin.predict(api_name="/progress")
    assert progress["labelers"][ann]["rank"] == 2 and progress["labelers"][bob]["rank"] == 1
    summary = admin.predict(True, api_name="/export")
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
    config = make_config(tmp_path, n_items=3, labelers=2, overlap=1)
    service, url = running_app(config)
    (config.items_folder).mkdir(parents=True, exist_ok=True)
    (config.items_folder / "more.jsonl").write_text((tmp_path / "items.jsonl").read_text())
    ann, ann_token = api_client(url, *LABELERS[0])
    bob, bob_token = api_client(url, *LABELERS[1])
    item = ann.predict(api_name="/next_item")["item"]
    ann.predict(item["item_id"], "rank", [1, 2, 3], "ann's secret comment", api_name="/submit")

    calls = {
        "next_item": (),
        "current_item": (),
        "submit": (1, "skip", None, ""),
        "my_progress": (),
        "history": ("",),
        "progress": (),
        "add_user": ("eve", "labeler", "long-password"),
        "load_items": ("more.jsonl",),
        "export": (False,),
        "close_round": (1,),
    }
    # Without a session (none, or a made-up token) every endpoint refuses with 401, before any handler runs.
    with httpx.Client() as http:
        for token in (None, "made-up-token"):
            for name, args in calls.items():
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = http.post(
                    f"{url}gradio_api/run/{name}", json={"data": list(args)}, headers=headers
                )
                assert response.status_code == 401, (name, token, response.text)
    # A labeler cannot read another labeler's records, everyone's progress, load items, add users, export or
    # close a round:
    # refused with 403 and a message (plain HTTP shows the status gradio_client hides).
    with pytest.raises(AppError, match="only their own"):
        bob.predict(LABELERS[0][0], api_name="/history")
    assert bob.predict("", api_name="/history") == []
    with httpx.Client() as http:
        for name in ("progress", "add_user", "load_items", "export", "close_round"):
            response = http.post(
                f"{url}gradio_api/run/{name}",
                json={"data": list(calls[name])},
                headers={"Authorization": f"Bearer {bob_token}"},
            )
            assert response.status_code == 403 and "only an admin" in response.json()["error"], name
    # Malformed answers are refused, naming the field.
    bob_item = bob.predict(api_name="/next_item")["item"]
    for ranks, match in (([1, 2], "ranks"), ([0, 1, 2], "ranks"), ([1, 2, 4], "ranks"), (None, "ranks")):
        with pytest.raises(AppError, match=match):
            bob.predict(bob_item["item_id"], "rank", ranks, "", api_name="/submit")
    with pytest.raises(AppError, match="action"):
        bob.predict(bob_item["item_id"], "delete", None, "", api_name="/submit")
    with httpx.Client() as http:
        for name, password in ((LABELERS[0][0], "not-the-password"), ("nobody", "whatever-pass")):
            response = http.post(f"{url}api/login", json={"name": name, "password": password})
            assert response.status_code == 401 and response.json()["error"] == "wrong name or password"
    # Bob cannot answer an item given to ann.
    with pytest.raises(AppError, match="not one you were given"):
        bob.predict(item["item_id"], "rank", [1, 2, 3], "", api_name="/submit")
    # Admins load items only by file name from the items folder: never a path elsewhere on the server.
    admin, _ = api_client(url, *ADMIN)
    for outside in (str(tmp_path / "items.jsonl"), "../items.jsonl", "/etc/passwd"):
        with pytest.raises(AppError, match="items folder"):
            admin.predict(outside, api_name="/load_items")
    assert not (tmp_path / "label" / "export").exists()
    # The admin may do all of it.
    assert admin.predict(LABELERS[0][0], api_name="/history")[0]["comment"] == "ann's secret comment"
    assert admin.predict("eve", "labeler", "long-password", api_name="/add_user")["status"]
    assert admin.predict("more.jsonl", api_name="/load_items")["already_loaded"] == 3
    with pytest.raises(AppError, match="no items of round 1"):
        admin.predict(1, api_name="/close_round")
    service.store.add_round_items(1, "a run", [("q", ["a", "b"])], "iterate")
    with httpx.Client() as http:  # the page's button checks the role on the server too
        ok, result = call(http, url, "ui_close_round", 1, token=bob_token)
        assert ok and "only an admin" in result["error"]
    assert service.store.round_status(1, 1)["closed"] is False
    assert admin.predict(1, api_name="/close_round")["status"] == "closed round 1"
    assert service.store.user("eve")["role"] == "labeler"
    del ann_token
