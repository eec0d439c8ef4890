"""`alignment finetune-compare`: several fine-tuning methods on one task, measured in one run, in one table and plot.

Each method is a set of `alignment finetune` overrides on one base recipe (full fine-tuning, frozen features,
LoRA, IA3, prompt tuning, prefix tuning, BitFit, ...). Every method runs as its own process, one after the
other with the same thread count, so training time and peak memory (the process's peak resident set on CPU,
peak allocated accelerator memory on GPU) are its own. The report gives trainable parameters, held-out
metrics, training time and peak memory per method, beside the classical baseline of the first method's run.

Outputs in <run_dir>: one finetune run folder per method, results.json, report.md and comparison.png.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from alignment.core.config import RESUME_HELP, ConfigError, StageConfig, parse_config, require
from alignment.core.errors import run_cli
from alignment.core.runs import start_run
from alignment.finetune.config import Config as FinetuneConfig

DEFAULT_METHODS: dict[str, dict[str, Any]] = {
    "full": {"learning_rate": 1.0e-4},
    "frozen features": {"freeze_backbone": True, "learning_rate": 2.0e-3},
    "lora": {"peft": "lora", "learning_rate": 1.0e-3},
    "ia3": {"peft": "ia3", "learning_rate": 5.0e-3},
    "prompt tuning": {"peft": "prompt_tuning", "learning_rate": 2.0e-2},
    "prefix tuning": {"peft": "prefix_tuning", "learning_rate": 5.0e-3},
    "bitfit": {"peft": "bitfit", "learning_rate": 1.0e-3},
}


@dataclass
class Config(StageConfig):
    """Options of `alignment finetune-compare`."""

    stage: ClassVar[str] = "finetune-compare"

    run_name: str = field(
        default="minilm-methods",
        metadata={"help": "Run folder name: outputs go to <output_root>/<run_name>/finetune-compare/."},
    )
    base_recipe: str = field(
        default="configs/finetune/minilm-sentiment.yaml",
        metadata={"help": "The finetune recipe every method starts from."},
    )
    overrides: dict = field(
        default_factory=dict,
        metadata={"help": "finetune options applied to every method (e.g. {max_train_samples: 2000})."},
    )
    methods: dict = field(
        default_factory=lambda: dict(DEFAULT_METHODS),
        metadata={"help": "Method name -> finetune options of that method (they win over `overrides`)."},
    )
    threads: int = field(
        default=1,
        metadata={"help": "OMP_NUM_THREADS of every method's process (one is steadier on a shared machine)."},
    )
    isolate: bool = field(
        default=True,
        metadata={
            "help": "Run each method in its own process (its own peak memory); false runs them in this process, "
            "faster to start but with a peak memory that only grows (for tests)."
        },
    )
    resume: str = field(
        default="auto",
        metadata={
            "help": "auto: keep the methods that already finished in this run folder; never: rerun all. "
            + RESUME_HELP
        },
    )

    def validate(self) -> None:
        """Reject impossible values, naming the key."""
        super().validate()
        require(bool(self.methods), "methods", "at least one method", self.methods)
        require(self.threads >= 1, "threads", "an int >= 1", self.threads)
        for name, options in self.methods.items():
            require(isinstance(options, dict), f"methods.{name}", "a mapping of finetune options", options)
            require("/" not in str(name), f"methods.{name}", "a name without '/'", name)

    def method_arguments(self, name: str) -> list[str]:
        """The finetune command-line options of one method."""
        options = {**self.overrides, **self.methods[name]}
        arguments = ["--config", self.base_recipe]
        for key, value in options.items():
            arguments += [f"--{key}", json.dumps(value) if isinstance(value, (list, dict)) else str(value)]
        return arguments

    def check_methods(self) -> None:
        """Parse every method's finetune options now, so a bad option fails before the first method trains."""
        for name in self.methods:
            try:
                parse_config(FinetuneConfig, self.method_arguments(name))
            except ConfigError as err:
                raise ConfigError(f"methods.{name}: {err}") from None


