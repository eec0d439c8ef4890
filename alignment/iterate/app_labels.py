"""One round's rankings from people (`labeler: app`): load the samples into the labeling app, wait, export.

The loop and the app share only the app's SQLite database (WAL: several processes may use it at once), so
the app can stay up the whole time (`alignment label --config <app_config>`) and labelers keep their
sessions across rounds; between rounds it simply has nothing to hand out. Each step is idempotent: a loop
killed while it waits, run again, finds the round's items already loaded (none is added twice), keeps every
answer given, and waits on. The round ends when every item has `app_overlap` answers or an admin closes it
(page, API `/close_round`, or `alignment label close-round`); the loop then closes it too, so no answer is
taken after the export that the reward model would never see.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignment.core.errors import ConfigError, UserError
from alignment.core.formats import read_jsonl
from alignment.iterate.config import Config
from reward.app.config import LabelConfig
from reward.app.export import export_all
from reward.app.store import LabelStore, RoundOwned


class LabelingTimedOut(UserError):
    """The round was neither complete nor closed within `app_timeout_minutes`; a rerun waits on."""


def load_round(store: LabelStore, rows: list[dict], number: int, owner: str) -> dict[str, int]:
    """Put the round's sample rows into the app as items tagged `round = number` (once, however often called)."""
    items = [(row["prompt"], list(row["completions"])) for row in rows]
    try:
        added, present = store.add_round_items(
            number, owner, items, source=f"iterate round {number} ({owner})"
        )
    except RoundOwned as err:
        raise ConfigError(
            f"app_config: {err}, not by this run ({owner}); give each iterate run its own app database (db_path)"
        ) from None
    return {"items": len(items), "added": added, "already_loaded": present}


def progress_line(status: dict[str, Any], overlap: int) -> str:
    """What the waiting loop prints, e.g. `round 2: 31/48 items have 3 rankings (95 answers in all)`."""
    line = (
        f"round {status['round']}: {status['complete']}/{status['items']} items have {overlap} "
        f"ranking{'s' if overlap != 1 else ''} ({status['answers']} answers in all)"
    )
    return line + (f"; closed by {status['closed_by']}" if status["closed"] else "")


def wait_for_round(
    store: LabelStore,
    number: int,
    overlap: int,
    poll_s: float,
    timeout_s: float | None,
    say: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll until every item of the round has `overlap` answers or the round is closed; returns its status.

    An answer is a ranking or an "all unacceptable" (both hold one of an item's slots in the app; an item
    every labeler finds unacceptable is done). The progress line is printed when it changes.
    """
    started = clock()
    shown = None
    while True:
        status = store.round_status(number, overlap)
        if status is None:  # loaded moments ago: only a different database could lack it
            raise ConfigError(f"app_config: round {number} is not in {store.path}")
        if (status["complete"], status["answers"], status["closed"]) != shown:
            say(progress_line(status, overlap))
            shown = (status["complete"], status["answers"], status["closed"])
        if status["closed"] or status["complete"] >= status["items"]:
            return status
        waited = clock() - started
        if timeout_s is not None and waited >= timeout_s:
            raise LabelingTimedOut(
                f"{progress_line(status, overlap)} after {waited / 60:.1f} min (app_timeout_minutes); run the "
                f"same command again to wait on, or close the round: alignment label close-round --db "
                f"{store.path} --round {number}"
            )
        sleep(poll_s if timeout_s is None else max(0.0, min(poll_s, timeout_s - waited)))


def export_round(
    store: LabelStore, app: LabelConfig, number: int, folder: Path
) -> tuple[list[dict], dict[str, Any]]:
    """Export the round's records into `folder` (rankings, pairs, records, agreement); its rankings and stats."""
    summary = export_all(store.records(round_number=number), folder, app.keep_ties, app.alpha_metric)
    rankings = read_jsonl(Path(summary["files"]["rankings"]))
    overall = summary["agreement"]["overall"]
    stats = {
        "records": summary["records"],
        "skipped": summary["skipped"],
        "all_unacceptable": summary["all_unacceptable"],
        # labelers' agreement with each other on shared items (the simulated labeler's is with its judge)
        "measured_agreement": overall["pairwise_agreement"],
        "items_with_overlap": overall["items_with_overlap"],
    }
    return rankings, stats


def label(
    config: Config, rows: list[dict], number: int, folder: Path, say: Callable[[str], None]
) -> tuple[list[dict], dict[str, Any]]:
    """The round's rankings from the app: load, wait (complete or closed), close, export into `folder/app/`."""
    started = time.perf_counter()
    app = config.app_label_config()
    overlap = config.app_overlap or app.overlap
    store = LabelStore(app.database)
    try:
        loaded = load_round(store, rows, number, owner=str(folder.parent.resolve()))
        say(
            f"{loaded['items']} items in the labeling app ({loaded['added']} added, {loaded['already_loaded']} "
            f"there already; database {app.database}); waiting for {overlap} rankings each or an admin's "
            f"close_round"
        )
        timeout_s = None if config.app_timeout_minutes is None else config.app_timeout_minutes * 60
        status = wait_for_round(store, number, overlap, config.app_poll_seconds, timeout_s, say)
        if not status["closed"]:
            store.close_round(number, closed_by="iterate (complete)")
        rankings, stats = export_round(store, app, number, folder / "app")
    finally:
        store.close()
    return rankings, {
        **stats,
        "items": status["items"],
        "items_complete": status["complete"],
        "closed_by": status["closed_by"] or "iterate (complete)",
        "wall_s": round(time.perf_counter() - started, 2),  # this run's wait, not the earlier ones'
    }
