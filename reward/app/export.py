"""Export stored labels for the reward stage, in the formats `alignment.core.formats` validates.

Files written into the export folder:
- rankings.jsonl : {prompt, completions, ranks} per ranked answer (1 = best, equal ranks are ties); a
  ranking that ties every candidate says nothing and is left out.
- pairs.jsonl    : {prompt, chosen, rejected} for every untied candidate pair of every ranking. Ties never
  enter this file (a tie is no preference); with `keep_ties` they go to pairs_ties.jsonl as
  {prompt, a, b, labeler, item_id} so they stay available as metadata.
- records.jsonl  : every stored answer (rank, skip, all unacceptable) with labeler, order shown, ranks,
  comment, seconds spent and time: the full audit trail.
- agreement.json : `agreement.agreement_report` over the ranked answers.
Several labelers' rankings of one item are all exported (one row each): the reward stage groups rows by
prompt, so its train/eval split keeps them together. Rows of items loaded for an iterate round carry
`round` (rankings and pairs; records.jsonl always has it, null for items without one); `alignment label
export --round N` exports one round's records only.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any

from alignment.core.formats import write_jsonl
from reward.app.agreement import agreement_report


def _round_tag(record: dict[str, Any]) -> dict[str, int]:
    """{"round": r} for a record of a round's item, else {}: untagged exports keep their old columns."""
    return {} if record.get("round") is None else {"round": record["round"]}


def ranking_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rankings-format rows from stored records (ranked answers with at least two distinct ranks)."""
    return [
        {"prompt": r["prompt"], "completions": r["completions"], "ranks": r["ranks"], **_round_tag(r)}
        for r in records
        if r["action"] == "rank" and len(set(r["ranks"])) > 1
    ]


def pair_rows(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(preference pairs, tied pairs) from the ranked records; the better candidate is `chosen`."""
    pairs, ties = [], []
    for r in records:
        if r["action"] != "rank":
            continue
        for i, j in combinations(range(len(r["completions"])), 2):
            a, b = r["completions"][i], r["completions"][j]
            if r["ranks"][i] == r["ranks"][j]:
                ties.append(
                    {
                        "prompt": r["prompt"],
                        "a": a,
                        "b": b,
                        "labeler": r["labeler"],
                        "item_id": r["item_id"],
                        **_round_tag(r),
                    }
                )
            elif r["ranks"][i] < r["ranks"][j]:
                pairs.append({"prompt": r["prompt"], "chosen": a, "rejected": b, **_round_tag(r)})
            else:
                pairs.append({"prompt": r["prompt"], "chosen": b, "rejected": a, **_round_tag(r)})
    return pairs, ties


def export_all(
    records: list[dict[str, Any]], folder: str | Path, keep_ties: bool = False, alpha_metric: str = "ordinal"
) -> dict[str, Any]:
    """Write the export files; returns counts, file paths and the agreement statistics."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rankings = ranking_rows(records)
    pairs, ties = pair_rows(records)
    ranked = [r for r in records if r["action"] == "rank"]
    agreement = agreement_report(ranked, metric=alpha_metric)
    files = {
        "rankings": folder / "rankings.jsonl",
        "pairs": folder / "pairs.jsonl",
        "records": folder / "records.jsonl",
        "agreement": folder / "agreement.json",
    }
    write_jsonl(rankings, files["rankings"])
    write_jsonl(pairs, files["pairs"])
    write_jsonl(
        (
            {
                **{
                    k: r[k]
                    for k in (
                        "id",
                        "labeler",
                        "item_id",
                        "action",
                        "order_shown",
                        "ranks",
                        "comment",
                        "seconds_spent",
                        "created_at",
                    )
                },
                "round": r.get("round"),
            }
            for r in records
        ),
        files["records"],
    )
    if keep_ties:
        files["ties"] = folder / "pairs_ties.jsonl"
        write_jsonl(ties, files["ties"])
    tmp = files["agreement"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(agreement, indent=2))
    tmp.replace(files["agreement"])
    return {
        "records": len(records),
        "rankings": len(rankings),
        "pairs": len(pairs),
        "tied_pairs": len(ties),
        "skipped": sum(r["action"] == "skip" for r in records),
        "all_unacceptable": sum(r["action"] == "unacceptable" for r in records),
        "files": {name: str(path) for name, path in files.items()},
        "agreement": agreement,
    }
