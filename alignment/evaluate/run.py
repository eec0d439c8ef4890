"""`alignment evaluate`: score checkpoints on the same held-out prompts with fixed seeds, and write a report.

For every model in `models` it samples one response per prompt (same seed, same batches for all) and
measures: the gold judge's score (VADER by default, on prompt + response), the reward model's score on
the same text, the sequence KL to a reference model on the model's own samples, perplexity of held-out
natural text (fluency), distinct-1/2 of the responses (diversity), response length, and win rates
against the baseline model under the gold judge and under the reward model. The report
(`report.json`, `report.md`, `plots/*.png`, `samples.jsonl`) goes to `runs/<run_name>/evaluate/`,
with the training curves of every stage found beside it in `runs/<run_name>/*/metrics.jsonl`.

    alignment evaluate --config configs/evaluate/tiny.yaml
    alignment evaluate --models '{sft: runs/demo/sft/model, ppo: runs/demo/ppo/model}' --baseline sft
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from alignment.core.chat import format_prompt
from alignment.core.config import parse_config
from alignment.core.errors import ConfigError, run_cli
from alignment.core.formats import load_dataset_as
from alignment.core.generation import SamplingSettings
from alignment.core.judges import CLASSIFIER_PREFIX, judge_name, load_judge, score
from alignment.core.launch import seed_everything
from alignment.core.logging import read_metrics
from alignment.core.models import check_length
from alignment.core.paths import resolve_path
from alignment.core.runs import start_run
from alignment.evaluate import metrics, report
from alignment.evaluate.best_of_n import best_of_n_curve, powers_of_two
from alignment.evaluate.config import Config
from alignment.evaluate.inputs import (
    load_model,
    load_perplexity_texts,
    load_prompts,
    read_reward_stats,
    read_stage_timings,
)
from alignment.evaluate.measure import response_nll, sample_responses, sequence_kls, text_nll


@dataclass
class Inputs:
    """What every model is measured against: prompts, judges, texts, the reference and the reward model."""

    prompts: list[str]
    judges: dict[str, Any]  # name -> Callable[[str], float]; the first is the gold judge
    perplexity_texts: list[str]
    settings: SamplingSettings
    device: torch.device
    reference_name: str | None
    reference: tuple[Any, Any] | None  # (model, tokenizer)
    reward_model: tuple[Any, Any] | None  # (model, tokenizer)
    response_loss_rows: list[dict] = field(default_factory=list)  # held-out demonstrations

    @property
    def gold_name(self) -> str:
        """Name of the gold judge."""
        return next(iter(self.judges))


@dataclass
class ModelResult:
    """One model's measurements: the summary row of the report and the per-prompt series behind it."""

    name: str
    summary: dict[str, Any]
    responses: list[str]
    lengths: list[int]
    gold_scores: list[float]
    rm_scores: list[float] | None = None
    kls: list[float] | None = None
    judge_scores: dict[str, list[float]] = field(default_factory=dict)


def run(config: Config) -> dict[str, Any]:
    """Evaluate every model, write the report files, and return the report."""
    started = time.perf_counter()
    config.check_models()
    run_dir = start_run(config)
    seed_everything(config.seed)
    # step 1. inputs: prompts, judges, perplexity texts, reference model, reward model
    inputs = load_inputs(config)
    # step 2. per model: sample, judge, score with the RM, KL to the reference, perplexity
    results = {name: evaluate_model(name, path, inputs, config) for name, path in config.models.items()}
    # step 3. win rates against the baseline, per prompt, ties half
    add_win_rates(results, config.baseline_name)
    # step 4. the report: checks, reward model, stage timings, curves, samples, the best-of-n baseline
    curve = measure_best_of_n(config, inputs) if config.best_of_n else []
    result_report = build_report(config, inputs, results, run_dir, started, curve)
    # step 5. write: every response with its scores, then the report files
    write_outputs(run_dir, inputs.prompts, results, result_report)
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


