"""SQLite storage for the labeling app: users, sessions, items, assignments and append-only records.

Why it is safe under load and crashes:
- WAL journal, and `synchronous=FULL` for the transactions that store answers: the record is on disk
  when COMMIT returns, so a submission the server acknowledged survives a killed process (and a power
  cut); readers never block the writer.
- One connection per thread (sqlite3 connections must not be shared across threads without a lock)
  with a `busy_timeout`; writes of this process take turns on a lock, and use `BEGIN IMMEDIATE` so
  writers of different processes queue up instead of deadlocking on a read-to-write lock upgrade.
- One transaction per submission: the record row is written whole or not at all.
- `records` is append-only: triggers abort any UPDATE or DELETE. A labeler has at most one record per item
  (UNIQUE), so a retried submission is acknowledged again without being stored twice, and a different
  second answer is refused (`AnswerConflict`).

Rounds (`alignment iterate` with `labeler: app`): items loaded for round r carry `round = r`, and the
`rounds` table says which iterate run opened the round and whether it is closed. A closed round's items are
no longer handed out or answered: its rankings have been exported to the reward model, and an answer given
after that would never reach it. Databases made before rounds existed gain the column when opened
(`PRAGMA user_version` 0 -> 2; their items have no round and behave as before).
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ACTIONS = ("rank", "skip", "unacceptable")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('labeler', 'admin')),
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_digest TEXT PRIMARY KEY,
    name TEXT NOT NULL REFERENCES users(name),
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    content_key TEXT NOT NULL UNIQUE,
    prompt TEXT NOT NULL,
    completions TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at REAL NOT NULL,
    round INTEGER
);
CREATE TABLE IF NOT EXISTS assignments (
    labeler TEXT NOT NULL REFERENCES users(name),
    item_id INTEGER NOT NULL REFERENCES items(id),
    order_shown TEXT NOT NULL,
    assigned_at REAL NOT NULL,
    shown_at REAL NOT NULL,
    PRIMARY KEY (labeler, item_id)
);
CREATE INDEX IF NOT EXISTS assignments_by_item ON assignments(item_id);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    labeler TEXT NOT NULL REFERENCES users(name),
    item_id INTEGER NOT NULL REFERENCES items(id),
    action TEXT NOT NULL CHECK (action IN ('rank', 'skip', 'unacceptable')),
    order_shown TEXT NOT NULL,
    ranks TEXT,
    comment TEXT NOT NULL,
    seconds_spent REAL NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (labeler, item_id)
);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'records are append-only'); END;
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    loaded_at REAL NOT NULL,
    closed_at REAL,
    closed_by TEXT
);
"""
# 2: items.round and the rounds table. Version 0 is a database from before rounds (no user_version set).
SCHEMA_VERSION = 2

# Item `i` is live unless it belongs to a closed round (an item without a round never is in one).
LIVE_ITEM = "NOT EXISTS (SELECT 1 FROM rounds c WHERE c.round = i.round AND c.closed_at IS NOT NULL)"


# An item `:me` may be given: live, never given to them before, and held by fewer than `:overlap` labelers
# (those who answered it other than by skipping, or were given it after `:stale` and have not answered yet).
OPEN_ITEM = (
    LIVE_ITEM + " AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.item_id = i.id AND a.labeler = :me) "
    "AND (SELECT COUNT(*) FROM assignments a LEFT JOIN records r ON r.labeler = a.labeler AND r.item_id = a.item_id "
    "     WHERE a.item_id = i.id AND (r.action IN ('rank', 'unacceptable') "
    "           OR (r.id IS NULL AND a.assigned_at > :stale))) < :overlap"
)


class NotAssignedError(LookupError):
    """A labeler submitted for an item that was never shown to them."""


class AnswerConflict(ValueError):
    """A labeler answered an item again, differently from the record already stored."""

    def __init__(self, record_id: int):
        super().__init__(f"a different answer is already stored (record {record_id})")
        self.record_id = record_id


class RoundClosed(ValueError):
    """An answer to an item of a round that is closed (its rankings were exported already)."""

    def __init__(self, round_number: int):
        super().__init__(f"round {round_number} is closed")
        self.round_number = round_number


class RoundOwned(ValueError):
    """Loading round r for one iterate run into a database where another run opened round r."""


