"""`alignment reason`: reasoning and in-context evaluation of one or more checkpoints, every number with its CI.

For every model in `models` and every task in `tasks` it runs the modes asked for: direct answers (zero-shot
and k-shot), few-shot chain of thought, zero-shot chain of thought (two stages) and self-consistency (N
sampled paths voted, the curve n = 1..N from the same samples); then zero/one/few-shot sentiment
classification by label-word likelihood, with contextual calibration and its sensitivity to exemplar
order, label words and prompt format. The same prompts, exemplars and seeds serve every model, so
checkpoints (base, SFT, PPO, a user's model) sit side by side in one table.

Output in `runs/<run_name>/reason/`: report.json, report.md, plots/self_consistency.png and samples.jsonl
(every prompt, generation, extracted answer and verdict).

    alignment reason --config configs/reason/tiny.yaml
    alignment reason --config configs/reason/smollm2.yaml
    alignment reason --models '{sft: runs/demo/sft/model, ppo: runs/demo/ppo/model}' --tasks '{...}'
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from alignment.core.config import parse_config
from alignment.core.errors import ConfigError, run_cli
from alignment.core.launch import seed_everything
from alignment.core.models import load_causal_lm, load_tokenizer, model_folder
from alignment.core.runs import start_run
from alignment.reason import classify, report
from alignment.reason.config import Config
from alignment.reason.modes import (
    Budget,
    ModeRun,
    orderings,
    pick_exemplars,
    run_self_consistency,
    run_single,
    run_zero_shot_cot,
)
from alignment.reason.prompts import Prompter
from alignment.reason.stats import accuracy_with_ci, spread
from alignment.reason.tasks import Task, load_task


def run(config: Config) -> dict[str, Any]:
    """Evaluate every model on every task and mode, and on in-context classification; write the report."""
    started = time.perf_counter()
    config.check_models()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    environment = {"threads": torch.get_num_threads(), "load_start": _load()}
    run_dir = start_run(config)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    # step 1. tasks and snippets: every data error shows before a model is loaded
    tasks = load_tasks(config)
    snippets = None
    if config.classify_data:
        snippets = classify.load_snippets(
            config.classify_data,
            config.classify_source,
            config.classify_min_rating,
            config.classify_items,
            config.seed,
            config.classify_max_words,
        )
    # step 2. per model: every mode on every task, then classification
    results: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    sc_curves: dict[str, dict[str, Any]] = {}
    sensitivity: dict[str, dict[str, Any]] = {}
    classification: dict[str, Any] = {}
    for name, path in config.models.items():
        model, tokenizer, chat = load_model(path, config.chat_template, device)
        models[name] = {"path": path, "prompt_style": "chat template" if chat else "plain text"}
        prompter = Prompter(tokenizer, chat)
        for task in tasks.values():
            runs = reason_on_task(model, tokenizer, prompter, task, config, name)
            for mode_run in runs:
                if mode_run.order == 0:
                    results.append(summarize(mode_run, name, task.name))
                samples += [
                    {
                        "kind": "reasoning",
                        "model": name,
                        "task": task.name,
                        "mode": mode_run.mode,
                        "order": mode_run.order,
                        **r,
                    }
                    for r in mode_run.records
                ]
            sc_curves.setdefault(name, {}).update(curve_summary(runs, task.name))
            sensitivity.setdefault(name, {})[task.name] = order_spread(runs)
        if snippets is not None:
            classification[name], rows = classify_snippets(model, tokenizer, snippets, config)
            samples += [{"model": name, **r} for r in rows]
        del model
    # step 3. the report: tables, curves, sensitivity, classification, examples
    environment["load_end"] = _load()
    result_report = build_report(
        config, models, tasks, results, sc_curves, sensitivity, classification, samples
    )
    result_report["environment"] = environment
    result_report["wall_s"] = round(time.perf_counter() - started, 1)
    write_outputs(run_dir, result_report, samples, sc_curves)
    return result_report


def resolve_device(choice: str) -> torch.device:
    """'auto' (CUDA when present), 'cpu' or 'cuda'; asking for CUDA without it is a `ConfigError`."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device: 'cuda' was asked for, but this machine has no CUDA device (use auto or cpu)"
        )
    return torch.device(choice)