def load_inputs(config: Config) -> Inputs:
    """Step 1: everything shared by the models under evaluation."""
    device = resolve_device(config.device)
    prompts = load_prompts(config.prompts, config.max_prompts)
    judges = {judge_name(spec): load_judge(spec, f"judges[{i}]") for i, spec in enumerate(config.judges)}
    texts = []
    if config.perplexity_data:
        texts = load_perplexity_texts(
            config.perplexity_data, config.perplexity_source, config.perplexity_max_rows
        )
    reference_name = config.reference if config.reference is not None else config.baseline_name
    reference_path = config.models.get(reference_name, reference_name) if reference_name else None
    reward_model = None
    if config.reward_model:
        from reward.model import load_reward_model  # lazy: only evaluations with a reward model need it

        rm, rm_tokenizer = load_reward_model(resolve_path(config.reward_model))
        check_length(config.max_length, "max_length", rm, f"the reward model {config.reward_model}")
        reward_model = (rm.to(device).eval(), rm_tokenizer)
    settings = SamplingSettings(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
    )
    rows = []
    if config.response_loss_data:
        rows = list(load_dataset_as(resolve_path(config.response_loss_data))[0])[: config.perplexity_max_rows]
    return Inputs(
        response_loss_rows=rows,
        prompts=prompts,
        judges=judges,
        perplexity_texts=texts,
        settings=settings,
        device=device,
        reference_name=reference_name,
        reference=load_model(reference_path, device) if reference_path else None,
        reward_model=reward_model,
    )


def evaluate_model(name: str, path: str, inputs: Inputs, config: Config) -> ModelResult:
    """Step 2 for one model: sample, judge, RM score, KL to the reference, perplexity, diversity."""
    started = time.perf_counter()
    model, tokenizer = load_model(path, inputs.device)
    if inputs.perplexity_texts:
        check_length(config.max_length, "max_length", model, f"model {name} ({path})")
    asked = [
        format_prompt(tokenizer, p, config.prompt_template, config.use_chat_template) for p in inputs.prompts
    ]
    samples = sample_responses(
        model,
        tokenizer,
        asked,
        inputs.settings,
        config.batch_size,
        config.seed,
        config.max_prompt_length,
    )
    judged = [p + r if config.judge_prompt else r for p, r in zip(inputs.prompts, samples.texts)]
    shown = inputs.prompts if config.judge_prompt else [""] * len(inputs.prompts)  # what the judges see
    scores_by_judge = {
        jn: [score(judge, p, r) for p, r in zip(shown, samples.texts)] for jn, judge in inputs.judges.items()
    }
    result = ModelResult(
        name=name,
        summary={"path": path},
        responses=samples.texts,
        lengths=samples.lengths,
        gold_scores=scores_by_judge[inputs.gold_name],
        judge_scores=scores_by_judge,
    )
    result.summary["gold_score"] = metrics.mean(result.gold_scores)
    for jn, scores in scores_by_judge.items():
        if jn != inputs.gold_name:
            result.summary[f"judge/{jn}"] = metrics.mean(scores)
    if inputs.reward_model is not None:
        from reward.model import score_texts

        rm, rm_tokenizer = inputs.reward_model
        scores = score_texts(
            rm, rm_tokenizer, judged, batch_size=config.batch_size, max_length=config.max_length
        )
        result.rm_scores = scores.tolist()
        result.summary["rm_score"] = metrics.mean(result.rm_scores)
    if inputs.reference is not None:
        ref_model, ref_tokenizer = inputs.reference
        same_vocab = ref_tokenizer.get_vocab() == tokenizer.get_vocab()
        result.kls = sequence_kls(samples, model, ref_model, None if same_vocab else ref_tokenizer)
        result.summary["kl_to_ref"] = metrics.mean(result.kls)
    if inputs.perplexity_texts:
        nll, count = text_nll(model, tokenizer, inputs.perplexity_texts, config.batch_size, config.max_length)
        result.summary["perplexity"] = metrics.perplexity(nll, count)
    if config.format_rule == "continuation":
        follows = [metrics.follows_continuation_format(t, e) for t, e in zip(samples.texts, samples.ended)]
        result.summary["format_score"] = metrics.mean([float(f) for f in follows])
    if inputs.response_loss_rows:
        nll, count = response_nll(model, tokenizer, inputs.response_loss_rows)
        result.summary["response_loss"] = nll / max(count, 1)
    result.summary["distinct_1"] = metrics.distinct_n(samples.texts, 1)
    result.summary["distinct_2"] = metrics.distinct_n(samples.texts, 2)
    result.summary["mean_length"] = metrics.mean(samples.lengths)
    print(
        f"evaluate: {name}: gold {result.summary['gold_score']:.3f}, distinct-2 {result.summary['distinct_2']:.3f} "
        f"on {len(inputs.prompts)} prompts, {time.perf_counter() - started:.1f}s"
    )
    return result


