"""Many labelers at once against one server, and a server killed with SIGKILL in the middle of that load.

Calls go straight to gradio's HTTP route /gradio_api/run/<name> (the same endpoints gradio_client
calls; its event-stream protocol costs ~0.2 s a call here, plain HTTP ~5 ms), from one thread per labeler.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import yaml
from app_helpers import ADMIN, LABELERS, call, free_port, login, make_config

from reward.app.app import prepare

N_LABELERS, PER_LABELER = 20, 50


def label_loop(url: str, name: str, password: str, limit: int, acknowledged: list, errors: list) -> None:
    """Log in and rank items until `limit` are done; record every acknowledged (labeler, item_id)."""
    try:
        with httpx.Client(timeout=60) as http:
            token = login(http, url, name, password)
            ok, payload = call(http, url, "next_item", token=token)
            done = 0
            while ok and payload["item"] is not None and done < limit:
                item = payload["item"]
                ranks = list(range(1, len(item["candidates"]) + 1))
                ok, payload = call(http, url, "submit", item["item_id"], "rank", ranks, "", token=token)
                if ok and payload["status"] == "recorded":
                    acknowledged.append((name, item["item_id"]))
                    done += 1
    except (httpx.TransportError, ValueError) as err:  # the server died under us (crash test)
        errors.append(repr(err))


def run_labelers(url: str, limit: int) -> tuple[list, list, list[threading.Thread]]:
    acknowledged: list = []
    errors: list = []
    threads = [
        threading.Thread(target=label_loop, args=(url, name, pw, limit, acknowledged, errors), daemon=True)
        for name, pw in LABELERS[:N_LABELERS]
    ]
    for thread in threads:
        thread.start()
    return acknowledged, errors, threads


def stored_pairs(db: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT labeler, item_id FROM records WHERE action = 'rank'").fetchall()


def test_twenty_labelers_fifty_rankings_each(tmp_path, running_app):
    # 50 items, each to all 20 labelers: every labeler ranks every item once, 1000 rankings in all.
    config = make_config(tmp_path, n_items=PER_LABELER, labelers=N_LABELERS, overlap=N_LABELERS)
    _, url = running_app(config)
    start = time.perf_counter()
    acknowledged, errors, threads = run_labelers(url, PER_LABELER)
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.perf_counter() - start
    print(f"\n{len(acknowledged)} rankings by {N_LABELERS} concurrent labelers in {elapsed:.1f} s")
    assert not errors
    assert len(acknowledged) == N_LABELERS * PER_LABELER
    stored = stored_pairs(config.database)
    assert len(stored) == 1000 and len(set(stored)) == 1000  # each stored exactly once
    assert sorted(stored) == sorted(acknowledged)
    assert set(Counter(item for _, item in stored).values()) == {N_LABELERS}


def start_server(config_path: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    process = subprocess.Popen(
        [sys.executable, "-m", "reward.app.app", "--config", str(config_path), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early:\n{process.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("server did not come up within 90 s")


def test_acknowledged_rankings_survive_sigkill(tmp_path, running_app):
    port = free_port()
    config = make_config(tmp_path, n_items=PER_LABELER, labelers=N_LABELERS, overlap=N_LABELERS, port=port)
    # Accounts go into the database here, hashed at the tests' cheap scrypt cost (stored in each hash),
    # so the server process neither hashes 21 passwords at start-up nor pays full cost per login.
    prepare(config).store.close()
    config_path = tmp_path / "label.yaml"
    config_path.write_text(yaml.safe_dump({**config.to_dict(), "users": []}))
    url = f"http://127.0.0.1:{port}/"
    started = time.perf_counter()
    server = start_server(config_path, port)
    print(f"\nserver subprocess up in {time.perf_counter() - started:.1f} s")
    try:
        acknowledged, errors, threads = run_labelers(url, PER_LABELER)
        while len(acknowledged) < 100 and any(t.is_alive() for t in threads):
            time.sleep(0.01)
        print(f"{len(acknowledged)} acknowledged after {time.perf_counter() - started:.1f} s")
        os.kill(server.pid, signal.SIGKILL)  # mid-load: requests are in flight
        server.wait(timeout=10)
        for thread in threads:
            thread.join(timeout=30)
        killed_at = list(acknowledged)
    finally:
        if server.poll() is None:
            server.kill()
    assert 100 <= len(killed_at) < N_LABELERS * PER_LABELER, "the kill should land in the middle of the load"
    assert errors, "some labelers should have seen the server die"

    # Restart on the same database. The new server runs in this test process (importing gradio again in
    # a fresh subprocess costs 10-15 s on a busy 2-core machine); what matters is that a new process
    # opens the database the killed one left behind.
    print(f"killed and joined after {time.perf_counter() - started:.1f} s")
    _, url = running_app(config)
    print(f"restarted after {time.perf_counter() - started:.1f} s")
    stored = set(stored_pairs(config.database))
    missing = set(killed_at) - stored
    assert not missing, f"{len(missing)} acknowledged rankings lost"
    # At most one unacknowledged ranking per labeler can have been stored (in flight at the kill).
    assert len(stored) - len(set(killed_at)) <= N_LABELERS
    # Labelers resume after the restart.
    with httpx.Client() as http:
        token = login(http, url, *LABELERS[0])
        ok, payload = call(http, url, "next_item", token=token)
        assert ok and payload["progress"]["rank"] == sum(1 for name, _ in stored if name == LABELERS[0][0])
        admin = login(http, url, *ADMIN)
        ok, records = call(http, url, "history", "", token=admin)
        assert ok and len(records) == len(stored)