def load_tasks(config: Config) -> dict[str, Task]:
    """Step 1: every task's items and exemplar pool, checked against what the modes need."""
    tasks = {}
    k_shot = [m for m in config.modes if m in ("few_shot", "cot", "self_consistency")]
    needs_solutions = [m for m in config.modes if m in ("cot", "self_consistency")]
    for name, spec in config.tasks.items():
        task = load_task(str(name), spec, config.num_items, config.exemplar_pool, config.seed)
        if k_shot and len(task.exemplars) < config.shots:
            raise ConfigError(
                f"tasks.{name}: {config.shots}-shot modes need {config.shots} exemplars; the pool holds "
                f"{len(task.exemplars)} that are not test items (raise exemplar_pool or lower shots)"
            )
        if needs_solutions and not task.has_solutions(config.shots):
            raise ConfigError(
                f"tasks.{name}: modes {needs_solutions} need {config.shots} exemplars with worked solutions; "
                f"{task.source} gives {sum(e.solution is not None for e in task.exemplars)} (give an exemplar_file "
                "with a `solution` column, a solution_key, or drop those modes)"
            )
        tasks[str(name)] = task
        print(
            f"reason: task {name}: {len(task.items)} items from {task.source}, {len(task.exemplars)} exemplars"
        )
    return tasks


def load_model(path: str, chat_template: str, device: torch.device) -> tuple[Any, Any, bool]:
    """(model, tokenizer, whether prompts use the chat template): `auto` uses it when the folder has one.

    `load_tokenizer` gives every tokenizer a default template, so whether the model itself came with one
    is read from its folder (a hub name is taken at its tokenizer's word).
    """
    tokenizer = load_tokenizer(path, padding_side="left")
    model = load_causal_lm(path, tokenizer).to(device).eval()
    if chat_template != "auto":
        return model, tokenizer, chat_template == "chat"
    folder = Path(model_folder(path))
    if not folder.is_dir():
        return model, tokenizer, bool(tokenizer.chat_template)
    config_file = folder / "tokenizer_config.json"
    in_config = config_file.is_file() and "chat_template" in json.loads(config_file.read_text())
    has_template = in_config or any(
        (folder / f).is_file() for f in ("chat_template.jinja", "chat_template.json")
    )
    return model, tokenizer, has_template


def reason_on_task(
    model: Any, tokenizer: Any, prompter: Prompter, task: Task, config: Config, name: str
) -> list[ModeRun]:
    """Step 2 for one model and task: each mode asked for (few_shot and cot in `orders` exemplar orders)."""
    budget = Budget(
        max_new_tokens=config.max_new_tokens,
        cot_max_new_tokens=config.cot_max_new_tokens,
        answer_max_new_tokens=config.answer_max_new_tokens,
        num_samples=config.num_samples,
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
        batch_size=config.batch_size,
        seed=config.seed,
        progress_bar=config.progress_bar,
    )
    # The same exemplars for few_shot and cot (worked solutions when the task has them), so the two modes
    # differ only in whether the exemplars show their reasoning.
    exemplars = pick_exemplars(task, config.shots, config.seed, task.has_solutions(config.shots))
    runs = []
    for mode in config.modes:
        label = f"{name}/{task.name}/{mode}"
        started = time.perf_counter()
        if mode == "direct":
            runs.append(run_single(mode, model, tokenizer, prompter, task, [], budget, label=label))
        elif mode in ("few_shot", "cot"):
            for order, ordered in enumerate(orderings(exemplars, config.orders, config.seed)):
                runs.append(run_single(mode, model, tokenizer, prompter, task, ordered, budget, order, label))
        elif mode == "zero_shot_cot":
            runs.append(run_zero_shot_cot(model, tokenizer, prompter, task, budget, label))
        else:
            runs.append(
                run_self_consistency(
                    model, tokenizer, prompter, task, exemplars, budget, config.sc_items, label
                )
            )
        main = next(r for r in runs if r.mode == mode and r.order == 0)
        print(
            f"reason: {label}: {sum(main.correct)}/{len(main.correct)} right, {main.tokens} tokens, "
            f"{time.perf_counter() - started:.1f}s"
        )
    return runs


def summarize(mode_run: ModeRun, model: str, task: str) -> dict[str, Any]:
    """One row of the accuracy table: accuracy with its Wilson interval, tokens, seconds, unanswered items."""
    return {
        "model": model,
        "task": task,
        "mode": mode_run.mode,
        **accuracy_with_ci(sum(mode_run.correct), len(mode_run.correct)),
        "tokens": mode_run.tokens,
        "seconds": round(mode_run.seconds, 2),
        "no_answer": sum(r["extracted"] is None for r in mode_run.records),
    }


