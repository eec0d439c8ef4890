"""`alignment label`: the labeling app (a Gradio page behind a cookie session) and its command line.

    alignment label --config configs/label/tiny.yaml [--port 7861 ...]      serve the app
    alignment label add-user --db labels.sqlite --name ann --role labeler   add an account (password from
                                                                            $ALIGNMENT_LABEL_PASSWORD, stdin or a prompt)
    alignment label export --db labels.sqlite --out export/ [--keep-ties] [--round N]
                                                                            write rankings, pairs and agreement
    alignment label close-round --db labels.sqlite --round N                end an iterate round now (the loop
                                                                            waiting on it exports what it has)

The rooms: page.py (layout), handlers.py (the page's events), api.py (the typed API), web.py (login, cookie
sessions and the guards every request passes), service.py (the access rules), store.py (SQLite).
The command line opens the database file directly, so it acts as an admin: whoever may write that file
may do everything anyway. The page and the API check the session's role on the server.
Serve it to other machines through a TLS reverse proxy (nginx, Caddy) pointed at the loopback address: the
app itself speaks plain HTTP, and a password sent over plain HTTP can be read on the way.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from alignment.core.config import parse_config, save_config
from alignment.core.errors import UserError, run_cli
from reward.app.config import ROLES, LabelConfig
from reward.app.service import LabelService, ServiceError

Config = LabelConfig  # the name every command module exposes (alignment.cli, the recipe tests)
PASSWORD_ENV = "ALIGNMENT_LABEL_PASSWORD"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class LabelAppError(UserError):
    """The app cannot start (its accounts or items are misconfigured); the message names the key or file."""


def build_app(service: LabelService) -> Any:
    """The Gradio Blocks: the page's layout, its events, and the typed API."""
    from reward.app.api import register_api
    from reward.app.handlers import wire
    from reward.app.page import build_page

    guidelines = Path(service.config.guidelines_path)
    guidelines_text = (
        guidelines.read_text() if guidelines.is_file() else f"*(no guidelines file at {guidelines})*"
    )
    page = build_page(guidelines_text)
    wire(page, service)
    with page.demo:
        register_api(service)
    return page.demo


def launch(service: LabelService, config: LabelConfig, block: bool = True, port: int | None = None) -> Any:
    """Serve the app; with `block=False` return the running server at once (tests), to `close()` later."""
    from reward.app.page import CSS, KEYBOARD_SCRIPT
    from reward.app.web import Server, build_web_app

    if config.host not in LOOPBACK:
        print(
            f"label: WARNING: serving plain HTTP on {config.host}; passwords and sessions cross the network "
            "unencrypted. Bind 127.0.0.1 and put a TLS reverse proxy in front (see reward/app/app.py).",
            flush=True,
        )
    demo = build_app(service)
    demo.queue(default_concurrency_limit=8)
    web_app = build_web_app(service, demo, head=KEYBOARD_SCRIPT, css=CSS)
    server = Server(web_app, config.host, config.port if port is None else port).start()
    if block:
        try:
            server.wait()
        finally:
            server.close()
    return server


def prepare(config: LabelConfig) -> LabelService:
    """Open the database, create configured accounts and load the configured items (idempotent)."""
    service = LabelService(config)
    try:
        added = service.ensure_config_users()
        loaded = service.load_items_file(config.items_path) if config.items_path else None
    except ServiceError as err:
        raise LabelAppError(str(err)) from None
    if added:
        print(f"label: added users {', '.join(added)}", flush=True)
    if loaded is not None:
        print(f"label: items from {config.items_path}: {loaded}", flush=True)
    return service


def run(config: LabelConfig) -> dict[str, Any]:
    """Serve the app until interrupted; returns the final progress counts."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    config.items_folder.mkdir(parents=True, exist_ok=True)
    # The saved config never holds a password given in clear.
    redacted = [{**u, "password": "***"} if "password" in u else u for u in config.users]
    save_config(dataclasses.replace(config, users=redacted), config.run_dir / "config.yaml")
    service = prepare(config)
    print(f"label: serving on http://{config.host}:{config.port} (database {config.database})", flush=True)
    launch(service, config, block=True)
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
    """`alignment label export --db FILE --out DIR [--keep-ties] [--alpha-metric ordinal|interval] [--round N]`."""
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
    parser.add_argument("--round", type=int, default=None, help="only the records of this iterate round")
    args = parser.parse_args(argv)
    if not Path(args.db).is_file():
        raise SystemExit(f"export: database {args.db} does not exist")
    records = LabelStore(args.db).records(round_number=args.round)
    summary = export_all(records, args.out, args.keep_ties, args.alpha_metric)
    print(json.dumps({k: v for k, v in summary.items() if k != "agreement"}, indent=2))
    print(json.dumps(summary["agreement"]["overall"], indent=2))


def close_round_command(argv: list[str]) -> None:
    """`alignment label close-round --db FILE --round N [--by NAME]`."""
    from reward.app.store import LabelStore

    parser = argparse.ArgumentParser(
        prog="alignment label close-round",
        description="Close an iterate round: its items are handed out no more, and the loop exports it.",
    )
    parser.add_argument("--db", required=True)
    parser.add_argument("--round", type=int, required=True)
    parser.add_argument("--by", default="command line", help="who closed it (recorded with the round)")
    args = parser.parse_args(argv)
    if not Path(args.db).is_file():
        raise SystemExit(f"close-round: database {args.db} does not exist")
    store = LabelStore(args.db)
    try:
        changed = store.close_round(args.round, closed_by=args.by)
    except LookupError as err:
        raise SystemExit(f"close-round: {args.db}: {err}") from None
    print(f"{'closed' if changed else 'already closed:'} round {args.round} in {args.db}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of `alignment label`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "add-user":
        add_user_command(argv[1:])
    elif argv and argv[0] == "export":
        export_command(argv[1:])
    elif argv and argv[0] == "close-round":
        close_round_command(argv[1:])
    else:
        run_cli("label", lambda args: run(parse_config(LabelConfig, args)), argv)


if __name__ == "__main__":
    main()
