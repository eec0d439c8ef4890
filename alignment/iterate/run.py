"""`alignment iterate`: the loop RLHF teams run, in rounds after a first pass through the pipeline.

Each round r: sample K responses per fresh prompt from the current policy, rank them (a simulated labeler:
a judge plus noise calibrated to a human-like agreement rate; or, with `labeler: app`, people in the
labeling app, see app_labels.py), hold some prompts out, retrain the reward model on every round's rankings
so far, measure it on the new round's held-out comparisons before (round r-1's RM) and after, run PPO
onward from round r-1's policy (KL still to the SFT model), and evaluate.

    runs/<run_name>/iterate/round-<r>/{samples,rankings,rankings_train_all,rankings_heldout}.jsonl,
                                      reward/, ppo/, evaluate/, state.json, app/ (labeler: app's export)
    runs/<run_name>/iterate/{report.json,report.md,plots/overoptimization.png}

Every step of a round is recorded in its `state.json` when it finishes, and files are written atomically:
a killed loop, run again, skips every finished step (no ranking is drawn twice or lost) and the stage it was
in resumes from its own checkpoints.

    alignment iterate --config configs/iterate/tiny.yaml
    alignment pipeline --config configs/pipeline/tiny-sentiment-iterated.yaml
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from alignment.core.config import parse_config
from alignment.core.errors import DatasetFormatError, UserError, run_cli
from alignment.core.formats import read_jsonl, write_jsonl
from alignment.core.logging import read_metrics
from alignment.core.paths import resolve_path
from alignment.core.runs import start_run
from alignment.evaluate import report as evaluate_report
from alignment.iterate import app_labels, collect
from alignment.iterate.config import Config
from alignment.iterate.report import render_markdown
from alignment.pipeline import as_cli_value, error_line, run_logged, write_json_atomic


class RoundStageFailed(UserError):
    """A round's reward, PPO or evaluation process failed; names the round, the stage and its log."""


def run(config: Config) -> dict[str, Any]:
    """Run the rounds (skipping finished steps); write and return the rounds report."""
    started = time.perf_counter()
    run_dir = start_run(config)
    policy, reward_model = resolve_path(config.policy), resolve_path(config.reward_model)
    rows: list[dict[str, Any]] = []
    earlier: list[str] = []  # the policies before the current one, round 0's first
    for number in range(1, config.rounds + 1):
        result = run_round(config, run_dir / f"round-{number}", number, policy, reward_model, list(earlier))
        rows.append(result)
        earlier.append(policy)
        policy, reward_model = result["policy"], result["reward_model"]
    result_report = build_report(config, run_dir, rows, time.perf_counter() - started)
    evaluate_report.write_json(result_report, run_dir / "report.json")
    (run_dir / "report.md").write_text(render_markdown(result_report))
    print(f"iterate: report written to {run_dir / 'report.md'}")
    return result_report