def curve_summary(runs: list[ModeRun], task: str) -> dict[str, Any]:
    """{task: the self-consistency curve with a Wilson interval at every n, agreement, greedy CoT on those items}."""
    sc = next((r for r in runs if r.mode == "self_consistency"), None)
    if sc is None:
        return {}
    n_items = sc.extra["n_items"]
    intervals = [accuracy_with_ci(round(acc * n_items), n_items) for acc in sc.extra["curve"]]
    cot = next((r for r in runs if r.mode == "cot" and r.order == 0), None)
    greedy = sum(cot.correct[:n_items]) / n_items if cot is not None and n_items else None
    return {
        task: {
            **sc.extra,
            "curve_ci_low": [i["ci_low"] for i in intervals],
            "curve_ci_high": [i["ci_high"] for i in intervals],
            "greedy_cot": greedy,
        }
    }


def order_spread(runs: list[ModeRun]) -> dict[str, Any]:
    """Accuracy over exemplar orders for each mode run in more than one order: mean, min, max."""
    out = {}
    for mode in ("few_shot", "cot"):
        accuracies = [sum(r.correct) / len(r.correct) for r in runs if r.mode == mode]
        if len(accuracies) > 1:
            out[mode] = spread(accuracies)
    return out


def classify_snippets(
    model: Any, tokenizer: Any, snippets: tuple, config: Config
) -> tuple[dict[str, Any], list]:
    """Step 2, classification: every prompt variant of the in-context sentiment study for one model."""
    test, pool = snippets
    started = time.perf_counter()
    settings = {
        "shots": config.classify_shots,
        "orders": config.classify_orders,
        "label_words": config.label_words,
        "formats": config.classify_formats,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "calibrate": config.calibrate,
    }
    with torch.no_grad():
        by_shots, rows = classify.classify_model(model, tokenizer, test, pool, settings, config.progress_bar)
    seconds = time.perf_counter() - started
    line = ", ".join(f"{k}-shot {v['main']['raw']['accuracy']:.3f}" for k, v in by_shots.items())
    print(f"reason: classification: {line} ({seconds:.1f}s)")
    summary = {
        "n_items": len(test),
        "source": config.classify_source or "all sources",
        "label_words": config.label_words,
        "formats": config.classify_formats,
        "calibrate": config.calibrate,
        "seconds": round(seconds, 2),
        "by_shots": by_shots,
    }
    return summary, rows


def build_report(
    config: Config,
    models: dict[str, Any],
    tasks: dict[str, Task],
    results: list[dict[str, Any]],
    sc_curves: dict[str, Any],
    sensitivity: dict[str, Any],
    classification: dict[str, Any],
    samples: list[dict[str, Any]],
) -> dict[str, Any]:
    """Step 3: the report dict (what report.json holds and report.md renders)."""
    examples = []
    seen: dict[tuple, int] = {}
    for row in samples:
        key = (row.get("model"), row.get("task"), row.get("mode"))
        if row.get("kind") == "reasoning" and row.get("order") == 0 and seen.get(key, 0) < 2:
            seen[key] = seen.get(key, 0) + 1
            examples.append(row)
    return {
        "run_name": config.run_name,
        "models": models,
        "settings": {
            "seed": config.seed,
            "modes": config.modes,
            "shots": config.shots,
            "orders": config.orders,
            "num_items": config.num_items,
            "sc_items": config.sc_items,
            "num_samples": config.num_samples,
            "temperature": config.temperature,
            "top_k": config.top_k,
            "top_p": config.top_p,
            "max_new_tokens": config.max_new_tokens,
            "cot_max_new_tokens": config.cot_max_new_tokens,
            "chat_template": config.chat_template,
            "classify_data": config.classify_data,
        },
        "tasks": {
            name: {
                "source": t.source,
                "n_items": len(t.items),
                "n_exemplars": len(t.exemplars),
                "kind": t.kind,
                "why": t.spec.get("why"),
            }
            for name, t in tasks.items()
        },
        "results": results,
        "self_consistency": {m: c for m, c in sc_curves.items() if c},
        "sensitivity": sensitivity,
        "classification": classification,
        "examples": examples,
        "plots": ["plots/self_consistency.png"] if any(sc_curves.values()) else [],
    }


def write_outputs(run_dir: Path, result_report: dict[str, Any], samples: list[dict], sc_curves: dict) -> None:
    """samples.jsonl, report.json, report.md and the self-consistency plot."""
    report.write_samples(samples, run_dir / "samples.jsonl")
    if result_report["plots"]:
        report.plot_sc_curves(
            {m: c for m, c in sc_curves.items() if c}, run_dir / "plots" / "self_consistency.png"
        )
    report.write_json(result_report, run_dir / "report.json")
    (run_dir / "report.md").write_text(report.render_markdown(result_report))
    print(f"reason: report written to {run_dir / 'report.md'}")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    """Entry point for `alignment reason` and scripts/reason.py."""
    run_cli("reason", lambda args: run(parse_config(Config, args)), argv)
