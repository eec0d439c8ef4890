"""The evaluation report a person reads: report.json, report.md and PNG plots.

Training curves are read from every stage's `metrics.jsonl` in the run folder. Trainers name their
keys differently (`loss`, `train/loss`, `eval_loss`, `reward/mean`, `rewards/chosen`, `objective/kl`,
...), so keys are grouped by the words they contain rather than by a fixed list.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

# Matplotlib without a display: the report is written on headless machines and in tests.
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVE_GROUPS = ("loss", "reward", "kl", "accuracy")
_SKIP_WORDS = {"coef", "lr", "rate", "learning", "epoch", "time", "step", "norm", "grad", "runtime", "std"}


def curve_group(key: str) -> str | None:
    """Which plot a metrics key belongs on ("loss", "reward", "kl", "accuracy"), or None to leave it out."""
    words = [w for w in re.split(r"[/_.\-\s]+", key.lower()) if w]
    if not words or _SKIP_WORDS.intersection(words) or "per" in words:
        return None
    if "loss" in words or any(w.endswith("loss") for w in words):
        return "loss"
    if any(w == "kl" or w.startswith("kl") for w in words):
        return "kl"
    if any(w.startswith("acc") for w in words):
        return "accuracy"
    if any(w.startswith("reward") or w in ("score", "scores") for w in words):
        return "reward"
    return None


def extract_curves(rows: list[dict[str, Any]]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Group numeric series of metrics rows: {group: {key: (steps, values)}}; non-finite values are dropped."""
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for index, row in enumerate(rows):
        step = row.get("step", index)
        for key, value in row.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            group = curve_group(key)
            if group is None:
                continue
            steps, values = curves.setdefault(group, {}).setdefault(key, ([], []))
            steps.append(float(step))
            values.append(float(value))
    return curves