def measure_best_of_n(config: Config, inputs: Inputs) -> list[dict[str, float]]:
    """Step 4a: N samples per prompt from one model, scored by the RM (which picks) and the gold judge."""
    from reward.model import score_texts

    started = time.perf_counter()
    name = config.best_of_n_model or (
        inputs.reference_name if inputs.reference_name in config.models else config.baseline_name
    )
    model, tokenizer = load_model(config.models[name], inputs.device)
    prompts = inputs.prompts[: config.best_of_n_prompts]
    num = config.best_of_n
    repeated = [
        p for p in prompts for _ in range(num)
    ]  # prompt-major: row i * num + j is sample j of prompt i
    asked = [format_prompt(tokenizer, p, config.prompt_template, config.use_chat_template) for p in repeated]
    samples = sample_responses(
        model, tokenizer, asked, inputs.settings, config.batch_size, config.seed + 1, config.max_prompt_length
    )
    judged = [p + r if config.judge_prompt else r for p, r in zip(repeated, samples.texts)]
    rm, rm_tokenizer = inputs.reward_model
    proxy = score_texts(rm, rm_tokenizer, judged, batch_size=config.batch_size, max_length=config.max_length)
    shown = repeated if config.judge_prompt else [""] * len(repeated)
    gold_judge = inputs.judges[inputs.gold_name]
    gold = [score(gold_judge, p, r) for p, r in zip(shown, samples.texts)]
    curve = best_of_n_curve(
        proxy.reshape(len(prompts), num).tolist(),
        torch.tensor(gold).reshape(len(prompts), num).tolist(),
        powers_of_two(num),
    )
    for point in curve:
        point["model"] = name
    best = curve[-1]
    print(
        f"evaluate: best-of-{num} from {name} on {len(prompts)} prompts: gold {curve[0]['gold']:.3f} -> "
        f"{best['gold']:.3f}, RM {curve[0]['proxy']:.3f} -> {best['proxy']:.3f} at KL {best['kl']:.2f}, "
        f"{time.perf_counter() - started:.1f}s"
    )
    return curve


def add_win_rates(results: dict[str, ModelResult], baseline: str) -> None:
    """Step 3: each model's per-prompt win rate against the baseline, under the gold judge and the RM."""
    for result in results.values():
        result.summary["win_rate_vs_baseline"] = metrics.win_rate(
            result.gold_scores, results[baseline].gold_scores
        )
        if result.rm_scores is not None:
            result.summary["win_rate_vs_baseline_rm"] = metrics.win_rate(
                result.rm_scores, results[baseline].rm_scores
            )