def run_round(
    config: Config,
    folder: Path,
    number: int,
    policy: str,
    reward_model: str,
    earlier: list[str] | None = None,
) -> dict[str, Any]:
    """One round; each finished step is in `state.json`, so a rerun continues where a kill stopped it.

    `earlier`: the policies before `policy` (round 0's first), which earlier_policy_share samples from.
    """
    state_path = folder / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"round": number, "done": {}}
    done: dict[str, Any] = state["done"]

    def finish(step: str, result: Any) -> None:
        done[step] = result
        write_json_atomic(state, state_path)

    def say(text: str) -> None:
        print(f"[iterate round {number}/{config.rounds}] {text}", flush=True)

    if "sample" not in done:
        prompts = collect.round_prompts(config, number)
        samples = collect.sample_completions(config, policy, prompts, number, earlier)
        write_jsonl(samples, folder / "samples.jsonl")
        k_earlier = collect.earlier_sample_count(config, earlier)
        finish("sample", {"prompts": len(prompts), "rows": len(samples), "from_earlier_policies": k_earlier})
        mixed = f" ({k_earlier} of them from an earlier round's policy)" if k_earlier else ""
        say(
            f"sampled {config.completions_per_prompt} responses{mixed} for {len(prompts)} prompts from {policy}"
        )
    if "label" not in done:
        samples = read_jsonl(folder / "samples.jsonl")
        if config.labeler == "app":
            rankings, stats = app_labels.label(config, samples, number, folder, say)
        else:
            rankings, stats = collect.label(config, samples, number)
        if len({r["prompt"] for r in rankings}) < 2:
            raise DatasetFormatError(
                f"round {number}: rankings of {len({r['prompt'] for r in rankings})} prompts came back; the round "
                "needs at least 2 (one to train on, one held out)"
            )
        train, heldout = collect.split_heldout(rankings, config.heldout_fraction, config.seed + number)
        earlier = folder.parent / f"round-{number - 1}" / "rankings_train_all.jsonl"
        union = (read_jsonl(earlier) if number > 1 else []) + train
        write_jsonl(rankings, folder / "rankings.jsonl")
        write_jsonl(heldout, folder / "rankings_heldout.jsonl")
        write_jsonl(union, folder / "rankings_train_all.jsonl")
        finish(
            "label",
            {**stats, "train_rankings": len(train), "heldout_rankings": len(heldout), "union": len(union)},
        )
        agreement = stats["measured_agreement"]
        say(
            f"labeled {len(rankings)} rankings (agreement {'-' if agreement is None else f'{agreement:.3f}'}); "
            f"RM trains on {len(union)}"
        )
    new_reward_model = str(folder / "reward" / "model")
    if "reward" not in done:
        start = reward_model if config.reward_init == "warm" else resolve_path(config.reward_base_model)
        options = {
            "model": start,
            "train_data": str(folder / "rankings_train_all.jsonl"),
            "eval_data": str(folder / "rankings_heldout.jsonl"),
        }
        finish("reward", run_stage(config, folder, number, "reward", options))
    if "rm_accuracy" not in done:
        heldout = folder / "rankings_heldout.jsonl"
        before = collect.pairwise_accuracy(reward_model, heldout, config.batch_size)
        after = collect.pairwise_accuracy(new_reward_model, heldout, config.batch_size)
        finish("rm_accuracy", {"before": before, "after": after})
        say(f"reward model on this round's held-out comparisons: {before:.3f} before, {after:.3f} after")
    new_policy = str(folder / "ppo" / "model")
    if "ppo" not in done:
        options = {
            "model": policy,
            "reference_model": resolve_path(config.sft_model),
            "reward_model": new_reward_model,
            "value_model_init": resolve_path(config.sft_model),
        }
        finish("ppo", run_stage(config, folder, number, "ppo", options))
    if "evaluate" not in done:
        options = {
            "models": {"sft": resolve_path(config.sft_model), "start": policy, "ppo": new_policy},
            "reward_model": new_reward_model,
            "baseline": "sft",
            "reference": "sft",
            "check_model": "ppo",
            "check_baseline": "sft",
            "check_tuned_model": None,
            "check_min_rm_accuracy": None,
        }
        finish("evaluate", run_stage(config, folder, number, "evaluate", options))
    evaluation = json.loads((folder / "evaluate" / "report.json").read_text())
    return {
        "round": number,
        "policy": new_policy,
        "reward_model": new_reward_model,
        "started_from": policy,
        "label": done["label"],
        "rm_accuracy": done["rm_accuracy"],
        "models": evaluation["models"],
        "best_of_n": evaluation.get("best_of_n", []),
        "held_out": [r for r in read_metrics(folder / "ppo") if "eval/sqrt_kl" in r],
        "ppo_selection": evaluation.get("ppo_held_out", {}).get("ppo"),
        "wall_s": {step: (v or {}).get("wall_s") for step, v in done.items() if isinstance(v, dict)},
    }