def plot_training_curves(stage: str, rows: list[dict[str, Any]], path: Path) -> bool:
    """One PNG with a panel per curve group found in a stage's metrics; False if there was nothing to plot."""
    curves = extract_curves(rows)
    groups = [g for g in CURVE_GROUPS if g in curves]
    if not groups:
        return False
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.4), squeeze=False)
    for ax, group in zip(axes[0], groups):
        for key, (steps, values) in sorted(curves[group].items()):
            style = "o-" if len(steps) < 20 else "-"
            ax.plot(steps, values, style, label=key, markersize=3, linewidth=1.2)
        ax.set_title(f"{stage}: {group}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_gold_vs_kl(models: dict[str, dict[str, Any]], path: Path, judge: str = "gold") -> bool:
    """Scatter of each model's mean gold score against its KL to the reference; False if no model has both."""
    points = [
        (name, m["kl_to_ref"], m["gold_score"])
        for name, m in models.items()
        if _finite(m.get("kl_to_ref")) and _finite(m.get("gold_score"))
    ]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, kl, gold in points:
        ax.scatter([kl], [gold], s=40)
        ax.annotate(name, (kl, gold), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("sequence KL to reference (nats)")
    ax.set_ylabel(f"mean {judge} score")
    ax.set_title("gold score against KL")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def ppo_held_out(rows: list[dict[str, Any]], stage_config: dict[str, Any]) -> dict[str, Any] | None:
    """A PPO run's held-out evaluations and which step's policy its model/ holds, from its metrics.jsonl rows.

    `stage_config` is the run's resolved config.yaml: it says which judge scored the evaluations and how the
    saved policy was chosen (select_by). None when the run logged no held-out evaluation.
    """
    by_step: dict[int, dict[str, Any]] = {}
    for row in rows:  # a resumed run may log a step twice: the later row is the one that counts
        if "eval/sqrt_kl" in row:
            by_step[int(row["step"])] = row
    if not by_step:
        return None
    selected = [row["eval/selected_step"] for row in rows if _finite(row.get("eval/selected_step"))]
    last_step = max(int(row.get("step", 0)) for row in rows)
    return {
        "evaluations": [
            {
                "step": step,
                "kl": row.get("eval/kl"),
                "sqrt_kl": row.get("eval/sqrt_kl"),
                "proxy": row.get("eval/score_raw"),
                "gold": row.get("eval/gold"),
            }
            for step, row in sorted(by_step.items())
        ],
        "judge": stage_config.get("eval_judge"),
        "select_by": stage_config.get("select_by", "last"),
        "selected_step": int(selected[-1]) if selected else last_step,
        "last_step": last_step,
    }


def plot_overoptimization(
    best_of_n: list[dict[str, float]],
    held_out: dict[str, list[dict[str, Any]]],
    path: Path,
    judge: str = "gold",
    selected: dict[str, int] | None = None,
) -> bool:
    """Gold and proxy (RM) score against sqrt(KL): the best-of-n curve beside each PPO run's held-out path.

    Two panels, as in Gao et al. 2022: the proxy the policy is optimized against, and the gold score it is
    meant to stand for; `selected` (stage -> step) stars the evaluation whose policy a run saved. False
    (nothing written) when there is neither a best-of-n curve nor a PPO path.
    """
    paths = {s: [r for r in rows if _finite(r.get("eval/gold"))] for s, rows in held_out.items()}
    paths = {s: rows for s, rows in paths.items() if rows}
    if not best_of_n and not paths:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, bon_key, ppo_key, title in (
        (axes[0], "gold", "eval/gold", "gold" if judge == "gold" else f"gold ({judge})"),
        (axes[1], "proxy", "eval/score_raw", "proxy (reward model)"),
    ):
        if best_of_n:
            label = f"best-of-n from {best_of_n[0].get('model', 'base')}"
            ax.plot([p["sqrt_kl"] for p in best_of_n], [p[bon_key] for p in best_of_n], "o-", label=label)
            for point in best_of_n:
                ax.annotate(
                    f"n={point['n']}",
                    (point["sqrt_kl"], point[bon_key]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        for stage, rows in paths.items():
            kept = [r for r in rows if _finite(r.get(ppo_key))]
            (line,) = ax.plot(
                [r["eval/sqrt_kl"] for r in kept],
                [r[ppo_key] for r in kept],
                "s--",
                label=f"{stage} (held-out)",
            )
            chosen = [r for r in kept if (selected or {}).get(stage) == r.get("step")]
            if chosen:  # the policy the run saved, when a held-out judge chose it
                ax.plot(
                    [chosen[-1]["eval/sqrt_kl"]],
                    [chosen[-1][ppo_key]],
                    "*",
                    markersize=14,
                    color=line.get_color(),
                    label=f"{stage}: saved policy (step {chosen[-1]['step']})",
                )
        ax.set_xlabel("sqrt(KL to the sampling/reference policy), sqrt(nats)")
        ax.set_ylabel(f"mean {title} score")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def compute_checks(
    models: dict[str, dict[str, Any]],
    model: str,
    baseline: str,
    min_gold_gain: float,
    min_distinct_ratio: float,
    max_perplexity_ratio: float,
) -> list[dict[str, Any]]:
    """The acceptance checks of an aligned model against its starting point, each with PASS/FAIL.

    - gold score gain: gold(model) - gold(baseline) >= min_gold_gain (the alignment worked);
    - diversity kept: distinct_2(model) >= min_distinct_ratio * distinct_2(baseline) (no collapse);
    - fluency kept: perplexity(model) <= max_perplexity_ratio * perplexity(baseline) (no drift off language).
    """
    if model not in models or baseline not in models:
        return []
    a, b = models[model], models[baseline]

    def check(name: str, value: float, limit: float, passed: bool, rule: str) -> dict[str, Any]:
        ok = passed and _finite(value)
        return {"name": name, "value": value, "limit": limit, "rule": rule, "passed": bool(ok)}

    gain = a["gold_score"] - b["gold_score"]
    ratio_d = a["distinct_2"] / b["distinct_2"] if b["distinct_2"] else float("nan")
    ratio_p = a["perplexity"] / b["perplexity"] if _finite(b.get("perplexity")) else float("nan")
    return [
        check(
            "gold_gain",
            gain,
            min_gold_gain,
            gain >= min_gold_gain,
            f"gold_score({model}) - gold_score({baseline}) >= {min_gold_gain}",
        ),
        check(
            "distinct_2_ratio",
            ratio_d,
            min_distinct_ratio,
            ratio_d >= min_distinct_ratio,
            f"distinct_2({model}) / distinct_2({baseline}) >= {min_distinct_ratio}",
        ),
        check(
            "perplexity_ratio",
            ratio_p,
            max_perplexity_ratio,
            ratio_p <= max_perplexity_ratio,
            f"perplexity({model}) / perplexity({baseline}) <= {max_perplexity_ratio}",
        ),
    ]


def more_checks(
    models: dict[str, dict[str, Any]], rm_stats: dict[str, Any], config: Any
) -> list[dict[str, Any]]:
    """The checks a config turns on beyond the three alignment checks, each with PASS/FAIL.

    - KL budget: kl_to_ref(check_model) <= check_max_kl;
    - instruction tuning taught something: response_loss(tuned) <= (1 - drop) * response_loss(base), and
      format_score(tuned) >= check_min_format_score;
    - reward model: held-out accuracy on pairs with rating gap >= 1 >= check_min_rm_accuracy.
    """
    checks = []

    def check(name: str, value: Any, limit: float, passed: bool, rule: str) -> None:
        ok = passed and _finite(value)
        checks.append({"name": name, "value": value, "limit": limit, "rule": rule, "passed": bool(ok)})

    model = models.get(config.check_model, {})
    if config.check_max_kl is not None and "kl_to_ref" in model:
        kl = model["kl_to_ref"]
        check(
            "kl_budget",
            kl,
            config.check_max_kl,
            kl <= config.check_max_kl,
            f"kl_to_ref({config.check_model}) <= {config.check_max_kl}",
        )
    tuned, base = models.get(config.check_tuned_model or ""), models.get(config.check_base_model or "")
    if tuned is not None and base is not None and "response_loss" in tuned and "response_loss" in base:
        drop = 1 - tuned["response_loss"] / base["response_loss"]
        rule = f"1 - response_loss({config.check_tuned_model}) / response_loss({config.check_base_model}) >= {config.check_min_response_loss_drop}"
        check(
            "response_loss_drop",
            drop,
            config.check_min_response_loss_drop,
            drop >= config.check_min_response_loss_drop,
            rule,
        )
    if tuned is not None and "format_score" in tuned:
        score = tuned["format_score"]
        rule = f"format_score({config.check_tuned_model}) >= {config.check_min_format_score}"
        check(
            "format_score", score, config.check_min_format_score, score >= config.check_min_format_score, rule
        )
    if config.check_min_rm_accuracy is not None:
        accuracy = rm_stats.get("accuracy_gap_ge_1", float("nan"))
        rule = (
            f"reward model accuracy on held-out pairs with rating gap >= 1 >= {config.check_min_rm_accuracy}"
        )
        check(
            "rm_accuracy_gap_ge_1",
            accuracy,
            config.check_min_rm_accuracy,
            accuracy >= config.check_min_rm_accuracy,
            rule,
        )
    return checks


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write the report as JSON atomically (non-finite floats become null: JSON has no NaN)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(report), indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


MODEL_COLUMNS = (
    ("gold_score", "gold score"),
    ("format_score", "format score"),
    ("response_loss", "response loss"),
    ("rm_score", "RM score"),
    ("kl_to_ref", "KL to ref"),
    ("perplexity", "perplexity"),
    ("distinct_1", "distinct-1"),
    ("distinct_2", "distinct-2"),
    ("mean_length", "length (tokens)"),
    ("win_rate_vs_baseline", "win rate (gold)"),
    ("win_rate_vs_baseline_rm", "win rate (RM)"),
)


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable report: metrics per model, checks, reward model, timings, plots, samples."""
    models: dict[str, dict[str, Any]] = report["models"]
    settings = report.get("settings", {})
    lines = [f"# Evaluation report: run `{report.get('run_name', '')}`", ""]
    lines += [
        f"{report.get('num_prompts', 0)} prompts from `{settings.get('prompts', '')}`, "
        f"sampled with seed {settings.get('seed')} (temperature {settings.get('temperature')}, "
        f"max {settings.get('max_new_tokens')} new tokens). Gold judge: `{settings.get('gold_judge')}` on "
        f"prompt + response. Baseline for win rates: `{report.get('baseline')}`; KL reference: "
        f"`{report.get('reference')}`. Perplexity on `{settings.get('perplexity_data')}`.",
        "",
        "## Models",
        "",
    ]
    columns = [(k, title) for k, title in MODEL_COLUMNS if any(k in m for m in models.values())]
    lines.append("| model | " + " | ".join(title for _, title in columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    for name, m in models.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(k)) for k, _ in columns) + " |")
    for name, m in models.items():
        extra = {k: v for k, v in m.items() if k.startswith("judge/")}
        if extra:
            lines.append(
                f"\nOther judges for `{name}`: " + ", ".join(f"{k[6:]} {_fmt(v)}" for k, v in extra.items())
            )
    lines.append("")
    checks = report.get("checks") or []
    if checks:
        lines += ["## Checks", "", "| check | rule | value | result |", "|---|---|---|---|"]
        for c in checks:
            lines.append(
                f"| {c['name']} | {c['rule']} | {_fmt(c['value'])} | {'PASS' if c['passed'] else 'FAIL'} |"
            )
        lines += ["", f"All checks: **{'PASS' if all(c['passed'] for c in checks) else 'FAIL'}**", ""]
    rm = report.get("reward_model") or {}
    if rm:
        lines += [
            "## Reward model",
            "",
            f"Path `{rm.get('path')}`; held-out pairwise accuracy (from reward_stats.json): "
            f"{_fmt(rm.get('eval_accuracy'))} overall, {_fmt(rm.get('accuracy_gap_ge_1'))} on pairs whose mean "
            "human ratings differ by at least 1.",
            "",
        ]
    for stage, held_out in (report.get("ppo_held_out") or {}).items():
        lines += held_out_markdown(stage, held_out)
    best_of_n = report.get("best_of_n") or []
    if best_of_n:
        lines += [
            f"## Best-of-n from `{best_of_n[0].get('model')}`",
            "",
            "The reward model's favourite of n samples, graded by the gold judge; KL = log n - (n-1)/n.",
            "",
            "| n | KL (nats) | RM score | gold score |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {p['n']} | {_fmt(p['kl'])} | {_fmt(p['proxy'])} | {_fmt(p['gold'])} |" for p in best_of_n
        ]
        lines.append("")
    timings = report.get("timings_s") or {}
    if timings:
        lines += ["## Wall time per stage (s)", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {stage} | {_fmt(seconds)} |" for stage, seconds in timings.items()]
        lines.append("")
    plots = report.get("plots") or []
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    samples = report.get("samples") or []
    if samples:
        names = list(models)
        lines += [
            "## Sample responses",
            "",
            "| prompt | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for row in samples:
            cells = [_cell(row["prompt"])] + [_cell(row["responses"].get(n, "")) for n in names]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def held_out_markdown(stage: str, held_out: dict[str, Any]) -> list[str]:
    """The report section for one PPO run's held-out evaluations, saying which policy its model/ holds."""
    judge = held_out.get("judge") or "no judge"
    if held_out.get("select_by") == "gold":
        kept = (
            f"`{stage}/model` holds the policy of step {held_out['selected_step']} of {held_out['last_step']}: "
            f"the best held-out score of `{judge}` (select_by: gold)"
        )
        accuracy = held_out.get("judge_accuracy")
        if accuracy is not None:
            kept += (
                f"; that judge is a reward model trained on other comparisons, held-out pairwise accuracy "
                f"{_fmt(accuracy)}"
            )
    else:
        kept = f"`{stage}/model` holds the last step's policy (step {held_out['last_step']}; select_by: last)"
    lines = [
        f"## Held-out evaluations during `{stage}`",
        "",
        kept + ".",
        "",
        f"| step | KL (nats) | RM score | {judge} | saved |",
        "|---|---|---|---|---|",
    ]
    for row in held_out["evaluations"]:
        saved = "yes" if row["step"] == held_out["selected_step"] else ""
        lines.append(
            f"| {row['step']} | {_fmt(row['kl'])} | {_fmt(row['proxy'])} | {_fmt(row['gold'])} | {saved} |"
        )
    return lines + [""]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def _cell(text: str) -> str:
    # A markdown table cell must stay on one line and must not contain a bare pipe.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ").strip() or " "


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