def run_method(config: Config, name: str, folder: Path, with_baseline: bool) -> dict[str, Any]:
    """Train one method in its own process; return its results.json."""
    results_file = folder / "results.json"
    if config.resume == "auto" and results_file.is_file():
        print(f"[finetune-compare] {name}: already measured in {folder}", flush=True)
        return json.loads(results_file.read_text())
    arguments = [*config.method_arguments(name), "--output_dir", str(folder), "--resume", "never"]
    arguments += ["--baseline", str(with_baseline).lower()]
    if not config.isolate:
        from alignment.finetune.train import run as run_finetune  # lazy: the command itself stays light

        return run_finetune(parse_config(FinetuneConfig, arguments))
    command = [sys.executable, "-m", "alignment.cli", "finetune", *arguments]
    env = {**os.environ, "OMP_NUM_THREADS": str(config.threads)}
    print(f"[finetune-compare] {name}: {' '.join(command[2:])}", flush=True)
    completed = subprocess.run(command, env=env, check=False)
    if completed.returncode != 0:
        raise ConfigError(
            f"methods.{name}: the finetune run failed (exit {completed.returncode}); see its output above"
        )
    return json.loads(results_file.read_text())


def headline_metric(results: dict[str, Any]) -> str:
    """The metric a method is compared on: accuracy, else Pearson, else exact match."""
    for key in ("accuracy", "pearson", "exact_match"):
        if key in results["model"]:
            return key
    raise ValueError("no comparable metric in the results")


def format_report(config: Config, rows: dict[str, dict[str, Any]]) -> str:
    """report.md: one row per method."""
    first = next(iter(rows.values()))
    metric = headline_metric(first)
    lines = [
        f"# Fine-tuning methods compared: {config.run_name}",
        "",
        f"Base recipe `{config.base_recipe}` with {json.dumps(config.overrides)}; backbone `{first['backbone']}`; "
        f"{first['train_examples']} training and {first['eval_examples']} held-out examples; each method in its own "
        f"process with {config.threads} thread(s), one after the other. Peak memory is the process's peak resident "
        "set (CPU) or allocated accelerator memory (GPU), model and data included.",
        "",
        f"| method | trainable params | share | held-out {metric} | macro-F1 | training time (s) | peak memory (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in rows.items():
        share = result["trainable_params"] / result["total_params"]
        macro_f1 = result["model"].get("macro_f1")
        lines.append(
            f"| {name} | {result['trainable_params']:,} | {share:.2%} | {result['model'][metric]:.4f} | "
            f"{'' if macro_f1 is None else f'{macro_f1:.4f}'} | {result['train_seconds']} | {result['peak_memory_mb']:.0f} |"
        )
    baseline = first.get("baseline") or {}
    if metric in baseline:
        lines += ["", f"Baseline ({first['baseline_name']}, same split): {metric} {baseline[metric]:.4f}."]
    lines += ["", "![methods](comparison.png)"]
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict[str, Any]], path: Path) -> None:
    """Held-out metric against trainable parameters, and training time and peak memory per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = headline_metric(next(iter(rows.values())))
    names = list(rows)
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.5))
    for name in names:
        result = rows[name]
        left.scatter(result["trainable_params"], result["model"][metric], s=40)
        left.annotate(
            name,
            (result["trainable_params"], result["model"][metric]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    left.set_xscale("log")
    left.set_xlabel("trainable parameters (log)")
    left.set_ylabel(f"held-out {metric}")
    baseline = next(iter(rows.values())).get("baseline") or {}
    if metric in baseline:
        left.axhline(baseline[metric], color="grey", linestyle="--", linewidth=1, label="TF-IDF baseline")
        left.legend(fontsize=8)
    middle.barh(names, [rows[n]["train_seconds"] for n in names], color="tab:orange")
    middle.set_xlabel("training time (s)")
    middle.invert_yaxis()
    right.barh(names, [rows[n]["peak_memory_mb"] for n in names], color="tab:green")
    right.set_xlabel("peak memory (MiB)")
    right.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(config: Config) -> dict[str, Any]:
    """Run every method, then write results.json, report.md and comparison.png."""
    config.check_methods()
    run_dir = start_run(config)
    rows = {}
    for index, name in enumerate(config.methods):
        folder = run_dir / name.replace(" ", "-")
        rows[name] = run_method(config, name, folder, with_baseline=index == 0)
    (run_dir / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (run_dir / "report.md").write_text(format_report(config, rows))
    plot(rows, run_dir / "comparison.png")
    print((run_dir / "report.md").read_text())
    return rows


def main(argv: list[str] | None = None) -> None:
    """`alignment finetune-compare --config configs/finetune-compare/minilm-methods.yaml [--key value ...]`."""
    run_cli("finetune-compare", lambda args: run(parse_config(Config, args)), argv)


if __name__ == "__main__":
    main()
