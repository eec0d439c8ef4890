"""The labeling app against a hostile client: sessions, changed answers, uploads, sizes, guessing, bad input."""

from __future__ import annotations

import httpx
import pytest
from app_helpers import ADMIN, LABELERS, call, login, make_config

from reward.app.service import LoginThrottle, TooManyAttempts


def test_a_session_hash_alone_gets_nothing(tmp_path, running_app):
    service, url = running_app(make_config(tmp_path, n_items=3, labelers=2, overlap=1))
    with httpx.Client() as ann:
        # Ann logs in through the page's form: the session is an HttpOnly, SameSite=Strict cookie.
        response = ann.post(f"{url}login", data={"name": LABELERS[0][0], "password": LABELERS[0][1]})
        assert response.status_code == 303
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        token = ann.cookies["label_session"]
        assert ann.get(url).status_code == 200  # the page opens with the cookie
        ok, item = call(ann, url, "next_item")
        assert ok
        ok, _ = call(ann, url, "submit", item["item"]["item_id"], "rank", [1, 2, 3], "ann's secret")
        assert ok
    ann_hash = f"http-{id(ann)}"  # the session hash ann's calls used
    with httpx.Client() as eve:
        # Without the cookie: the page, the queue and every event are closed, whatever session hash is sent.
        assert eve.get(url, follow_redirects=False).status_code == 303  # to the login page
        for route, body in (
            ("gradio_api/run/ui_history", {"data": [], "session_hash": ann_hash}),
            ("gradio_api/queue/join", {"data": [], "fn_index": 0, "session_hash": ann_hash}),
            ("gradio_api/run/history", {"data": [""], "session_hash": ann_hash}),
        ):
            response = eve.post(f"{url}{route}", json=body)
            assert response.status_code == 401, (route, response.text)
            assert "secret" not in response.text
        # Another labeler's own session with ann's hash still acts as that labeler, never as ann.
        bob = login(eve, url, *LABELERS[1])
        eve.cookies.clear()
        ok, history = call(eve, url, "history", "", token=bob)
        assert ok and history == []
    assert service.session_name(token) == LABELERS[0][0]
    # The page may not be framed by another site.
    response = httpx.get(f"{url}login")
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_a_changed_answer_is_refused_and_a_retry_acknowledged(tmp_path, running_app):
    _, url = running_app(make_config(tmp_path, n_items=2, labelers=1))
    with httpx.Client() as http:
        token = login(http, url, *LABELERS[0])
        item = call(http, url, "next_item", token=token)[1]["item"]["item_id"]
        assert call(http, url, "submit", item, "rank", [1, 2, 3], "", token=token)[1]["status"] == "recorded"
        assert (
            call(http, url, "submit", item, "rank", [1, 2, 3], "", token=token)[1]["status"]
            == "already recorded"
        )
        for action, ranks in (("rank", [3, 2, 1]), ("skip", None), ("unacceptable", None)):
            body = {"data": [item, action, ranks, ""]}
            response = http.post(
                f"{url}gradio_api/run/submit", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert response.status_code == 409, (action, response.text)
            assert "already answered" in response.json()["error"] and "not saved" in response.json()["error"]
        # An invalid answer is refused for what it is (400), never acknowledged as "already recorded".
        ok, error = call(http, url, "submit", item, "rank", [1] * 9, "", token=token)
        assert not ok and "ranks" in error
        ok, history = call(http, url, "history", "", token=token)
        assert [h["action"] for h in history] == ["rank"]  # stored once; the refused answers left no trace


def test_uploads_refused_and_request_sizes_capped(tmp_path, running_app):
    _, url = running_app(make_config(tmp_path, n_items=1, labelers=1, max_request_kb=64))
    with httpx.Client() as http:
        assert http.post(f"{url}gradio_api/upload", files={"files": ("a.txt", b"x")}).status_code == 404
        token = login(http, url, *LABELERS[0])
        upload = http.post(
            f"{url}gradio_api/upload",
            files={"files": ("a.txt", b"x")},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert upload.status_code == 404 and "disabled" in upload.text
        big = b'{"data": ["' + b"x" * 20_000_000 + b'"]}'
        assert http.post(f"{url}gradio_api/run/next_item", content=big).status_code == 413
        huge_token = "t" * 10_000_000
        assert http.post(f"{url}api/login", json={"name": huge_token, "password": "x"}).status_code == 413


def test_repeated_wrong_passwords_slow_down(tmp_path, running_app):
    now = [1000.0]
    throttle = LoginThrottle(free=3, base_s=2.0, cap_s=60.0, window_s=600.0, clock=lambda: now[0])
    service, url = running_app(make_config(tmp_path, n_items=1, labelers=2))
    service.throttle = throttle
    name, password = LABELERS[0]
    with httpx.Client() as http:
        for _ in range(3):
            assert (
                http.post(f"{url}api/login", json={"name": name, "password": "wrong-pass"}).status_code == 401
            )
        # After 3 free failures even the right password waits 2 s, then 4 s after the next failure, and so on.
        response = http.post(f"{url}api/login", json={"name": name, "password": password})
        assert response.status_code == 429 and "try again in 2 s" in response.json()["error"]
        now[0] += 2.5
        assert http.post(f"{url}api/login", json={"name": name, "password": "wrong-pass"}).status_code == 401
        now[0] += 2.5
        assert http.post(f"{url}api/login", json={"name": name, "password": password}).status_code == 429
        now[0] += 2.0
        assert http.post(f"{url}api/login", json={"name": name, "password": password}).status_code == 200
        # The address keeps its count (a success clears only the account's): one more wrong guess at another
        # account from it, and that account's right password waits too.
        other, other_password = LABELERS[1]
        assert http.post(f"{url}api/login", json={"name": other, "password": "wrong-pass"}).status_code == 401
        response = http.post(f"{url}api/login", json={"name": other, "password": other_password})
        assert response.status_code == 429
    # The page's login form answers with the same refusal.
    with httpx.Client() as http:
        response = http.post(f"{url}login", data={"name": other, "password": "wrong-pass"})
        assert response.status_code == 429 and "too many failed logins" in response.text


def test_throttle_by_hand():
    now = [0.0]
    throttle = LoginThrottle(free=2, base_s=1.0, cap_s=5.0, window_s=100.0, clock=lambda: now[0])
    keys = ["name:a", "address:x"]
    assert throttle.failed(keys) == 1 and throttle.failed(keys) == 2
    assert throttle.wait_s(keys) == pytest.approx(1.0)  # 1 * 2**(2 - 2)
    throttle.failed(keys)
    assert throttle.wait_s(keys) == pytest.approx(2.0)
    for _ in range(5):
        throttle.failed(keys)
    assert throttle.wait_s(keys) == pytest.approx(5.0)  # capped
    throttle.succeeded("name:a")
    assert throttle.wait_s(["name:a"]) == 0 and throttle.wait_s(["address:x"]) > 0
    now[0] = 1000.0  # outside the window, old failures are forgotten
    assert throttle.wait_s(keys) == 0
    with pytest.raises(TooManyAttempts):
        raise TooManyAttempts("x")


def test_malformed_ids_and_lone_surrogates_get_a_4xx_with_a_message(tmp_path, running_app):
    service, url = running_app(make_config(tmp_path, n_items=1, labelers=1))
    with httpx.Client() as http:
        token = login(http, url, *LABELERS[0])
        headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
        cases = [
            ("submit", '{"data": [1180591620717411303424, "skip", null, ""]}', "item_id"),  # 2**70
            ("submit", '{"data": [-1, "skip", null, ""]}', "item_id"),
            ("submit", '{"data": [1, "skip", null, "bad \\ud800 text"]}', "comment"),
            ("history", '{"data": ["\\udfff"]}', "labeler"),
        ]
        for name, body, key in cases:
            response = http.post(f"{url}gradio_api/run/{name}", content=body.encode(), headers=headers)
            assert response.status_code == 400, (name, body, response.text)
            assert response.json()["error"].startswith(key), response.text
        response = http.post(
            f"{url}api/login",
            content=b'{"name": "\\ud800", "password": "x"}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400 and response.json()["error"].startswith("name")
        bad_header = http.post(
            f"{url}gradio_api/run/next_item",
            json={"data": []},
            headers={"Authorization": "Bearer \u00e9".encode()},
        )
        assert bad_header.status_code == 401
    assert service.store.count_items() == 1


def test_opening_the_page_takes_no_item(tmp_path, running_app):
    service, url = running_app(make_config(tmp_path, n_items=2, labelers=1, overlap=1))
    with httpx.Client() as http:
        for name, password in (ADMIN, LABELERS[0]):
            login(http, url, name, password)
            assert http.get(url).status_code == 200
            ok, payload = call(http, url, "current_item")
            assert ok and payload["item"] is None
            assert service.store.open_assignment(name) is None
        ok, payload = call(http, url, "next_item")  # only asking for one assigns it
        assert ok and payload["item"] is not None