def content_key(prompt: str, completions: list[str], round_number: int | None = None) -> str:
    """Identity of an item: loading the same prompt and candidates twice (for the same round) adds it once.

    Items without a round keep the key they always had; a round's items include the round, so a rerun of
    the round finds them, and they never merge with an item loaded by hand.
    """
    key: list[Any] = [prompt, completions] if round_number is None else [prompt, completions, round_number]
    return hashlib.sha256(json.dumps(key, ensure_ascii=False).encode()).hexdigest()


# An unanswered assignment of a live item (`a` assignments, `i` their items).
OPEN_ASSIGNMENT = (
    "NOT EXISTS (SELECT 1 FROM records r WHERE r.labeler = a.labeler AND r.item_id = a.item_id) AND "
    + LIVE_ITEM
)


class LabelStore:
    """All database access of the app; safe to call from many threads at once."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 30_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        # Writers in this process take turns here: SQLite's own busy handler backs off with sleeps of up
        # to 100 ms, which under 20 concurrent writers costs far more than the writes themselves.
        # (busy_timeout still covers writers in other processes, such as the CLI.)
        self._write_lock = threading.Lock()
        conn = self._connection()
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(
                f"{self.path}: SQLite refused WAL mode (got {mode!r}); is it on a network drive?"
            )
        conn.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a database made by an older version up to `SCHEMA_VERSION`, keeping every row.

        In one IMMEDIATE transaction, so two processes opening an old file at once migrate it once (the
        second waits, then finds the column there).
        """
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version >= SCHEMA_VERSION:
                return
            columns = {row["name"] for row in conn.execute("PRAGMA table_info(items)")}
            if "round" not in columns:
                conn.execute("ALTER TABLE items ADD COLUMN round INTEGER")
            conn.execute("CREATE INDEX IF NOT EXISTS items_by_round ON items(round)")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -----------------------------------------------------------------------------------------
    # Connections and transactions

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread, kept open: sqlite3 connections must not be shared between threads,
        # and opening one per call is slow in WAL mode (closing the last one checkpoints the log).
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: no implicit transactions; writes open their own with BEGIN IMMEDIATE.
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        yield self._connection()

    @contextmanager
    def _transaction(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction; `durable` ones are fsynced before COMMIT returns.

        In WAL mode `synchronous=NORMAL` survives a crash of the process but may lose the last commits on
        a power cut; `FULL` survives both. Records (acknowledged answers) use FULL, which also makes
        every earlier commit in the log durable; sessions and assignments can use NORMAL.
        """
        conn = self._connection()
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection (call when no other thread uses the store any more)."""
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # -----------------------------------------------------------------------------------------
    # Users and sessions

    def add_user(self, name: str, role: str, password_hash: str, replace: bool = False) -> bool:
        """Create (or with `replace`, reset) an account; returns False if it existed and was kept."""
        with self._transaction() as conn:
            exists = conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone()
            if exists and not replace:
                return False
            conn.execute(
                "INSERT INTO users (name, role, password_hash, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET role = excluded.role, password_hash = excluded.password_hash",
                (name, role, password_hash, time.time()),
            )
            if exists:  # a reset password ends the user's open sessions
                conn.execute("DELETE FROM sessions WHERE name = ?", (name,))
            return True

    def user(self, name: str) -> dict[str, str] | None:
        """{name, role, password_hash} or None."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT name, role, password_hash FROM users WHERE name = ?", (name,)
            ).fetchone()
        return dict(row) if row else None

    def users(self) -> list[dict[str, str]]:
        """Every account's name and role."""
        with self._connect() as conn:
            return [dict(r) for r in conn.execute("SELECT name, role FROM users ORDER BY name")]

    def create_session(self, name: str, token_digest: str, lifetime_s: float) -> None:
        """Remember a login (by the token's digest) until it expires; old expired sessions are dropped."""
        now = time.time()
        with self._transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            conn.execute(
                "INSERT INTO sessions (token_digest, name, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (token_digest, name, now, now + lifetime_s),
            )

    def session_user(self, token_digest: str) -> dict[str, str] | None:
        """{name, role} of a live session, or None."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT u.name, u.role FROM sessions s JOIN users u ON u.name = s.name "
                "WHERE s.token_digest = ? AND s.expires_at > ?",
                (token_digest, time.time()),
            ).fetchone()
        return dict(row) if row else None

    def end_session(self, token_digest: str) -> None:
        """Log out."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE token_digest = ?", (token_digest,))

    # -----------------------------------------------------------------------------------------
    # Items

    def add_items(self, items: list[tuple[str, list[str]]], source: str) -> tuple[int, int]:
        """Insert (prompt, completions) items in one transaction; returns (added, already present)."""
        with self._transaction() as conn:
            added = self._insert_items(conn, items, source, None)
        return added, len(items) - added

    @staticmethod
    def _insert_items(
        conn: sqlite3.Connection, items: list[tuple[str, list[str]]], source: str, round_number: int | None
    ) -> int:
        """Insert items not present yet (by `content_key`) inside the caller's transaction; how many were new."""
        added = 0
        now = time.time()
        for prompt, completions in items:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO items (content_key, prompt, completions, source, created_at, round) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    content_key(prompt, completions, round_number),
                    prompt,
                    json.dumps(completions, ensure_ascii=False),
                    source,
                    now,
                    round_number,
                ),
            )
            added += cursor.rowcount
        return added

    def add_round_items(
        self, round_number: int, owner: str, items: list[tuple[str, list[str]]], source: str
    ) -> tuple[int, int]:
        """Open round `round_number` for `owner` (an iterate run) and insert its items, in one transaction.

        Idempotent: loading the same round again adds nothing and keeps every answer. A round opened by
        another owner is refused (`RoundOwned`): two runs' round 1 in one database would mix.
        """
        with self._transaction() as conn:
            row = conn.execute("SELECT owner FROM rounds WHERE round = ?", (round_number,)).fetchone()
            if row is not None and row["owner"] != owner:
                raise RoundOwned(f"round {round_number} in {self.path} was opened by {row['owner']}")
            if row is None:
                conn.execute(
                    "INSERT INTO rounds (round, owner, loaded_at) VALUES (?, ?, ?)",
                    (round_number, owner, time.time()),
                )
            added = self._insert_items(conn, items, source, round_number)
        return added, len(items) - added

    def close_round(self, round_number: int, closed_by: str) -> bool:
        """Close a round: its items are no longer handed out or answered. False if it was closed already.

        Raises LookupError for a round that was never loaded.
        """
        with self._transaction(durable=True) as conn:
            row = conn.execute("SELECT closed_at FROM rounds WHERE round = ?", (round_number,)).fetchone()
            if row is None:
                raise LookupError(f"no items of round {round_number} are loaded")
            if row["closed_at"] is not None:
                return False
            conn.execute(
                "UPDATE rounds SET closed_at = ?, closed_by = ? WHERE round = ?",
                (time.time(), closed_by, round_number),
            )
            return True

    def round_status(self, round_number: int, overlap: int) -> dict[str, Any] | None:
        """{round, owner, items, complete, answers, closed, closed_by} of one round, or None if never loaded.

        `complete` counts items with at least `overlap` answers that hold a slot (ranked or all
        unacceptable, as in `OPEN_ITEM`): an item every labeler finds unacceptable is done too.
        """
        with self._connect() as conn:
            row = conn.execute(
                "SELECT owner, closed_at, closed_by FROM rounds WHERE round = ?", (round_number,)
            ).fetchone()
            if row is None:
                return None
            counts = conn.execute(
                "SELECT COUNT(*) AS items, COALESCE(SUM(n >= ?), 0) AS complete, COALESCE(SUM(n), 0) AS answers "
                "FROM (SELECT i.id, (SELECT COUNT(*) FROM records r WHERE r.item_id = i.id "
                "AND r.action IN ('rank', 'unacceptable')) AS n FROM items i WHERE i.round = ?)",
                (overlap, round_number),
            ).fetchone()
        return {
            "round": round_number,
            "owner": row["owner"],
            "items": counts["items"],
            "complete": counts["complete"],
            "answers": counts["answers"],
            "closed": row["closed_at"] is not None,
            "closed_by": row["closed_by"],
        }

    def round_numbers(self) -> list[int]:
        """Every round loaded, in order."""
        with self._connect() as conn:
            return [r["round"] for r in conn.execute("SELECT round FROM rounds ORDER BY round")]

    def count_items(self) -> int:
        """Number of items loaded."""
        with self._connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def items(self) -> dict[int, dict[str, Any]]:
        """Every item by id: {prompt, completions, round} (round None for items loaded without one)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT id, prompt, completions, round FROM items").fetchall()
        return {
            r["id"]: {"prompt": r["prompt"], "completions": json.loads(r["completions"]), "round": r["round"]}
            for r in rows
        }

    # -----------------------------------------------------------------------------------------
    # Assignments

    def open_assignment(self, labeler: str) -> dict[str, Any] | None:
        """The item `labeler` was given and has not answered (oldest first), or None; assigns nothing."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT a.item_id, a.order_shown FROM assignments a JOIN items i ON i.id = a.item_id "
                "WHERE a.labeler = ? AND " + OPEN_ASSIGNMENT + " ORDER BY a.assigned_at LIMIT 1",
                (labeler,),
            ).fetchone()
            if row is None:
                return None
            item = conn.execute(
                "SELECT prompt, completions FROM items WHERE id = ?", (row["item_id"],)
            ).fetchone()
        order = json.loads(row["order_shown"])
        completions = json.loads(item["completions"])
        return {
            "item_id": row["item_id"],
            "prompt": item["prompt"],
            "order_shown": order,
            "candidates": [completions[i] for i in order],
        }

    def next_assignment(self, labeler: str, overlap: int, stale_after_s: float) -> dict[str, Any] | None:
        """The item to show `labeler` now: their unanswered one (resume), else a new one, else None.

        A new item is one the labeler has never been given and that fewer than `overlap` labelers hold:
        holders are labelers who ranked it or marked it unacceptable, or were given it less than
        `stale_after_s` ago and have not answered. Skips free the slot. Items fill up in id order, so
        overlapping labels accumulate on the same items (what agreement statistics need).
        The candidate order is shuffled once per (labeler, item) and kept, so a resumed item looks the same.
        """
        now = time.time()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT a.item_id, a.order_shown FROM assignments a JOIN items i ON i.id = a.item_id "
                "WHERE a.labeler = ? AND " + OPEN_ASSIGNMENT + " ORDER BY a.assigned_at LIMIT 1",
                (labeler,),
            ).fetchone()
            if row:
                item_id, order = row["item_id"], json.loads(row["order_shown"])
                conn.execute(
                    "UPDATE assignments SET shown_at = ? WHERE labeler = ? AND item_id = ?",
                    (now, labeler, item_id),
                )
            else:
                row = conn.execute(
                    "SELECT i.id, i.completions FROM items i WHERE " + OPEN_ITEM + " ORDER BY i.id LIMIT 1",
                    {"me": labeler, "stale": now - stale_after_s, "overlap": overlap},
                ).fetchone()
                if row is None:
                    return None
                item_id = row["id"]
                order = list(range(len(json.loads(row["completions"]))))
                random.SystemRandom().shuffle(order)
                conn.execute(
                    "INSERT INTO assignments (labeler, item_id, order_shown, assigned_at, shown_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (labeler, item_id, json.dumps(order), now, now),
                )
            item = conn.execute("SELECT prompt, completions FROM items WHERE id = ?", (item_id,)).fetchone()
        completions = json.loads(item["completions"])
        return {
            "item_id": item_id,
            "prompt": item["prompt"],
            "order_shown": order,
            "candidates": [completions[i] for i in order],
        }

    # -----------------------------------------------------------------------------------------
    # Records

    def add_record(
        self, labeler: str, item_id: int, action: str, ranks_shown: list[int] | None, comment: str
    ) -> tuple[int, bool]:
        """Store one answer in one transaction; returns (record id, False if it was already stored).

        `ranks_shown` are ranks in the order the labeler saw the candidates; they are stored in the item's
        own candidate order (what export needs) next to the order shown.
        """
        if action not in ACTIONS:
            raise ValueError(f"action: expected one of {ACTIONS}, got {action!r}")
        now = time.time()
        with self._transaction(durable=True) as conn:
            assignment = conn.execute(
                "SELECT order_shown, shown_at FROM assignments WHERE labeler = ? AND item_id = ?",
                (labeler, item_id),
            ).fetchone()
            if assignment is None:
                raise NotAssignedError(f"item {item_id} was not given to {labeler}")
            order = json.loads(assignment["order_shown"])
            ranks = None
            if ranks_shown is not None:
                if len(ranks_shown) != len(order):
                    raise ValueError(
                        f"ranks: expected {len(order)} ranks (one per candidate), got {len(ranks_shown)}"
                    )
                ranks = [0] * len(order)
                for position, original in enumerate(order):
                    ranks[original] = ranks_shown[position]
            done = conn.execute(
                "SELECT id, action, ranks FROM records WHERE labeler = ? AND item_id = ?", (labeler, item_id)
            ).fetchone()
            if done:  # a retry is acknowledged again; a different answer is not silently dropped
                if (
                    done["action"] == action
                    and (json.loads(done["ranks"]) if done["ranks"] else None) == ranks
                ):
                    return done["id"], False
                raise AnswerConflict(done["id"])
            closed = conn.execute(
                "SELECT c.round FROM items i JOIN rounds c ON c.round = i.round "
                "WHERE i.id = ? AND c.closed_at IS NOT NULL",
                (item_id,),
            ).fetchone()
            if closed:  # exported already: the answer would never reach the reward model
                raise RoundClosed(closed["round"])
            cursor = conn.execute(
                "INSERT INTO records (labeler, item_id, action, order_shown, ranks, comment, seconds_spent, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    labeler,
                    item_id,
                    action,
                    json.dumps(order),
                    json.dumps(ranks) if ranks else None,
                    comment,
                    round(now - assignment["shown_at"], 3),
                    now,
                ),
            )
            return cursor.lastrowid, True

    def records(self, labeler: str | None = None, round_number: int | None = None) -> list[dict[str, Any]]:
        """Records (all, one labeler's, or one round's) in the order stored, with their item's fields."""
        query = (
            "SELECT r.id, r.labeler, r.item_id, r.action, r.order_shown, r.ranks, r.comment, r.seconds_spent, "
            "r.created_at, i.prompt, i.completions, i.round FROM records r JOIN items i ON i.id = r.item_id"
        )
        where, params = [], []
        if labeler is not None:
            where.append("r.labeler = ?")
            params.append(labeler)
        if round_number is not None:
            where.append("i.round = ?")
            params.append(round_number)
        if where:
            query += " WHERE " + " AND ".join(where)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY r.id", params).fetchall()
        out = []
        for r in rows:
            row = dict(r)
            row["order_shown"] = json.loads(row["order_shown"])
            row["ranks"] = json.loads(row["ranks"]) if row["ranks"] else None
            row["completions"] = json.loads(row["completions"])
            out.append(row)
        return out

    def progress(self, overlap: int) -> dict[str, Any]:
        """Counts per labeler (ranked, unacceptable, skipped, open) and overall item coverage."""
        with self._connect() as conn:
            per_labeler: dict[str, dict[str, int]] = {
                r["name"]: {"rank": 0, "unacceptable": 0, "skip": 0, "open": 0}
                for r in conn.execute("SELECT name FROM users WHERE role = 'labeler' ORDER BY name")
            }
            for r in conn.execute(
                "SELECT labeler, action, COUNT(*) AS n FROM records GROUP BY labeler, action"
            ):
                per_labeler.setdefault(r["labeler"], {"rank": 0, "unacceptable": 0, "skip": 0, "open": 0})
                per_labeler[r["labeler"]][r["action"]] = r["n"]
            for r in conn.execute(
                "SELECT a.labeler, COUNT(*) AS n FROM assignments a JOIN items i ON i.id = a.item_id "
                "WHERE " + OPEN_ASSIGNMENT + " GROUP BY a.labeler"
            ):
                per_labeler.setdefault(r["labeler"], {"rank": 0, "unacceptable": 0, "skip": 0, "open": 0})
                per_labeler[r["labeler"]]["open"] = r["n"]
            items = conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
            complete = conn.execute(
                "SELECT COUNT(*) FROM (SELECT item_id FROM records WHERE action IN ('rank', 'unacceptable') "
                "GROUP BY item_id HAVING COUNT(*) >= ?)",
                (overlap,),
            ).fetchone()[0]
        rounds = [self.round_status(number, overlap) for number in self.round_numbers()]
        return {
            "items": items,
            "items_complete": complete,
            "overlap": overlap,
            "labelers": per_labeler,
            "rounds": rounds,
        }

    def labeler_progress(self, labeler: str, overlap: int, stale_after_s: float) -> dict[str, int]:
        """One labeler's own counts: done (ranked or all unacceptable), skipped, and items still available."""
        with self._connect() as conn:
            counts = {"rank": 0, "unacceptable": 0, "skip": 0}
            for r in conn.execute(
                "SELECT action, COUNT(*) AS n FROM records WHERE labeler = ? GROUP BY action", (labeler,)
            ):
                counts[r["action"]] = r["n"]
            counts["open"] = conn.execute(
                "SELECT COUNT(*) FROM assignments a JOIN items i ON i.id = a.item_id "
                "WHERE a.labeler = ? AND " + OPEN_ASSIGNMENT,
                (labeler,),
            ).fetchone()[0]
            counts["available"] = conn.execute(
                "SELECT COUNT(*) FROM items i WHERE " + OPEN_ITEM,
                {"me": labeler, "stale": time.time() - stale_after_s, "overlap": overlap},
            ).fetchone()[0]
        counts["done"] = counts["rank"] + counts["unacceptable"]
        return counts