def run_stage(
    config: Config, folder: Path, number: int, stage: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Run one of the round's stages as its own process in `<round>/<stage>/`; a rerun resumes it there."""
    command = [sys.executable, "-m", "alignment.cli", stage]
    if config.recipes.get(stage):
        command += ["--config", str(config.recipes[stage])]
    options = {
        "run_name": config.run_name,
        "output_root": config.output_root,
        "output_dir": str(folder / stage),
        # training draws new randomness each round; evaluation keeps one seed, so rounds are compared on the
        # same samples of the same prompts (per-round seeds moved SFT's own gold score by up to 0.08)
        "seed": config.seed if stage == "evaluate" else config.seed + number,
        **options,
        **config.overrides.get(stage, {}),
    }
    for key, value in options.items():
        command += [f"--{key}", as_cli_value(value)]
    print(f"[iterate round {number}/{config.rounds}] {stage}: {shlex.join(command)}", flush=True)
    log_path = folder / f"{stage}.log"
    started = time.perf_counter()
    returncode = run_logged(command, log_path)
    if returncode != 0:
        raise RoundStageFailed(
            f"round {number}: stage '{stage}' failed with exit code {returncode}: {error_line(log_path)} "
            f"(log: {log_path}); run the same command again to continue from here"
        )
    return {"wall_s": round(time.perf_counter() - started, 2)}


def build_report(config: Config, run_dir: Path, rows: list[dict], wall_s: float) -> dict[str, Any]:
    """The rounds table (per round: gold, RM accuracy before/after, KL...) and the over-optimization plot."""
    table = []
    for row in rows:
        models = row["models"]
        table.append(
            {
                "round": row["round"],
                "rankings": row["label"]["train_rankings"] + row["label"]["heldout_rankings"],
                "rm_train_rankings": row["label"]["union"],
                "labeler_agreement": row["label"]["measured_agreement"],
                "rm_accuracy_before": row["rm_accuracy"]["before"],
                "rm_accuracy_after": row["rm_accuracy"]["after"],
                "gold_sft": models["sft"]["gold_score"],
                "gold_start": models["start"]["gold_score"],
                "gold": models["ppo"]["gold_score"],
                "rm_score": models["ppo"].get("rm_score"),
                "kl_to_sft": models["ppo"].get("kl_to_ref"),
                "perplexity": models["ppo"].get("perplexity"),
                "distinct_2": models["ppo"].get("distinct_2"),
                "ppo_step_kept": _kept_step(row.get("ppo_selection")),
            }
        )
    plots = []
    curve = rows[0]["best_of_n"] if rows else []
    paths = {f"round {row['round']} PPO": row["held_out"] for row in rows}
    selected = {
        f"round {row['round']} PPO": row["ppo_selection"]["selected_step"]
        for row in rows
        if (row.get("ppo_selection") or {}).get("select_by") == "gold"
    }
    target = run_dir / "plots" / "overoptimization.png"
    if evaluate_report.plot_overoptimization(curve, paths, target, selected=selected):
        plots.append("plots/overoptimization.png")
    return {
        "run_name": config.run_name,
        "rounds": table,
        "best_of_n": curve,
        "plots": plots,
        "settings": {
            "prompts_per_round": config.prompts_per_round,
            "completions_per_prompt": config.completions_per_prompt,
            "labeler": labeler_words(config),
            "reward_init": config.reward_init,
            "heldout_fraction": config.heldout_fraction,
        },
        "wall_s": round(wall_s, 1),
    }


def _kept_step(selection: dict[str, Any] | None) -> str | None:
    """Which PPO step's policy a round carried on: "40 of 100 (gold)" when a held-out judge chose it."""
    if not selection:
        return None
    return f"{selection['selected_step']} of {selection['last_step']} ({selection['select_by']})"


def labeler_words(config: Config) -> str:
    """Who ranked the samples, as the report says it."""
    if config.labeler == "app":
        overlap = config.app_overlap or config.app_label_config().overlap
        return f"people in the labeling app ({overlap} rankings per item wanted; {config.app_config})"
    return (
        f"the simulated labeler ({config.labeler_judge}, target agreement {config.labeler_agreement} "
        "with the judge)"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point for `alignment iterate` and scripts/iterate.py."""
    run_cli("iterate", lambda args: run(parse_config(Config, args)), argv)
