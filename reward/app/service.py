"""The app's server-side API. Every public method takes the caller's session token first and checks it.

This is where access rules live, so they hold whatever reaches the server (the page, gradio_client, raw
HTTP): only a logged-in user gets items; a labeler sees only their own records and progress; only an admin
loads items, adds users, sees everyone's progress, closes an iterate round and exports. Input from requests is validated here and
rejected with a `BadRequest` naming the field.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignment.core.formats import MAX_RANKED_COMPLETIONS, DatasetFormatError
from reward.app import auth
from reward.app.config import ROLES, LabelConfig
from reward.app.export import export_all
from reward.app.items import build_items, read_item_rows
from reward.app.store import ACTIONS, AnswerConflict, LabelStore, NotAssignedError, RoundClosed

MAX_COMMENT_CHARS = 5000
MAX_NAME_CHARS = 64
MAX_PASSWORD_CHARS = 256
MAX_TOKEN_CHARS = 128  # tokens are 43 characters; anything longer is refused before a database lookup
MAX_ITEM_ID = 2**63 - 1  # SQLite's INTEGER range
MAX_ROUND = 10**6


class ServiceError(Exception):
    """A request the service refuses; the message is safe to show to the caller, `status` is its HTTP code."""

    status = 400


class AuthError(ServiceError):
    """No valid session (or wrong name/password at login)."""

    status = 401


class Forbidden(ServiceError):
    """Logged in, but the role does not allow this."""

    status = 403


class BadRequest(ServiceError):
    """A malformed request; the message names the field."""

    status = 400


class Conflict(ServiceError):
    """The request contradicts what is stored (a second, different answer to an item)."""

    status = 409


class TooManyAttempts(ServiceError):
    """Too many failed logins for this account or address; the message says how long to wait."""

    status = 429


def check_text(value: Any, key: str, max_chars: int, allow_empty: bool = True) -> str:
    """`value` as a string of at most `max_chars` characters that UTF-8 can encode, or a `BadRequest` naming `key`.

    A lone surrogate (valid in JSON, not in UTF-8) would otherwise fail deep inside SQLite.
    """
    if not isinstance(value, str) or len(value) > max_chars or (not allow_empty and not value):
        raise BadRequest(
            f"{key}: expected text of {'1' if not allow_empty else '0'} to {max_chars} characters"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{key}: not valid text (it holds a lone surrogate character)") from None
    return value


class LoginThrottle:
    """Exponential back-off after repeated failed logins, per account and per client address.

    The first `free` failures within `window_s` cost nothing; after that every attempt for that account (or
    from that address), right or wrong, is refused until `base_s * 2**(failures - free)` seconds (at most
    `cap_s`) have passed since the last failure. A success clears the account's count, never the address's:
    one good password must not reset the count of an address that is guessing other accounts.
    """

    def __init__(
        self,
        free: int = 5,
        base_s: float = 2.0,
        cap_s: float = 300.0,
        window_s: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.base_s, self.cap_s, self.window_s, self.clock = free, base_s, cap_s, window_s, clock
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (failures, time of the last one)
        self._lock = threading.Lock()

    def wait_s(self, keys: list[str]) -> float:
        """Seconds until any of `keys` may try again (0 when all may)."""
        now = self.clock()
        with self._lock:
            waits = []
            for key in keys:
                count, last = self._failures.get(key, (0, -1e18))
                if now - last > self.window_s:
                    continue
                if count >= self.free:
                    delay = min(self.cap_s, self.base_s * 2 ** (count - self.free))
                    waits.append(last + delay - now)
            return max([0.0, *waits])

    def failed(self, keys: list[str]) -> int:
        """Count a failure for every key; returns the largest count."""
        now = self.clock()
        with self._lock:
            counts = []
            for key in keys:
                count, last = self._failures.get(key, (0, -1e18))
                count = 1 if now - last > self.window_s else count + 1
                self._failures[key] = (count, now)
                counts.append(count)
            return max(counts)

    def succeeded(self, key: str) -> None:
        """Forget the failures of one key (the account that just logged in)."""
        with self._lock:
            self._failures.pop(key, None)


class LabelService:
    """Server-side operations of the labeling app, over one `LabelStore`."""

    def __init__(
        self, config: LabelConfig, store: LabelStore | None = None, throttle: LoginThrottle | None = None
    ) -> None:
        self.config = config
        self.store = store or LabelStore(config.database)
        self.stale_after_s = config.stale_assignment_minutes * 60
        self.throttle = throttle or LoginThrottle()

    # -----------------------------------------------------------------------------------------
    # Sessions

    def _user(self, token: Any, role: str | None = None) -> dict[str, str]:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise AuthError("not logged in: log in first")
        user = self.store.session_user(auth.token_digest(token))
        if user is None:
            raise AuthError("not logged in: the session is unknown or has expired; log in again")
        if role is not None and user["role"] != role:
            raise Forbidden(f"only an {role} may do this")
        return user

    def session_name(self, token: Any) -> str | None:
        """The name of a live session's user, or None (what the web layer checks on every request)."""
        try:
            return self._user(token)["name"]
        except AuthError:
            return None

    def login(self, name: str, password: str, address: str = "") -> dict[str, str]:
        """Check name and password; return {token, name, role}. The token goes with every later call.

        Failed attempts are logged and throttled per account and per client `address` (see `LoginThrottle`).
        """
        name = check_text(name, "name", MAX_NAME_CHARS)
        password = check_text(password, "password", MAX_PASSWORD_CHARS)
        keys = [f"name:{name}", f"address:{address}"]
        wait = self.throttle.wait_s(keys)
        if wait > 0:
            print(
                f"label: login for {name!r} from {address or '?'} refused: throttled for {wait:.0f} s",
                flush=True,
            )
            raise TooManyAttempts(f"too many failed logins; try again in {wait:.0f} s")
        user = self.store.user(name)
        # Verify against a dummy hash for unknown names so timing does not reveal which names exist.
        ok = auth.verify_password(password, user["password_hash"] if user else auth.DUMMY_HASH)
        if not user or not ok:
            count = self.throttle.failed(keys)
            print(f"label: failed login for {name!r} from {address or '?'} ({count} in a row)", flush=True)
            raise AuthError("wrong name or password")
        self.throttle.succeeded(f"name:{name}")
        token = auth.new_token()
        self.store.create_session(user["name"], auth.token_digest(token), self.config.session_hours * 3600)
        return {"token": token, "name": user["name"], "role": user["role"]}

    def logout(self, token: str) -> dict[str, str]:
        """End the session."""
        user = self._user(token)
        self.store.end_session(auth.token_digest(token))
        return {"status": f"{user['name']} logged out"}

    def whoami(self, token: str) -> dict[str, str]:
        """{name, role} of the session."""
        return self._user(token)

    # -----------------------------------------------------------------------------------------
    # Labeling

    def next_item(self, token: str) -> dict[str, Any]:
        """The caller's current item ({item_id, prompt, candidates in the order shown}) or None, with progress.

        An unanswered item given earlier comes back first; otherwise a new one is assigned.
        """
        return self._next_item(self._user(token))

    def current_item(self, token: str) -> dict[str, Any]:
        """The unanswered item the caller already holds (or None), with progress; never assigns a new one.

        What the page shows when it opens, so opening the page (an admin looking at progress, say) never
        takes one of an item's overlap slots.
        """
        user = self._user(token)
        return self._payload(user, self.store.open_assignment(user["name"]))

    def _next_item(self, user: dict[str, str]) -> dict[str, Any]:
        return self._payload(
            user, self.store.next_assignment(user["name"], self.config.overlap, self.stale_after_s)
        )

    def _payload(self, user: dict[str, str], item: dict[str, Any] | None) -> dict[str, Any]:
        if item is not None:
            item.pop("order_shown")  # the labeler sees the candidates, not which is which
        progress = self.store.labeler_progress(user["name"], self.config.overlap, self.stale_after_s)
        return {"item": item, "progress": progress}

    def submit(
        self, token: str, item_id: int, action: str, ranks: list[int] | None = None, comment: str = ""
    ) -> dict[str, Any]:
        """Store one answer: `rank` (ranks in the order shown, 1 = best, ties allowed), `skip` or `unacceptable`.

        Returns {status: recorded | already recorded, record_id} once the answer is committed to disk, plus
        the next item, so one call per answer suffices. The answer is validated before anything else; a
        retry of the stored answer is acknowledged again, a different answer to an answered item is refused
        (`Conflict`): records are append-only, and a labeler must never believe a change was saved.
        """
        user = self._user(token)
        if not isinstance(item_id, int) or isinstance(item_id, bool) or not 0 <= item_id <= MAX_ITEM_ID:
            raise BadRequest(f"item_id: expected an item number from 0 to {MAX_ITEM_ID}, got {item_id!r}")
        if action not in ACTIONS:
            raise BadRequest(f"action: expected one of {', '.join(ACTIONS)}, got {action!r}")
        comment = check_text(comment or "", "comment", MAX_COMMENT_CHARS)
        if action == "rank":
            if not isinstance(ranks, list) or not 2 <= len(ranks) <= MAX_RANKED_COMPLETIONS:
                raise BadRequest("ranks: expected one rank per candidate (2 to 9 integers)")
            if not all(
                isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= len(ranks) for r in ranks
            ):
                raise BadRequest(f"ranks: expected integers from 1 (best) to {len(ranks)}, got {ranks!r}")
        else:
            ranks = None
        try:
            record_id, created = self.store.add_record(user["name"], item_id, action, ranks, comment)
        except NotAssignedError:
            raise BadRequest(f"item_id: item {item_id} is not one you were given") from None
        except AnswerConflict as err:
            raise Conflict(
                f"you already answered item {item_id} differently (record {err.record_id}); this answer was not saved"
            ) from None
        except RoundClosed as err:
            raise Conflict(
                f"item {item_id} belongs to round {err.round_number}, which is closed; this answer was not saved"
            ) from None
        except ValueError as err:
            raise BadRequest(str(err)) from None
        following = self._next_item(user)
        return {
            "status": "recorded" if created else "already recorded",
            "record_id": record_id,
            "item": following["item"],
            "progress": following["progress"],
        }

    def my_progress(self, token: str) -> dict[str, int]:
        """The caller's own counts."""
        user = self._user(token)
        return self.store.labeler_progress(user["name"], self.config.overlap, self.stale_after_s)

    def history(self, token: str, labeler: str = "") -> list[dict[str, Any]]:
        """Records of the caller; an admin may name any labeler, or "" for everyone's."""
        user = self._user(token)
        labeler = check_text(labeler or "", "labeler", MAX_NAME_CHARS)
        if user["role"] != "admin":
            if labeler and labeler != user["name"]:
                raise Forbidden("a labeler can read only their own records")
            labeler = user["name"]
        rows = self.store.records(labeler or None)
        fields = (
            "id",
            "labeler",
            "item_id",
            "action",
            "prompt",
            "ranks",
            "comment",
            "seconds_spent",
            "created_at",
        )
        out = []
        for row in rows:
            entry = {k: row[k] for k in fields}
            entry["candidates"] = row["completions"]
            out.append(entry)
        return out

    # -----------------------------------------------------------------------------------------
    # Admin

    def progress(self, token: str) -> dict[str, Any]:
        """Everyone's progress (admin only)."""
        self._user(token, role="admin")
        return self.store.progress(self.config.overlap)

    def close_round(self, token: str, round_number: int) -> dict[str, Any]:
        """Close an iterate round (admin only): the loop waiting on it exports what it has and moves on.

        Its items are handed out and answered no more. Closing a closed round again changes nothing.
        """
        user = self._user(token, role="admin")
        if (
            not isinstance(round_number, int)
            or isinstance(round_number, bool)
            or not 1 <= round_number <= MAX_ROUND
        ):
            raise BadRequest(f"round: expected a round number from 1 to {MAX_ROUND}, got {round_number!r}")
        try:
            changed = self.store.close_round(round_number, closed_by=user["name"])
        except LookupError as err:
            raise BadRequest(f"round: {err}") from None
        status = self.store.round_status(round_number, self.config.overlap)
        if changed:
            print(
                f"label: round {round_number} closed by {user['name']} "
                f"({status['complete']}/{status['items']} items complete)",
                flush=True,
            )
        return {
            "status": f"closed round {round_number}"
            if changed
            else f"round {round_number} was already closed",
            **status,
        }

    def add_user(self, token: str, name: str, role: str, password: str) -> dict[str, Any]:
        """Create an account (admin only; an existing name is an error)."""
        self._user(token, role="admin")
        check_new_user(name, role, password)
        if not self.store.add_user(name, role, auth.hash_password(password)):
            raise BadRequest(f"name: user {name!r} already exists")
        return {"status": f"added {role} {name}"}

    def load_items(self, token: str, path: str) -> dict[str, Any]:
        """Load items from a JSONL file in the server's items folder (admin only); prompt-only rows are generated.

        `path` is a file name inside `config.items_folder`; anything that resolves outside it (an absolute
        path, `..`, a symlink out) is refused, so the page cannot be used to read the server's other files.
        """
        self._user(token, role="admin")
        name = check_text(path, "path", 255, allow_empty=False)
        folder = self.config.items_folder.resolve()
        target = (folder / name).resolve()
        if folder not in target.parents or not target.is_file():
            raise BadRequest(f"path: expected the name of a JSONL file in the items folder {folder}")
        return self.load_items_file(str(target))

    def load_items_file(self, path: str) -> dict[str, Any]:
        """Load items without a session (start-up and CLI use); errors name the file, row and key."""
        if not isinstance(path, str) or not path.strip():
            raise BadRequest("path: expected the path of a JSONL file on the server")
        config = self.config
        sampling = {
            "max_new_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_k": config.top_k,
            "top_p": config.top_p,
        }
        try:
            rows = read_item_rows(path)
            items, dropped = build_items(
                rows,
                config.checkpoints,
                config.samples_per_checkpoint,
                sampling,
                config.seed,
                config.prompt_template,
                config.use_chat_template,
            )
        except (DatasetFormatError, OSError, ValueError) as err:  # ValueError: ModelLoadError
            raise BadRequest(f"path: {err}") from None
        added, existing = self.store.add_items(items, source=str(path))
        return {"rows": len(rows), "added": added, "already_loaded": existing, "dropped": dropped}

    def export(self, token: str, inline: bool = False) -> dict[str, Any]:
        """Write the export files (admin only); with `inline`, also return the rankings and pairs rows."""
        self._user(token, role="admin")
        summary = export_all(
            self.store.records(), self.config.export_folder, self.config.keep_ties, self.config.alpha_metric
        )
        if inline:
            from alignment.core.formats import read_jsonl

            for name in ("rankings", "pairs"):
                path = Path(summary["files"][name])
                summary[f"{name}_rows"] = read_jsonl(path) if path.stat().st_size else []
        return summary

    def ensure_config_users(self) -> list[str]:
        """Create the accounts listed in the config that do not exist yet; returns the names added."""
        added = []
        for user in self.config.users:
            if "password_env" in user:
                password = os.environ.get(user["password_env"])
                if not password:
                    raise BadRequest(
                        f"users: {user['name']!r} reads its password from ${user['password_env']}, which is not set"
                    )
            else:
                password = user["password"]
            role = user.get("role", "labeler")
            check_new_user(user["name"], role, password)
            if self.store.add_user(user["name"], role, auth.hash_password(password)):
                added.append(user["name"])
        return added


def check_new_user(name: Any, role: Any, password: Any) -> None:
    """Validate a new account's fields, naming the bad one."""
    name = check_text(name, "name", MAX_NAME_CHARS, allow_empty=False)
    if not name.strip() or name != name.strip():
        raise BadRequest(
            f"name: expected 1 to {MAX_NAME_CHARS} characters without surrounding spaces, got {name!r}"
        )
    if role not in ROLES:
        raise BadRequest(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    password = check_text(password, "password", MAX_PASSWORD_CHARS)
    if len(password) < 8:
        raise BadRequest("password: expected at least 8 characters")
