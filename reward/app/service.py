"""The app's server-side API. Every public method takes the caller's session token first and checks it.

This is where access rules live, so they hold whatever reaches the server (the page, gradio_client, raw
HTTP): only a logged-in user gets items; a labeler sees only their own records and progress; only an admin
loads items, adds users, sees everyone's progress and exports. Input from requests is validated here and
rejected with a `BadRequest` naming the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alignment.core.formats import MAX_RANKED_COMPLETIONS, DatasetFormatError
from reward.app import auth
from reward.app.config import ROLES, LabelConfig
from reward.app.export import export_all
from reward.app.items import build_items, read_item_rows
from reward.app.store import ACTIONS, LabelStore, NotAssignedError

MAX_COMMENT_CHARS = 5000
MAX_NAME_CHARS = 64


class ServiceError(Exception):
    """A request the service refuses; the message is safe to show to the caller."""


class AuthError(ServiceError):
    """No valid session (or wrong name/password at login)."""


class Forbidden(ServiceError):
    """Logged in, but the role does not allow this."""


class BadRequest(ServiceError):
    """A malformed request; the message names the field."""


class LabelService:
    """Server-side operations of the labeling app, over one `LabelStore`."""

    def __init__(self, config: LabelConfig, store: LabelStore | None = None) -> None:
        self.config = config
        self.store = store or LabelStore(config.database)
        self.stale_after_s = config.stale_assignment_minutes * 60

    # -----------------------------------------------------------------------------------------
    # Sessions

    def _user(self, token: Any, role: str | None = None) -> dict[str, str]:
        if not isinstance(token, str) or not token:
            raise AuthError("not logged in: log in first")
        user = self.store.session_user(auth.token_digest(token))
        if user is None:
            raise AuthError("not logged in: the session is unknown or has expired; log in again")
        if role is not None and user["role"] != role:
            raise Forbidden(f"only an {role} may do this")
        return user

    def login(self, name: str, password: str) -> dict[str, str]:
        """Check name and password; return {token, name, role}. The token goes with every later call."""
        user = self.store.user(name) if isinstance(name, str) else None
        # Verify against a dummy hash for unknown names so timing does not reveal which names exist.
        ok = auth.verify_password(
            password if isinstance(password, str) else "", user["password_hash"] if user else auth.DUMMY_HASH
        )
        if not user or not ok:
            raise AuthError("wrong name or password")
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
        """The caller's current item ({item_id, prompt, candidates in the order shown}) or None, with progress."""
        return self._next_item(self._user(token))

    def _next_item(self, user: dict[str, str]) -> dict[str, Any]:
        item = self.store.next_assignment(user["name"], self.config.overlap, self.stale_after_s)
        if item is not None:
            item.pop("order_shown")  # the labeler sees the candidates, not which is which
        progress = self.store.labeler_progress(user["name"], self.config.overlap, self.stale_after_s)
        return {"item": item, "progress": progress}

    def submit(
        self, token: str, item_id: int, action: str, ranks: list[int] | None = None, comment: str = ""
    ) -> dict[str, Any]:
        """Store one answer: `rank` (ranks in the order shown, 1 = best, ties allowed), `skip` or `unacceptable`.

        Returns {status: recorded | already recorded, record_id} once the answer is committed to disk, plus
        the next item, so one call per answer suffices.
        """
        user = self._user(token)
        if not isinstance(item_id, int) or isinstance(item_id, bool):
            raise BadRequest(f"item_id: expected an integer, got {item_id!r}")
        if action not in ACTIONS:
            raise BadRequest(f"action: expected one of {', '.join(ACTIONS)}, got {action!r}")
        comment = comment or ""
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS:
            raise BadRequest(f"comment: expected text of at most {MAX_COMMENT_CHARS} characters")
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

    def add_user(self, token: str, name: str, role: str, password: str) -> dict[str, Any]:
        """Create an account (admin only; an existing name is an error)."""
        self._user(token, role="admin")
        check_new_user(name, role, password)
        if not self.store.add_user(name, role, auth.hash_password(password)):
            raise BadRequest(f"name: user {name!r} already exists")
        return {"status": f"added {role} {name}"}

    def load_items(self, token: str, path: str) -> dict[str, Any]:
        """Load items from a JSONL file on the server (admin only); prompt-only rows are generated."""
        self._user(token, role="admin")
        return self.load_items_file(path)

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
                rows, config.checkpoints, config.samples_per_checkpoint, sampling, config.seed
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
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS or name != name.strip():
        raise BadRequest(
            f"name: expected 1 to {MAX_NAME_CHARS} characters without surrounding spaces, got {name!r}"
        )
    if role not in ROLES:
        raise BadRequest(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    if not isinstance(password, str) or len(password) < 8:
        raise BadRequest("password: expected at least 8 characters")