def build_report(
    config: Config,
    inputs: Inputs,
    results: dict[str, ModelResult],
    run_dir: Path,
    started: float,
    best_of_n: list[dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Step 4: the report dict (what report.json holds and report.md renders)."""
    per_model = {name: result.summary for name, result in results.items()}
    rm_stats = read_reward_stats(config.reward_model) if config.reward_model else {}
    checks = report.compute_checks(
        per_model,
        config.check_model,
        config.check_baseline,
        config.check_min_gold_gain,
        config.check_min_distinct_ratio,
        config.check_max_perplexity_ratio,
    )
    checks += report.more_checks(per_model, rm_stats, config)
    run_root = run_dir.parent
    ppo_held_out = read_ppo_held_out(run_dir)
    plots = (
        write_plots(per_model, run_dir, inputs.gold_name, best_of_n or [], ppo_held_out)
        if config.plots
        else []
    )
    timings = read_stage_timings(run_root)
    timings.pop(
        "evaluate", None
    )  # a timing.json from an earlier evaluation; this run's own time goes in below
    timings["evaluate"] = round(time.perf_counter() - started, 2)
    timings["total"] = round(sum(timings.values()), 2)
    prompts = inputs.prompts
    return {
        "run_name": config.run_name,
        "baseline": config.baseline_name,
        "reference": inputs.reference_name,
        "num_prompts": len(prompts),
        "models": per_model,
        "checks": checks,
        "reward_model": (
            {"path": config.reward_model, "eval_accuracy": rm_stats.get("eval_accuracy"), **rm_stats}
            if config.reward_model
            else {}
        ),
        "timings_s": timings,
        "best_of_n": best_of_n or [],
        "ppo_held_out": ppo_held_out,
        "plots": plots,
        "samples": [
            {"prompt": prompts[i], "responses": {name: r.responses[i] for name, r in results.items()}}
            for i in range(min(config.num_samples, len(prompts)))
        ],
        "settings": {
            "prompts": config.prompts,
            "seed": config.seed,
            "temperature": config.temperature,
            "max_new_tokens": config.max_new_tokens,
            "gold_judge": config.judges[0],
            "judge_prompt": config.judge_prompt,
            "perplexity_data": config.perplexity_data,
            "perplexity_source": config.perplexity_source,
        },
    }


def stage_dirs(run_dir: Path) -> list[Path]:
    """The other stages' folders beside this evaluation, in name order."""
    return sorted(p for p in run_dir.parent.iterdir() if p.is_dir() and p != run_dir)


def read_ppo_held_out(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Per stage beside this evaluation that logged held-out PPO evaluations: those and the policy it saved."""
    found = {}
    for stage_dir in stage_dirs(run_dir):
        config_file = stage_dir / "config.yaml"
        stage_config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
        summary = report.ppo_held_out(read_metrics(stage_dir), stage_config or {})
        if summary is None:
            continue
        judge = summary.get("judge") or ""
        if judge.startswith(CLASSIFIER_PREFIX):  # a reward model as the judge: say how far to trust it
            summary["judge_accuracy"] = read_reward_stats(judge[len(CLASSIFIER_PREFIX) :]).get(
                "eval_accuracy"
            )
        found[stage_dir.name] = summary
    return found


def write_plots(
    per_model: dict[str, dict],
    run_dir: Path,
    gold_name: str,
    best_of_n: list[dict[str, float]],
    ppo_held_out: dict[str, dict[str, Any]],
) -> list[str]:
    """Training curves of every stage in the run folder, gold score against KL, over-optimization; files written."""
    plots: list[str] = []
    held_out: dict[str, list[dict]] = {}  # stage -> its held-out evaluation rows (PPO's eval/*)
    for stage_dir in stage_dirs(run_dir):
        rows = read_metrics(stage_dir)
        target = run_dir / "plots" / f"curves_{stage_dir.name}.png"
        if rows and report.plot_training_curves(stage_dir.name, rows, target):
            plots.append(f"plots/curves_{stage_dir.name}.png")
        evals = [r for r in rows if "eval/sqrt_kl" in r]
        if evals:
            held_out[stage_dir.name] = evals
    if report.plot_gold_vs_kl(per_model, run_dir / "plots" / "gold_vs_kl.png", judge=gold_name):
        plots.append("plots/gold_vs_kl.png")
    target = run_dir / "plots" / "overoptimization.png"
    selected = {stage: s["selected_step"] for stage, s in ppo_held_out.items() if s["select_by"] == "gold"}
    if report.plot_overoptimization(best_of_n, held_out, target, judge=gold_name, selected=selected):
        plots.append("plots/overoptimization.png")
    return plots


def write_outputs(
    run_dir: Path, prompts: list[str], results: dict[str, ModelResult], result_report: dict[str, Any]
) -> None:
    """Step 5: samples.jsonl (every response with its scores), report.json and report.md."""
    rows = [
        {
            "prompt": prompts[i],
            "model": name,
            "response": result.responses[i],
            "gold": result.gold_scores[i],
            "rm": result.rm_scores[i] if result.rm_scores is not None else None,
            "kl": result.kls[i] if result.kls is not None else None,
            "length": result.lengths[i],
        }
        for name, result in results.items()
        for i in range(len(prompts))
    ]
    (run_dir / "samples.jsonl").write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    )
    report.write_json(result_report, run_dir / "report.json")
    (run_dir / "report.md").write_text(report.render_markdown(result_report))
    print(f"evaluate: report written to {run_dir / 'report.md'}")
    for check in result_report["checks"]:
        print(
            f"evaluate: check {check['rule']}: {check['value']:.4g} -> {'PASS' if check['passed'] else 'FAIL'}"
        )


def main(argv: list[str] | None = None) -> None:
    """Entry point for `alignment evaluate` and scripts/evaluate.py."""
    run_cli("evaluate", lambda args: run(parse_config(Config, args)), argv)
