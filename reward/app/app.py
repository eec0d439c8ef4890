"""`alignment label`: the Gradio page where labelers rank model outputs, and its command line.

    alignment label --config configs/label/tiny.yaml [--port 7861 ...]      serve the app
    alignment label add-user --db labels.sqlite --name ann --role labeler   add an account (password from
                                                                            $ALIGNMENT_LABEL_PASSWORD, stdin or a prompt)
    alignment label export --db labels.sqlite --out export/ [--keep-ties]   write rankings, pairs and agreement

Two doors lead to the same `LabelService` methods, which check the session token themselves:
- the page (events below, `api_visibility="private"`: hidden from API clients; the token lives in
  server-side `gr.State`, never in the page);
- a typed API (`gr.api`, queue off so plain HTTP POSTs to /gradio_api/run/<name> work too):
  /login, /logout, /next_item, /submit, /my_progress, /history, /progress, /add_user, /load_items, /export.
Candidate texts are shown in read-only text boxes, so HTML or script in a model output is shown as text.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignment.core.config import parse_config, save_config
from reward.app.config import ROLES, LabelConfig
from reward.app.service import LabelService, ServiceError

Config = LabelConfig  # the name every command module exposes (alignment.cli, the recipe tests)
MAX_SLOTS = 9
PASSWORD_ENV = "ALIGNMENT_LABEL_PASSWORD"

# Keyboard shortcuts: 1-9 give the highlighted candidate that rank and move to the next one; arrow keys
# or j/k move the highlight; Enter submits, s skips, u marks all unacceptable. Keys typed into a text box
# (the comment, the login form) are left alone.
KEYBOARD_SCRIPT = """
<script>
(() => {
  let cursor = 0;
  const rows = () => [...document.querySelectorAll('[id^="cand-row-"]')].filter((el) => el.offsetParent !== null);
  const paint = () => rows().forEach((row, i) => row.classList.toggle('kb-cursor', i === cursor));
  const click = (id) => { const el = document.getElementById(id); if (el) { cursor = 0; el.click(); } };
  document.addEventListener('change', (e) => {
    const row = e.target.closest && e.target.closest('[id^="cand-row-"]');
    if (row) { const all = rows(); cursor = Math.min(all.indexOf(row) + 1, all.length - 1); paint(); }
  }, true);
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && t.type !== 'radio'))) return;
    const all = rows();
    if (!all.length) return;
    cursor = Math.min(cursor, all.length - 1);
    if (/^[1-9]$/.test(e.key)) {
      const at = cursor;  // the click's change event also moves the cursor: set it, do not add to it
      const input = all[at].querySelector(`input[type="radio"][value="${e.key}"]`);
      if (input) { input.click(); cursor = Math.min(at + 1, all.length - 1); }
    } else if (e.key === 'ArrowDown' || e.key === 'j') { cursor = Math.min(cursor + 1, all.length - 1); }
    else if (e.key === 'ArrowUp' || e.key === 'k') { cursor = Math.max(cursor - 1, 0); }
    else if (e.key === 'Enter') { click('submit-btn'); }
    else if (e.key === 's') { click('skip-btn'); }
    else if (e.key === 'u') { click('unacceptable-btn'); }
    else { return; }
    e.preventDefault();
    paint();
  });
  setInterval(paint, 500);
})();
</script>
"""
CSS = ".kb-cursor { outline: 3px solid #f59e0b; border-radius: 8px; }"
SHORTCUTS = "Keys: **1-9** rank the highlighted candidate, **↑/↓** move, **Enter** submit, **s** skip, **u** all unacceptable."


def _as_gradio_error(fn: Callable) -> Callable:
    """Turn refusals into `gr.Error`, whose message the client sees (other exceptions stay hidden)."""
    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ServiceError as err:
            raise gr.Error(str(err), print_exception=False) from None

    return wrapper


def _progress_text(progress: dict[str, int]) -> str:
    return (
        f"**Progress:** {progress['done']} done ({progress['unacceptable']} all unacceptable), "
        f"{progress['skip']} skipped, {progress['available'] + progress['open']} left for you."
    )


def build_app(service: LabelService) -> Any:
    """The Gradio Blocks page and API for `service`."""
    import gradio as gr

    config = service.config
    guidelines = Path(config.guidelines_path)
    guidelines_text = (
        guidelines.read_text() if guidelines.is_file() else f"*(no guidelines file at {guidelines})*"
    )
    private = {"api_visibility": "private"}

    with gr.Blocks(title="Rank model outputs") as demo:
        token = gr.State("")
        current = gr.State(None)  # {item_id, k} of the item on screen
        gr.Markdown("# Rank model outputs")
        with gr.Column(visible=True, elem_id="login-panel") as login_panel:
            name_box = gr.Textbox(label="Name", elem_id="login-name")
            password_box = gr.Textbox(label="Password", type="password", elem_id="login-password")
            login_button = gr.Button("Log in", variant="primary", elem_id="login-btn")
        status = gr.Markdown("", elem_id="status")
        with gr.Column(visible=False, elem_id="main-panel") as main_panel:
            with gr.Tab("Label"), gr.Row():
                with gr.Column(scale=3):
                    progress_md = gr.Markdown("", elem_id="progress")
                    gr.Markdown(SHORTCUTS)
                    prompt_box = gr.Textbox(label="Prompt", interactive=False, lines=2, elem_id="prompt")
                    rows, texts, radios = [], [], []
                    for slot in range(MAX_SLOTS):
                        with gr.Row(visible=False, elem_id=f"cand-row-{slot}") as row:
                            texts.append(
                                gr.Textbox(
                                    label=f"Candidate {slot + 1}",
                                    interactive=False,
                                    lines=2,
                                    scale=4,
                                    elem_id=f"cand-text-{slot}",
                                )
                            )
                            radios.append(
                                gr.Radio(choices=[], label="Rank (1 = best)", scale=2, elem_id=f"rank-{slot}")
                            )
                        rows.append(row)
                    comment_box = gr.Textbox(label="Comment (optional)", lines=1, elem_id="comment")
                    with gr.Row():
                        submit_button = gr.Button(
                            "Submit ranking (Enter)", variant="primary", elem_id="submit-btn"
                        )
                        skip_button = gr.Button("Skip (s)", elem_id="skip-btn")
                        unacceptable_button = gr.Button(
                            "All unacceptable (u)", variant="stop", elem_id="unacceptable-btn"
                        )
                with gr.Column(scale=2, elem_id="guidelines-column"):
                    gr.Markdown(guidelines_text, elem_id="guidelines")
            with gr.Tab("My history"):
                history_button = gr.Button("Refresh", elem_id="history-btn")
                history_json = gr.JSON(label="My records")
            with gr.Tab("Admin", visible=False) as admin_tab:
                progress_button = gr.Button("Everyone's progress")
                progress_json = gr.JSON(label="Progress")
                items_path_box = gr.Textbox(label="Items file on the server (JSONL)")
                load_button = gr.Button("Load items")
                export_button = gr.Button("Export rankings, pairs and agreement")
                admin_json = gr.JSON(label="Result")
            logout_button = gr.Button("Log out", size="sm")

        item_outputs = [current, prompt_box, *rows, *texts, *radios, comment_box, progress_md]

        def show(payload: dict[str, Any]) -> list[Any]:
            """Outputs for `item_outputs` from a next_item/submit payload."""
            item = payload["item"]
            progress = _progress_text(payload["progress"])
            if item is None:
                return [
                    None,
                    gr.Textbox(value="No more items for you. Thank you!"),
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
                *[
                    gr.Textbox(value=item["candidates"][slot] if slot < k else "")
                    for slot in range(MAX_SLOTS)
                ],
                *[gr.Radio(choices=choices if slot < k else [], value=None) for slot in range(MAX_SLOTS)],
                gr.Textbox(value=""),
                progress,
            ]

        def on_login(name: str, password: str):
            try:
                session = service.login(name, password)
            except ServiceError as err:
                return [
                    "",
                    gr.Column(visible=True),
                    gr.Column(visible=False),
                    gr.Tab(visible=False),
                    f"**{err}**",
                    *[gr.skip()] * len(item_outputs),
                ]
            payload = service.next_item(session["token"])
            return [
                session["token"],
                gr.Column(visible=False),
                gr.Column(visible=True),
                gr.Tab(visible=session["role"] == "admin"),
                f"Logged in as **{session['name']}** ({session['role']}).",
                *show(payload),
            ]

        login_button.click(
            on_login,
            [name_box, password_box],
            [token, login_panel, main_panel, admin_tab, status, *item_outputs],
            api_name="ui_login",
            **private,
        )

        def answer(action: str):
            def handler(token_value: str, item: dict | None, comment: str, *ranks: str | None):
                if item is None:
                    return ["Nothing to answer.", *[gr.skip()] * len(item_outputs)]
                ranks_shown = None
                if action == "rank":
                    given = ranks[: item["k"]]
                    if any(r in (None, "") for r in given):
                        return [
                            "**Give every candidate a rank** (ties allowed), or skip.",
                            *[gr.skip()] * len(item_outputs),
                        ]
                    ranks_shown = [int(r) for r in given]
                try:
                    result = _as_gradio_error(service.submit)(
                        token_value, item["item_id"], action, ranks_shown, comment
                    )
                except gr.Error as err:
                    return [f"**{err.message}**", *[gr.skip()] * len(item_outputs)]
                word = {
                    "rank": "Ranking saved",
                    "skip": "Skipped",
                    "unacceptable": "Marked all unacceptable",
                }[action]
                return [f"{word} (record {result['record_id']}, {result['status']}).", *show(result)]

            return handler

        answer_inputs = [token, current, comment_box, *radios]
        submit_button.click(
            answer("rank"), answer_inputs, [status, *item_outputs], api_name="ui_submit", **private
        )
        skip_button.click(
            answer("skip"), answer_inputs, [status, *item_outputs], api_name="ui_skip", **private
        )
        unacceptable_button.click(
            answer("unacceptable"),
            answer_inputs,
            [status, *item_outputs],
            api_name="ui_unacceptable",
            **private,
        )

        history_button.click(
            _as_gradio_error(lambda t: service.history(t)),
            [token],
            [history_json],
            api_name="ui_history",
            **private,
        )
        progress_button.click(
            _as_gradio_error(service.progress), [token], [progress_json], api_name="ui_progress", **private
        )
        load_button.click(
            _as_gradio_error(service.load_items),
            [token, items_path_box],
            [admin_json],
            api_name="ui_load_items",
            **private,
        )
        export_button.click(
            _as_gradio_error(lambda t: service.export(t)),
            [token],
            [admin_json],
            api_name="ui_export",
            **private,
        )

        def on_logout(token_value: str):
            try:
                service.logout(token_value)
            except ServiceError:
                pass
            return ["", gr.Column(visible=True), gr.Column(visible=False), "Logged out."]

        logout_button.click(
            on_logout, [token], [token, login_panel, main_panel, status], api_name="ui_logout", **private
        )

        # The typed API. Queue off: each call is a short database transaction, and plain HTTP POSTs
        # to /gradio_api/run/<name> then work without the queue's event stream.
        api = {"queue": False, "concurrency_limit": None}

        def login(name: str, password: str) -> dict:
            """Log in; returns {token, name, role}. Pass the token to every other call."""
            return service.login(name, password)

        def logout(token: str) -> dict:
            """End the session."""
            return service.logout(token)

        def next_item(token: str) -> dict:
            """The caller's current item {item_id, prompt, candidates} (or null) and progress."""
            return service.next_item(token)

        def submit(
            token: str, item_id: int, action: str, ranks: list[int] | None = None, comment: str = ""
        ) -> dict:
            """Answer an item: action rank (ranks in the order shown, 1 = best), skip or unacceptable."""
            return service.submit(token, item_id, action, ranks, comment)

        def my_progress(token: str) -> dict:
            """The caller's own counts."""
            return service.my_progress(token)

        def history(token: str, labeler: str = "") -> list:
            """The caller's records (an admin may name a labeler, or "" for all)."""
            return service.history(token, labeler)

        def progress(token: str) -> dict:
            """Everyone's progress (admin)."""
            return service.progress(token)

        def add_user(token: str, name: str, role: str, password: str) -> dict:
            """Add an account (admin)."""
            return service.add_user(token, name, role, password)

        def load_items(token: str, path: str) -> dict:
            """Load items from a JSONL file on the server (admin)."""
            return service.load_items(token, path)

        def export(token: str, inline: bool = False) -> dict:
            """Write rankings, pairs, records and agreement to the export folder (admin)."""
            return service.export(token, inline)

        for fn in (
            login,
            logout,
            next_item,
            submit,
            my_progress,
            history,
            progress,
            add_user,
            load_items,
            export,
        ):
            gr.api(_as_gradio_error(fn), api_name=fn.__name__, **api)
    return demo


