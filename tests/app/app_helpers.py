"""Helpers for the labeling-app tests: item files, configs, free ports, HTTP calls."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ADMIN = ("admin", "admin-password")
LABELERS = [(f"lab{i:02d}", f"password-{i:02d}") for i in range(20)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_items(path: Path, n: int, k: int = 3, extra: list[dict] | None = None) -> Path:
    rows = [{"prompt": f"prompt {i}", "completions": [f"answer {i}.{j}" for j in range(k)]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + (extra or [])))
    return path


def make_config(tmp_path: Path, n_items: int = 6, labelers: int = 3, overlap: int = 2, **overrides):
    from reward.app.config import LabelConfig

    users = [{"name": ADMIN[0], "role": "admin", "password": ADMIN[1]}]
    users += [{"name": name, "role": "labeler", "password": pw} for name, pw in LABELERS[:labelers]]
    values = dict(
        output_dir=str(tmp_path / "label"),
        items_path=str(write_items(tmp_path / "items.jsonl", n_items)),
        users=users,
        overlap=overlap,
        port=free_port(),
        guidelines_path="data/guidelines.md",
    )
    values.update(overrides)
    return LabelConfig(**values)


def login(http, url: str, name: str, password: str) -> str:
    """Log in through POST /api/login; returns the session token (the client also keeps the cookie)."""
    response = http.post(f"{url.rstrip('/')}/api/login", json={"name": name, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["token"]


def call(http, url: str, name: str, *data, token: str | None = None):
    """POST one API call straight to gradio's /gradio_api/run/<name>; returns (ok, value or error text).

    The session travels as `Authorization: Bearer <token>` (or as the cookie the client kept from
    /api/login). The session hash lets gradio reuse its per-session state (cheaper calls); it grants nothing.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"data": list(data), "session_hash": f"http-{id(http)}"}
    response = http.post(f"{url.rstrip('/')}/gradio_api/run/{name}", json=body, headers=headers)
    payload = response.json()
    if response.status_code == 200:
        return True, payload["data"][0]
    return False, payload.get("error") or payload.get("detail")


def api_client(url: str, name: str, password: str):
    """A gradio_client for one user: logged in through /api/login, the token sent as a bearer header."""
    import httpx
    from gradio_client import Client

    with httpx.Client() as http:
        token = login(http, url, name, password)
    return Client(url, verbose=False, headers={"Authorization": f"Bearer {token}"}), token
