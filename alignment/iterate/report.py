"""The rounds report a person reads: one row per round, the best-of-n baseline, the plot."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    ("round", "round"),
    ("rankings", "new rankings"),
    ("rm_train_rankings", "RM trains on"),
    ("labeler_agreement", "labeler agreement"),
    ("rm_accuracy_before", "RM acc. before"),
    ("rm_accuracy_after", "RM acc. after"),
    ("gold_start", "gold at start"),
    ("gold", "gold after PPO"),
    ("gold_sft", "gold SFT"),
    ("rm_score", "RM score"),
    ("kl_to_sft", "KL to SFT"),
    ("perplexity", "perplexity"),
    ("distinct_2", "distinct-2"),
    ("ppo_step_kept", "PPO step kept"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: the round table, what each column means, the plot."""
    settings = report.get("settings", {})
    lines = [
        f"# Iterated RLHF: run `{report.get('run_name')}`",
        "",
        f"Per round: {settings.get('prompts_per_round')} fresh prompts x {settings.get('completions_per_prompt')} "
        f"samples from the current policy, ranked by {settings.get('labeler')}; "
        f"{settings.get('heldout_fraction')} of the prompts held out. Reward model: {settings.get('reward_init')} "
        "start, trained on every round's rankings so far. RM accuracy is on the new round's held-out "
        "comparisons, with the previous round's RM (before) and the retrained one (after). Gold: the gold "
        "judge's mean score on the evaluation prompts; RM score: the round's retrained RM on the same samples "
        "(each round has its own RM, so compare it within a row, not down the column); KL is the sequence KL to "
        "the SFT model. PPO step kept: the step whose policy the round saved and the next round starts from "
        "(gold: the best held-out score of PPO's eval_judge; last: the final step).",
        "",
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in report.get("rounds", []):
        lines.append("| " + " | ".join(_fmt(row.get(key)) for key, _ in COLUMNS) + " |")
    lines.append("")
    curve = report.get("best_of_n") or []
    if curve:
        lines += [f"Best-of-n from `{curve[0].get('model')}` with round 1's reward model:", ""]
        lines += ["| n | KL | RM score | gold |", "|---|---|---|---|"]
        lines += [f"| {p['n']} | {_fmt(p['kl'])} | {_fmt(p['proxy'])} | {_fmt(p['gold'])} |" for p in curve]
        lines.append("")
    for plot in report.get("plots", []):
        lines += [f"![overoptimization]({plot})", ""]
    lines.append(f"Wall time: {report.get('wall_s')} s.")
    return "\n".join(lines) + "\n"
