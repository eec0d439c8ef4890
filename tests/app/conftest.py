"""Fixtures for the labeling-app tests: a running app on a free port."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch):
    """scrypt at n=2**10 instead of 2**14: same code path, 16x cheaper (the cost is stored in each hash)."""
    from reward.app import auth

    monkeypatch.setattr(auth, "SCRYPT_N", 2**10)


@pytest.fixture()
def running_app(tmp_path):
    """Start an app in this process; yields a function (config) -> (service, url); closes it afterwards."""
    from reward.app.app import launch, prepare

    started = []

    def start(config):
        service = prepare(config)
        demo = launch(service, config, block=False)
        started.append((demo, service))
        return service, demo.local_url

    yield start
    for demo, service in started:
        demo.close()
        service.store.close()
