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
from typing import Any, ClassVar

import torch

from alignment.core.config import ConfigError, StageConfig, parse_config, require
from alignment.core.formats import DatasetFormatError, load_dataset_as, load_rows
from alignment.core.generation import SamplingSettings
from alignment.core.judges import judge_name, load_judge
from alignment.core.launch import seed_everything, start_run
from alignment.core.models import load_causal_lm, load_tokenizer
from alignment.core.paths import resolve_path
from alignment.evaluate import metrics, report
from alignment.evaluate.measure import sample_responses, sequence_kls, text_nll

# Pipeline order, so the timing table reads like the run did; other stage folders follow alphabetically.
STAGE_ORDER = ("prepare", "pretrain", "sft", "reward", "ppo", "evaluate")


@dataclass
class Config(StageConfig):
    """Which checkpoints to compare, on which prompts, with which judges."""

    stage: ClassVar[str] = "evaluate"

    models: dict = field(
        default_factory=dict,
        metadata={
            "help": "Models to evaluate: name -> model folder (any causal LM folder or cache:// path)."
        },
    )
    baseline: str | None = field(
        default=None,
        metadata={"help": "Model name that win rates are measured against (default: the first)."},
    )
    reference: str | None = field(
        default=None,
        metadata={
            "help": "KL reference: a name in `models` or a model folder (default: the baseline); null to skip."
        },
    )
    reward_model: str | None = field(
        default=None,
        metadata={"help": "Reward model folder (reward/model.py format); null to skip RM scores."},
    )
    prompts: str = field(
        default="cache://datasets/sentiment/prompts_heldout.jsonl",
        metadata={
            "help": "Prompt set: a JSONL/JSON/CSV/Parquet file with a `prompt` column, or a .txt file, one per line."
        },
    )
    max_prompts: int = field(default=128, metadata={"help": "Use the first N prompts."})
    judges: list[str] = field(
        default_factory=lambda: ["vader"],
        metadata={
            "help": "Judges: 'vader' or 'module:function' (Callable[[str], float]); the first is the gold judge."
        },
    )
    judge_prompt: bool = field(
        default=True,
        metadata={"help": "Judges and the reward model see prompt + response (false: response only)."},
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Tokens sampled per response."})
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature (0 = greedy; KL needs 1)."}
    )
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0 = off)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (1.0 = off)."})
    max_prompt_length: int = field(
        default=64, metadata={"help": "Prompts are truncated to this many tokens."}
    )
    batch_size: int = field(default=32, metadata={"help": "Prompts per generation/forward batch."})
    perplexity_data: str | None = field(
        default="cache://datasets/sentiment/corpus_heldout.jsonl",
        metadata={
            "help": "Natural text for held-out perplexity (`text` column, or prompt+completion); null to skip."
        },
    )
    perplexity_source: str | None = field(
        default=None, metadata={"help": "Keep only rows whose `source` is this (e.g. movie); null keeps all."}
    )
    perplexity_max_rows: int = field(default=256, metadata={"help": "Use the first N perplexity texts."})
    max_length: int = field(
        default=128,
        metadata={"help": "Perplexity texts and reward-model inputs are truncated to this many tokens."},
    )
    num_samples: int = field(default=8, metadata={"help": "Prompts shown side by side in report.md."})
    plots: bool = field(
        default=True, metadata={"help": "Write PNG plots (training curves, gold score against KL)."}
    )
    check_model: str = field(
        default="ppo", metadata={"help": "Model whose acceptance checks report.md states."}
    )
    check_baseline: str = field(
        default="sft", metadata={"help": "Model the checks compare `check_model` with."}
    )
    check_min_gold_gain: float = field(
        default=0.3, metadata={"help": "Check: gold score gain at least this."}
    )
    check_min_distinct_ratio: float = field(
        default=0.5, metadata={"help": "Check: distinct-2 ratio at least this."}
    )
    check_max_perplexity_ratio: float = field(
        default=1.5, metadata={"help": "Check: held-out perplexity ratio at most this."}
    )
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if available), 'cpu' or 'cuda'."})

    def validate(self) -> None:
        """Reject impossible values, naming the key."""
        super().validate()
        for name, path in self.models.items():
            require(isinstance(path, str) and bool(path), f"models.{name}", "a model folder path", path)
        # `models` may come from the command line after a file is validated alone (parse_config does
        # that), so "at least one model" and "baseline is one of them" are checked in `check_models`.
        require(self.max_prompts >= 1, "max_prompts", ">= 1", self.max_prompts)
        require(bool(self.judges), "judges", "at least one judge", self.judges)
        require(self.max_new_tokens >= 1, "max_new_tokens", ">= 1", self.max_new_tokens)
        require(self.temperature >= 0, "temperature", ">= 0", self.temperature)
        require(0 < self.top_p <= 1, "top_p", "in (0, 1]", self.top_p)
        require(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        require(self.perplexity_max_rows >= 1, "perplexity_max_rows", ">= 1", self.perplexity_max_rows)
        require(self.max_length >= 2, "max_length", ">= 2", self.max_length)
        require(self.num_samples >= 0, "num_samples", ">= 0", self.num_samples)
        require(self.device in ("auto", "cpu", "cuda"), "device", "'auto', 'cpu' or 'cuda'", self.device)
        for spec in self.judges:
            require(spec == "vader" or ":" in spec, "judges", "'vader' or 'module:function' entries", spec)

    def check_models(self) -> None:
        """Raise `ConfigError` unless there is a model to evaluate and the baseline is one of them."""
        require(bool(self.models), "models", "a mapping of at least one name -> model folder", self.models)
        if self.baseline is not None:
            require(self.baseline in self.models, "baseline", f"one of {list(self.models)}", self.baseline)

    @property
    def baseline_name(self) -> str:
        """The baseline model's name (the first model unless set)."""
        return self.baseline or next(iter(self.models))


# ---------------------------------------------------------------------------------------------
# Inputs


def load_prompts(source: str, max_prompts: int) -> list[str]:
    """The first `max_prompts` prompts of a .txt file (one per line) or a dataset with a `prompt` column."""
    path = resolve_path(source)
    hint = " (run `alignment prepare` first)" if source.startswith("cache://") else ""
    if not Path(path).exists():
        raise DatasetFormatError(f"prompts: {path} does not exist{hint}")
    if path.endswith(".txt"):
        prompts = [line.rstrip("\n") for line in Path(path).read_text().splitlines() if line.strip()]
        if not prompts:
            raise DatasetFormatError(f"prompts: {path} has no non-empty lines")
    else:
        dataset, _ = load_dataset_as(path, fmt="prompts")
        prompts = list(dataset["prompt"])
    return prompts[:max_prompts]


def load_perplexity_texts(source: str, only_source: str | None, max_rows: int) -> list[str]:
    """Held-out natural text: the `text` column (or prompt + completion), optionally one `source` only."""
    path = resolve_path(source)
    if not Path(path).exists():
        hint = " (run `alignment prepare` first)" if source.startswith("cache://") else ""
        raise DatasetFormatError(f"perplexity_data: {path} does not exist{hint}")
    rows = load_rows(path)
    if only_source is not None and "source" in rows.column_names:
        rows = rows.filter(lambda row: row["source"] == only_source)
    rows = rows.select(range(min(max_rows, len(rows))))
    if "text" in rows.column_names:
        texts = list(rows["text"])
    elif {"prompt", "completion"} <= set(rows.column_names):
        texts = [p + c for p, c in zip(rows["prompt"], rows["completion"])]
    else:
        raise DatasetFormatError(
            f"perplexity_data: {path}: expected a `text` column (or prompt and completion), got {rows.column_names}"
        )
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise DatasetFormatError(f"perplexity_data: {path}: no texts (source filter {only_source!r})")
    return texts


def load_model(path: str, device: torch.device):
    """A causal LM and its tokenizer, ready for left-padded generation."""
    tokenizer = load_tokenizer(path, padding_side="left")
    model = load_causal_lm(path, tokenizer).to(device)
    model.eval()
    return model, tokenizer


def read_stage_timings(run_root: Path) -> dict[str, float]:
    """Wall seconds per stage from each stage folder's `timing.json` (written by the pipeline)."""
    timings: dict[str, float] = {}
    folders = [p for p in run_root.iterdir() if p.is_dir()] if run_root.is_dir() else []
    rank = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    for folder in sorted(folders, key=lambda p: (rank.get(p.name, len(rank)), p.name)):
        timing_file = folder / "timing.json"
        if timing_file.is_file():
            try:
                timing = json.loads(timing_file.read_text())
                # Only a stage's own marker counts (the pipeline's summary file has no "stage" key).
                if timing.get("stage") == folder.name:
                    timings[folder.name] = float(timing["wall_s"])
            except (ValueError, KeyError, TypeError, AttributeError):
                print(f"evaluate: ignoring unreadable {timing_file}")
    return timings


def read_reward_stats(reward_model: str) -> dict[str, Any]:
    """`reward_stats.json` of a reward model folder ({} when absent)."""
    stats_file = Path(resolve_path(reward_model)) / "reward_stats.json"
    return json.loads(stats_file.read_text()) if stats_file.is_file() else {}


# ---------------------------------------------------------------------------------------------
# The stage


def run(config: Config) -> dict[str, Any]:
    """Evaluate every model, write the report files, and return the report."""
    started = time.perf_counter()
    config.check_models()
    run_dir = start_run(config)
    seed_everything(config.seed)
    device = torch.device(
        "cuda"
        if config.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if config.device == "auto"
        else config.device
    )

    # step 1. inputs: prompts, judges, perplexity texts, reference model, reward model
    prompts = load_prompts(config.prompts, config.max_prompts)
    judges = {judge_name(spec): load_judge(spec) for spec in config.judges}
    gold_name = judge_name(config.judges[0])
    ppl_texts = (
        load_perplexity_texts(config.perplexity_data, config.perplexity_source, config.perplexity_max_rows)
        if config.perplexity_data
        else []
    )
    reference = config.reference if config.reference is not None else config.baseline_name
    ref_path = config.models.get(reference, reference) if reference else None
    ref_model, ref_tokenizer = load_model(ref_path, device) if ref_path else (None, None)
    rm_model = rm_tokenizer = None
    if config.reward_model:
        from reward.model import load_reward_model  # lazy: only evaluations with a reward model need it

        rm_model, rm_tokenizer = load_reward_model(resolve_path(config.reward_model))
        rm_model.to(device).eval()
    settings = SamplingSettings(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
    )
    print(f"evaluate: {len(prompts)} prompts, {len(config.models)} models, {len(ppl_texts)} perplexity texts")

    # step 2. per model: sample, judge, score with the RM, KL to the reference, perplexity
    per_model: dict[str, dict[str, Any]] = {}
    responses: dict[str, list[str]] = {}
    gold_scores: dict[str, list[float]] = {}
    rm_scores: dict[str, list[float]] = {}
    kls: dict[str, list[float]] = {}
    lengths: dict[str, list[int]] = {}
    for name, path in config.models.items():
        t0 = time.perf_counter()
        model, tokenizer = load_model(path, device)
        samples = sample_responses(
            model, tokenizer, prompts, settings, config.batch_size, config.seed, config.max_prompt_length
        )
        judged = [p + r if config.judge_prompt else r for p, r in zip(prompts, samples.texts)]
        result: dict[str, Any] = {"path": path}
        scores_by_judge = {jn: [float(judge(text)) for text in judged] for jn, judge in judges.items()}
        gold_scores[name] = scores_by_judge[gold_name]
        result["gold_score"] = metrics.mean(gold_scores[name])
        for jn, scores in scores_by_judge.items():
            if jn != gold_name:
                result[f"judge/{jn}"] = metrics.mean(scores)
        if rm_model is not None:
            from reward.model import score_texts

            rm_scores[name] = score_texts(
                rm_model, rm_tokenizer, judged, batch_size=config.batch_size, max_length=config.max_length
            ).tolist()
            result["rm_score"] = metrics.mean(rm_scores[name])
        if ref_model is not None:
            same_vocab = ref_tokenizer.get_vocab() == tokenizer.get_vocab()
            kls[name] = sequence_kls(samples, model, ref_model, None if same_vocab else ref_tokenizer)
            result["kl_to_ref"] = metrics.mean(kls[name])
        if ppl_texts:
            nll, count = text_nll(model, tokenizer, ppl_texts, config.batch_size, config.max_length)
            result["perplexity"] = metrics.perplexity(nll, count)
        result["distinct_1"] = metrics.distinct_n(samples.texts, 1)
        result["distinct_2"] = metrics.distinct_n(samples.texts, 2)
        result["mean_length"] = metrics.mean(samples.lengths)
        responses[name], lengths[name] = samples.texts, samples.lengths
        per_model[name] = result
        del model
        print(
            f"evaluate: {name}: gold {result['gold_score']:.3f}, distinct-2 {result['distinct_2']:.3f}, "
            f"{time.perf_counter() - t0:.1f}s"
        )

    # step 3. win rates against the baseline, per prompt, ties half
    baseline = config.baseline_name
    for name, result in per_model.items():
        result["win_rate_vs_baseline"] = metrics.win_rate(gold_scores[name], gold_scores[baseline])
        if rm_scores:
            result["win_rate_vs_baseline_rm"] = metrics.win_rate(rm_scores[name], rm_scores[baseline])

    # step 4. everything else the report shows: checks, reward model, stage timings, curves, samples
    checks = report.compute_checks(
        per_model,
        config.check_model,
        config.check_baseline,
        config.check_min_gold_gain,
        config.check_min_distinct_ratio,
        config.check_max_perplexity_ratio,
    )
    run_root = run_dir.parent
    plots: list[str] = []
    if config.plots:
        for stage_dir in sorted(p for p in run_root.iterdir() if p.is_dir() and p != run_dir):
            rows = _read_metrics_tolerant(stage_dir / "metrics.jsonl")
            if rows and report.plot_training_curves(
                stage_dir.name, rows, run_dir / "plots" / f"curves_{stage_dir.name}.png"
            ):
                plots.append(f"plots/curves_{stage_dir.name}.png")
        if report.plot_gold_vs_kl(per_model, run_dir / "plots" / "gold_vs_kl.png", judge=gold_name):
            plots.append("plots/gold_vs_kl.png")
    timings = read_stage_timings(run_root)
    timings.pop(
        "evaluate", None
    )  # a timing.json from an earlier evaluation; this run's own time goes in below
    timings["evaluate"] = round(time.perf_counter() - started, 2)
    timings["total"] = round(sum(timings.values()), 2)
    rm_stats = read_reward_stats(config.reward_model) if config.reward_model else {}
    result_report: dict[str, Any] = {
        "run_name": config.run_name,
        "baseline": baseline,
        "reference": reference,
        "num_prompts": len(prompts),
        "models": per_model,
        "checks": checks,
        "reward_model": (
            {"path": config.reward_model, "eval_accuracy": rm_stats.get("eval_accuracy"), **rm_stats}
            if config.reward_model
            else {}
        ),
        "timings_s": timings,
        "plots": plots,
        "samples": [
            {"prompt": prompts[i], "responses": {name: responses[name][i] for name in per_model}}
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

    # step 5. write: every response with its scores, then the report files
    sample_rows = [
        {
            "prompt": prompts[i],
            "model": name,
            "response": responses[name][i],
            "gold": gold_scores[name][i],
            "rm": rm_scores[name][i] if name in rm_scores else None,
            "kl": kls[name][i] if name in kls else None,
            "length": lengths[name][i],
        }
        for name in per_model
        for i in range(len(prompts))
    ]
    (run_dir / "samples.jsonl").write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in sample_rows)
    )
    report.write_json(result_report, run_dir / "report.json")
    (run_dir / "report.md").write_text(report.render_markdown(result_report))
    print(f"evaluate: report written to {run_dir / 'report.md'}")
    for check in checks:
        print(
            f"evaluate: check {check['rule']}: {check['value']:.4g} -> {'PASS' if check['passed'] else 'FAIL'}"
        )
    return result_report


def _read_metrics_tolerant(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl, skipping a half-written last line (a stage may still be writing)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Entry point for `alignment evaluate` and scripts/evaluate.py."""
    try:
        config = parse_config(Config, argv)
        config.check_models()
    except ConfigError as err:
        raise SystemExit(f"alignment evaluate: {err}") from None
    run(config)


if __name__ == "__main__":
    main()
