"""The page's events: each handler reads the caller's session from the request and asks `LabelService`.

The session token never travels in the page's state: it comes from the HttpOnly cookie on each request
(`web.request_token`), so a handler called with another person's `session_hash` still acts for whoever
holds the cookie, and without one it is refused. Page events are registered with `api_visibility="private"`:
they are the page's own, not part of the typed API (api.py).
"""

from __future__ import annotations

from typing import Any

import gradio as gr  # at module level: gradio reads the `gr.Request` annotations through this module's globals

from reward.app.page import MAX_SLOTS, Page
from reward.app.service import LabelService, ServiceError
from reward.app.web import request_token

PRIVATE = {"api_visibility": "private"}
DONE_WORDS = {"rank": "Ranking saved", "skip": "Skipped", "unacceptable": "Marked all unacceptable"}


def progress_text(progress: dict[str, int]) -> str:
    """One line of the labeler's own progress."""
    return (
        f"**Progress:** {progress['done']} done ({progress['unacceptable']} all unacceptable), "
        f"{progress['skip']} skipped, {progress['available'] + progress['open']} left for you."
    )


def show(payload: dict[str, Any]) -> list[Any]:
    """Updates for `Page.item_outputs` from a {item, progress} payload (item may be None)."""
    item, progress = payload["item"], progress_text(payload["progress"])
    if item is None:
        return [
            None,
            gr.Textbox(value="No item on screen: press Next item (none left when it stays empty)."),
            *[gr.Row(visible=False)] * MAX_SLOTS,
            *[gr.Textbox(value="")] * MAX_SLOTS,
            *[gr.Radio(choices=[], value=None)] * MAX_SLOTS,
            gr.Textbox(value=""),
            progress,
        ]
    k = len(item["candidates"])
    choices = [str(r) for r in range(1, k + 1)]
    return [
        {"item_id": item["item_id"], "k": k},
        gr.Textbox(value=item["prompt"]),
        *[gr.Row(visible=slot < k) for slot in range(MAX_SLOTS)],
        *[gr.Textbox(value=item["candidates"][slot] if slot < k else "") for slot in range(MAX_SLOTS)],
        *[gr.Radio(choices=choices if slot < k else [], value=None) for slot in range(MAX_SLOTS)],
        gr.Textbox(value=""),
        progress,
    ]


def wire(page: Page, service: LabelService) -> None:
    """Register the page's events (inside its Blocks)."""
    skip_items = [gr.skip()] * len(page.item_outputs)

    def on_load(request: gr.Request):
        token = request_token(request)
        try:
            user = service.whoami(token)
            payload = service.current_item(token)  # what the labeler already holds; assigns nothing
        except ServiceError as err:
            return [f"**{err}**", gr.Tab(visible=False), "", *skip_items]
        who = f"Logged in as **{user['name']}** ({user['role']})."
        return [who, gr.Tab(visible=user["role"] == "admin"), "", *show(payload)]

    def on_next(request: gr.Request):
        try:
            return ["", *show(service.next_item(request_token(request)))]
        except ServiceError as err:
            return [f"**{err}**", *skip_items]

    assert MAX_SLOTS == 9, "answer() below takes one parameter per slot"

    def answer(action: str):
        # One named parameter per rank slot: gradio injects `request` by its annotation, which *args would hide.
        def handler(item, comment, r0, r1, r2, r3, r4, r5, r6, r7, r8, request: gr.Request):
            ranks = [r0, r1, r2, r3, r4, r5, r6, r7, r8]
            if item is None:
                return ["Nothing to answer: press Next item.", *skip_items]
            ranks_shown = None
            if action == "rank":
                given = ranks[: item["k"]]
                if any(r in (None, "") for r in given):
                    return ["**Give every candidate a rank** (ties allowed), or skip.", *skip_items]
                ranks_shown = [int(r) for r in given]
            try:
                result = service.submit(request_token(request), item["item_id"], action, ranks_shown, comment)
            except ServiceError as err:
                return [f"**{err}**", *skip_items]
            return [
                f"{DONE_WORDS[action]} (record {result['record_id']}, {result['status']}).",
                *show(result),
            ]

        return handler

    def guarded(call):
        def without_input(request: gr.Request):
            try:
                return call(request_token(request))
            except ServiceError as err:
                return {"error": str(err)}

        return without_input

    def load_items(name: str, request: gr.Request):
        try:
            return service.load_items(request_token(request), name)
        except ServiceError as err:
            return {"error": str(err)}

    def close_round(number: float | None, request: gr.Request):
        # gr.Number hands over a float (or None when empty); the service wants an int and checks the role.
        whole = int(number) if isinstance(number, float) and number.is_integer() else number
        try:
            return service.close_round(request_token(request), whole)
        except ServiceError as err:
            return {"error": str(err)}

    with page.demo:
        # Page events get `ui_` names, so none can shadow a typed API endpoint of the same name.
        page.demo.load(
            on_load,
            None,
            [page.who, page.admin_tab, page.status, *page.item_outputs],
            api_name="ui_load",
            **PRIVATE,
        )
        page.next_button.click(
            on_next, None, [page.status, *page.item_outputs], api_name="ui_next", **PRIVATE
        )
        answer_inputs = [page.current, page.comment, *page.radios]
        for button, action in (
            (page.submit_button, "rank"),
            (page.skip_button, "skip"),
            (page.unacceptable_button, "unacceptable"),
        ):
            outputs = [page.status, *page.item_outputs]
            button.click(answer(action), answer_inputs, outputs, api_name=f"ui_{action}", **PRIVATE)
        history = guarded(lambda t: service.history(t))
        page.history_button.click(history, None, [page.history], api_name="ui_history", **PRIVATE)
        progress = guarded(service.progress)
        page.progress_button.click(progress, None, [page.progress_json], api_name="ui_progress", **PRIVATE)
        page.load_button.click(
            load_items, [page.items_file], [page.admin_result], api_name="ui_load_items", **PRIVATE
        )
        export = guarded(lambda t: service.export(t))
        page.export_button.click(export, None, [page.admin_result], api_name="ui_export", **PRIVATE)
        page.close_round_button.click(
            close_round, [page.round_number], [page.admin_result], api_name="ui_close_round", **PRIVATE
        )
