"""The typed API beside the page, for scripts and tests (gradio_client, or plain HTTP POSTs).

    POST /api/login {name, password} -> {token, name, role}   and POST /api/logout   (plain routes, web.py)
    then, with `Authorization: Bearer <token>` (or the cookie), the Gradio endpoints
    /next_item, /current_item, /submit, /my_progress, /history, /progress, /add_user, /load_items, /export,
    /close_round,
    at /gradio_api/run/<name> or through gradio_client's `predict(..., api_name="/<name>")`.

Each endpoint takes the session from the request, never from its arguments, and calls `LabelService`,
which checks it. A refusal is a `gr.Error` whose title carries the HTTP status (web.RequestGuard turns the
response into that 4xx). Queue off: each call is a short database transaction, and plain HTTP POSTs to
/gradio_api/run/<name> then work without the queue's event stream.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gradio as gr  # at module level: gradio reads the `gr.Request` annotations through this module's globals

from reward.app.service import LabelService, ServiceError
from reward.app.web import request_token


def refusals_as_gradio_errors(fn: Callable) -> Callable:
    """Turn a `ServiceError` into a `gr.Error` the client sees, titled with its HTTP status."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ServiceError as err:
            raise gr.Error(str(err), title=f"HTTP {err.status}", print_exception=False) from None

    return wrapper


def register_api(service: LabelService) -> None:
    """Register the endpoints (inside the page's Blocks)."""

    def next_item(request: gr.Request) -> dict:
        """The caller's current item {item_id, prompt, candidates} (a new one if none is open) and progress."""
        return service.next_item(request_token(request))

    def current_item(request: gr.Request) -> dict:
        """The item the caller holds unanswered (or null), without assigning a new one."""
        return service.current_item(request_token(request))

    def submit(item_id: int, action: str, ranks: list[int] | None, comment: str, request: gr.Request) -> dict:
        """Answer an item: action rank (ranks in the order shown, 1 = best), skip or unacceptable."""
        return service.submit(request_token(request), item_id, action, ranks, comment)

    def my_progress(request: gr.Request) -> dict:
        """The caller's own counts."""
        return service.my_progress(request_token(request))

    def history(labeler: str, request: gr.Request) -> list:
        """The caller's records (an admin may name a labeler, or "" for all)."""
        return service.history(request_token(request), labeler)

    def progress(request: gr.Request) -> dict:
        """Everyone's progress (admin)."""
        return service.progress(request_token(request))

    def add_user(name: str, role: str, password: str, request: gr.Request) -> dict:
        """Add an account (admin)."""
        return service.add_user(request_token(request), name, role, password)

    def load_items(path: str, request: gr.Request) -> dict:
        """Load items from a JSONL file in the server's items folder (admin)."""
        return service.load_items(request_token(request), path)

    def export(inline: bool, request: gr.Request) -> dict:
        """Write rankings, pairs, records and agreement to the export folder (admin)."""
        return service.export(request_token(request), inline)

    def close_round(round_number: int, request: gr.Request) -> dict:
        """Close an iterate round: its items are handed out no more, the waiting loop moves on (admin)."""
        return service.close_round(request_token(request), round_number)

    for fn in (
        next_item,
        current_item,
        submit,
        my_progress,
        history,
        progress,
        add_user,
        load_items,
        export,
        close_round,
    ):
        gr.api(refusals_as_gradio_errors(fn), api_name=fn.__name__, queue=False, concurrency_limit=None)
