"""The reasoning report a person reads: report.json, report.md, the self-consistency curve as a PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# Matplotlib without a display: reports are written on headless machines and in tests.
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MODE_TITLES = {
    "direct": "direct (0-shot)",
    "few_shot": "few-shot",
    "cot": "few-shot CoT",
    "zero_shot_cot": "zero-shot CoT",
    "self_consistency": "self-consistency",
}


def write_json(report: dict[str, Any], path: Path) -> None:
    """Write the report as JSON atomically (non-finite floats become null)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(report), indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_samples(rows: list[dict[str, Any]], path: Path) -> None:
    """samples.jsonl: one line per prompt (and variant), written atomically."""
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(_clean(r), ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(path)


def plot_sc_curves(curves: dict[str, dict[str, dict[str, Any]]], path: Path) -> bool:
    """Self-consistency accuracy against n = 1..N with its 95% band: a panel per task, a line per model."""
    tasks = sorted({task for per_task in curves.values() for task in per_task})
    if not tasks:
        return False
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for model, per_task in curves.items():
            sc = per_task.get(task)
            if not sc:
                continue
            n = list(range(1, len(sc["curve"]) + 1))
            ax.plot(n, sc["curve"], "o-", label=model, markersize=3)
            ax.fill_between(n, sc["curve_ci_low"], sc["curve_ci_high"], alpha=0.15)
            if sc.get("greedy_cot") is not None:
                ax.axhline(sc["greedy_cot"], linestyle="--", linewidth=0.8, color=ax.lines[-1].get_color())
        ax.set_title(f"{task}: self-consistency@n")
        ax.set_xlabel("sampled paths voted (n)")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="dashed: greedy CoT", title_fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: settings, the accuracy table (models side by side), costs, curves, sensitivity, classification."""
    models = list(report["models"])
    s = report["settings"]
    lines = [f"# Reasoning and in-context evaluation: run `{report['run_name']}`", ""]
    env = report.get("environment", {})
    described = ", ".join(f"`{m}` ({v['path']}, {v['prompt_style']})" for m, v in report["models"].items())
    lines += [
        f"Models: {described}. "
        f"Seed {s['seed']}; {s['shots']}-shot prompts; self-consistency N = {s['num_samples']} at temperature "
        f"{s['temperature']} (top-k {s['top_k']}, top-p {s['top_p']}) on the first {s['sc_items']} items; "
        f"greedy decoding elsewhere. Accuracy with a 95% Wilson interval; right means the task's checker "
        f"scored the extracted answer 1.0.",
        "",
        f"Machine: {env.get('threads')} torch thread(s), load average {env.get('load_start')} at the start and "
        f"{env.get('load_end')} at the end; wall time {_fmt(report.get('wall_s'))} s.",
        "",
    ]
    if report.get("tasks"):
        lines += [
            "## Tasks",
            "",
            "| task | source | test items | exemplar pool | answers | why |",
            "|---|---|---|---|---|---|",
        ]
        for name, t in report["tasks"].items():
            lines.append(
                f"| {name} | `{t['source']}` | {t['n_items']} | {t['n_exemplars']} | {t['kind']} | {_cell(t.get('why') or '')} |"
            )
        lines += ["", "## Accuracy", ""]
        lines += ["| task | mode | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
        for task in report["tasks"]:
            for mode in MODE_TITLES:
                cells = [_acc(_find(report["results"], m, task, mode)) for m in models]
                if any(c != "" for c in cells):
                    lines.append(f"| {task} | {MODE_TITLES[mode]} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "## Cost per mode",
            "",
            "| model | task | mode | items | tokens generated | seconds | no answer |",
        ]
        lines.append("|---|---|---|---|---|---|---|")
        for r in report["results"]:
            lines.append(
                f"| {r['model']} | {r['task']} | {MODE_TITLES[r['mode']]} | {r['n']} | {r['tokens']} | "
                f"{_fmt(r['seconds'])} | {r['no_answer']} |"
            )
        lines.append("")
    sc = report.get("self_consistency") or {}
    if sc:
        lines += ["## Self-consistency curve", ""]
        for model, per_task in sc.items():
            for task, c in per_task.items():
                points = ", ".join(f"@{n + 1} {v:.3f}" for n, v in enumerate(c["curve"]))
                lines.append(
                    f"- `{model}` / {task} ({c['n_items']} items): {points}; vote agreement {c['agreement']:.3f}; "
                    f"some path right: {c['any_correct']}/{c['n_items']}"
                )
        lines += [""] + [f"![{Path(p).stem}]({p})" for p in report.get("plots", [])] + [""]
    sens = report.get("sensitivity") or {}
    if any(sens.values()):
        lines += [
            "## Sensitivity to exemplar order (reasoning)",
            "",
            "| model | task | mode | orders | mean | min | max |",
        ]
        lines.append("|---|---|---|---|---|---|---|")
        for model, per_task in sens.items():
            for task, per_mode in per_task.items():
                for mode, sp in per_mode.items():
                    lines.append(
                        f"| {model} | {task} | {MODE_TITLES[mode]} | {sp['count']} | {sp['mean']:.3f} | "
                        f"{sp['min']:.3f} | {sp['max']:.3f} |"
                    )
        lines.append("")
    cls = report.get("classification") or {}
    if cls:
        lines += _classification_lines(cls, models)
    samples = report.get("examples") or []
    if samples:
        lines += ["## Examples", "", "| model | task | mode | reference | extracted | right | generation |"]
        lines.append("|---|---|---|---|---|---|---|")
        for e in samples:
            generation = e["generation"] if isinstance(e["generation"], str) else e["generation"][0]
            lines.append(
                f"| {e['model']} | {e['task']} | {MODE_TITLES[e['mode']]} | {e['reference']} | {e['extracted']} | "
                f"{'yes' if e['correct'] else 'no'} | {_cell(generation[:200])} |"
            )
        lines.append("")
    return "\n".join(lines)


def _classification_lines(cls: dict[str, Any], models: list[str]) -> list[str]:
    first = next(iter(cls.values()))
    lines = [
        "## In-context sentiment classification",
        "",
        f"{first['n_items']} held-out snippets ({first['source']}, classes balanced, chance 0.5); label words "
        f"scored by log-likelihood, no sampling. Main prompt: order 0, label words {first['label_words'][0]}, "
        f"format {first['formats'][0]!r}. Calibrated: contextual calibration (Zhao et al. 2021).",
        "",
        "| shots | " + " | ".join(f"{m} | {m} calibrated" for m in cls) + " |",
        "|---|" + "---|---|" * len(cls),
    ]
    shots = sorted({int(k) for c in cls.values() for k in c["by_shots"]})
    for k in shots:
        cells = []
        for c in cls.values():
            main = c["by_shots"].get(str(k), {}).get("main", {})
            cells += [_acc(main.get("raw")), _acc(main.get("calibrated"))]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Spread of accuracy (mean [min, max] over variants; each axis varied alone around the main prompt; "
        "for one shot, 'order' means a different exemplar):",
        "",
        "| model | shots | axis | variants | raw | calibrated |",
        "|---|---|---|---|---|---|",
    ]
    for model, c in cls.items():
        for k in shots:
            for axis, sp in (c["by_shots"].get(str(k), {}).get("spread") or {}).items():
                lines.append(
                    f"| {model} | {k} | {axis} | {sp['raw']['count']} | {_range(sp['raw'])} | {_range(sp['calibrated'])} |"
                )
    lines.append("")
    return lines


def _find(results: list[dict[str, Any]], model: str, task: str, mode: str) -> dict[str, Any] | None:
    return next((r for r in results if (r["model"], r["task"], r["mode"]) == (model, task, mode)), None)


def _acc(r: dict[str, Any] | None) -> str:
    if not r or r.get("accuracy") is None:
        return ""
    return f"{r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] (n={r['n']})"


def _range(sp: dict[str, Any] | None) -> str:
    if not sp:
        return ""
    return f"{sp['mean']:.3f} [{sp['min']:.3f}, {sp['max']:.3f}]"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if math.isfinite(value) else "n/a"
    return "n/a" if value is None else str(value)


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