def launch(demo: Any, config: LabelConfig, block: bool = True, port: int | None = None) -> Any:
    """Start serving; with `block=False` return at once (tests) and close with `demo.close()`."""
    demo.queue(default_concurrency_limit=8)
    demo.launch(
        server_name=config.host,
        server_port=config.port if port is None else port,
        prevent_thread_lock=not block,
        head=KEYBOARD_SCRIPT,
        css=CSS,
        quiet=True,
        show_error=False,
    )
    return demo


def prepare(config: LabelConfig) -> LabelService:
    """Open the database, create configured accounts and load the configured items (idempotent)."""
    service = LabelService(config)
    added = service.ensure_config_users()
    if added:
        print(f"label: added users {', '.join(added)}", flush=True)
    if config.items_path:
        print(
            f"label: items from {config.items_path}: {service.load_items_file(config.items_path)}", flush=True
        )
    return service


def run(config: LabelConfig) -> dict[str, Any]:
    """Serve the app until interrupted; returns the final progress counts."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    # The saved config never holds a password given in clear.
    redacted = [{**u, "password": "***"} if "password" in u else u for u in config.users]
    save_config(dataclasses.replace(config, users=redacted), config.run_dir / "config.yaml")
    try:
        service = prepare(config)
    except ServiceError as err:
        raise SystemExit(f"label: {err}") from None
    demo = build_app(service)
    print(f"label: serving on http://{config.host}:{config.port} (database {config.database})", flush=True)
    launch(demo, config, block=True)
    return service.store.progress(config.overlap)


# ---------------------------------------------------------------------------------------------
# Command line


def read_password(env_var: str) -> str:
    """The new password: from $env_var, else a line of stdin when piped, else an interactive prompt."""
    if os.environ.get(env_var):
        return os.environ[env_var]
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("add-user: the passwords differ")
    return first


def add_user_command(argv: list[str]) -> None:
    """`alignment label add-user --db FILE --name NAME --role labeler|admin [--password-env VAR] [--replace]`."""
    from reward.app import auth
    from reward.app.service import BadRequest, check_new_user
    from reward.app.store import LabelStore

    parser = argparse.ArgumentParser(
        prog="alignment label add-user", description="Add a labeling-app account."
    )
    parser.add_argument("--db", required=True, help="SQLite database of the app (created if missing)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument(
        "--password-env", default=PASSWORD_ENV, help="environment variable holding the password"
    )
    parser.add_argument(
        "--replace", action="store_true", help="reset the password and role of an existing user"
    )
    args = parser.parse_args(argv)
    password = read_password(args.password_env)
    try:
        check_new_user(args.name, args.role, password)
    except BadRequest as err:
        raise SystemExit(f"add-user: {err}") from None
    if not LabelStore(args.db).add_user(
        args.name, args.role, auth.hash_password(password), replace=args.replace
    ):
        raise SystemExit(
            f"add-user: user {args.name!r} already exists in {args.db} (use --replace to reset it)"
        )
    print(f"added {args.role} {args.name} to {args.db}")


def export_command(argv: list[str]) -> None:
    """`alignment label export --db FILE --out DIR [--keep-ties] [--alpha-metric ordinal|interval]`."""
    import json

    from reward.app.export import export_all
    from reward.app.store import LabelStore

    parser = argparse.ArgumentParser(
        prog="alignment label export", description="Export labels for the reward stage."
    )
    parser.add_argument("--db", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--keep-ties", action="store_true")
    parser.add_argument("--alpha-metric", default="ordinal", choices=("ordinal", "interval"))
    args = parser.parse_args(argv)
    if not Path(args.db).is_file():
        raise SystemExit(f"export: database {args.db} does not exist")
    summary = export_all(LabelStore(args.db).records(), args.out, args.keep_ties, args.alpha_metric)
    print(json.dumps({k: v for k, v in summary.items() if k != "agreement"}, indent=2))
    print(json.dumps(summary["agreement"]["overall"], indent=2))


def main(argv: list[str] | None = None) -> None:
    """Entry point of `alignment label`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "add-user":
        add_user_command(argv[1:])
    elif argv and argv[0] == "export":
        export_command(argv[1:])
    else:
        run(parse_config(LabelConfig, argv))


if __name__ == "__main__":
    main()
