"""`alignment pipeline`: run prepare, pretrain, sft, reward, ppo and evaluate as separate stage runs.

Each stage is its own process (`python -m alignment.cli <stage> ...`, or `accelerate launch --config_file
<acc> scripts/<stage>.py ...` when the pipeline names an accelerate config for it) with its own run folder
`<output_root>/<run_name>/<stage>/`. A stage's inputs are wired to earlier stages' final models through
`--key value` overrides: in `inputs`, `{sft}` stands for `<output_root>/<run_name>/sft/model`.

- A stage is skipped when it is done: its outputs exist (by default `<run_dir>/model`, for evaluate
  `<run_dir>/report.json`) and the pipeline recorded its success in `<run_dir>/timing.json`. Outputs that
  live outside the run folder count as done by themselves. `prepare` always runs: it checks its cache's
  manifest itself (file hashes and builder versions) in seconds, so a cache left by older code is rebuilt.
- `redo: [sft, ppo]` or `redo_all: true` runs stages again from a clean run folder; every stage whose
  inputs name a stage that ran is run again too, so no stage is left built on an older model.
- A stage that stopped before finishing is run again in its folder as it is (stages resume from their
  own checkpoints).
- Each stage's output goes to the terminal and to `<run_dir>/stage.log`. The first failing stage stops
  the pipeline with a message naming the stage, its command and its log file.
- Wall time per stage goes to `<run_dir>/timing.json`; the whole run to `<run_name>/pipeline/timing.json`.

    alignment pipeline --config configs/pipeline/tiny-sentiment.yaml
    alignment pipeline --config configs/pipeline/tiny-sentiment.yaml --redo ppo,evaluate
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from alignment.cli import COMMANDS, CONFIGS, config_class
from alignment.core.config import ConfigError, StageConfig, parse_config, require
from alignment.core.errors import UserError, run_cli
from alignment.core.paths import REPO_ROOT, resolve_path
from alignment.core.runs import start_run

DEFAULT_STAGES = ["prepare", "pretrain", "sft", "reward", "ppo", "evaluate"]
DEFAULT_RECIPES = {
    "pretrain": "configs/pretrain/tiny.yaml",
    "sft": "configs/sft/tiny.yaml",
    "reward": "configs/reward/tiny.yaml",
    "ppo": "configs/ppo/tiny.yaml",
    "evaluate": "configs/evaluate/tiny.yaml",
}
# The InstructGPT wiring: SFT starts from the pretrained model, the reward model from the SFT model,
# PPO from the SFT policy against the reward model, and evaluation compares SFT with PPO.
DEFAULT_INPUTS: dict[str, dict[str, Any]] = {
    "sft": {"model": "{pretrain}"},
    "reward": {"model": "{sft}"},
    "ppo": {"model": "{sft}", "reward_model": "{reward}"},
    "evaluate": {"models": {"sft": "{sft}", "ppo": "{ppo}"}, "reward_model": "{reward}"},
}
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_-]*)\}")
# The `accelerate launch` script of a stage, where its name is not `scripts/<stage>.py` (TRL's name for the
# reward script; a `scripts/reward.py` would shadow the `reward` package for every script run from there).
SCRIPTS = {"reward": "reward_modeling.py"}


class PipelineError(UserError):
    """The pipeline cannot start: a recipe is missing, or a stage needs an output nothing produces."""


class StageFailed(RuntimeError):
    """A stage process exited with an error; carries its exit code, its one-line error and its log file."""

    def __init__(self, stage: str, returncode: int, error: str, log_path: Path):
        what = f"failed with exit code {returncode}" if returncode else "finished without its output"
        super().__init__(f"stage '{stage}' {what}: {error} (log: {log_path})")
        self.returncode = returncode or 1


@dataclass
class Config(StageConfig):
    """Which stages to run, with which recipes, and how each stage's inputs come from earlier stages."""

    stage: ClassVar[str] = "pipeline"

    run_name: str = field(
        default="tiny-sentiment",
        metadata={"help": "Run folder: stages write to <output_root>/<run_name>/<stage>/."},
    )
    stages: list[str] = field(
        default_factory=lambda: list(DEFAULT_STAGES), metadata={"help": "Stages to run, in order."}
    )
    recipes: dict = field(
        default_factory=lambda: dict(DEFAULT_RECIPES),
        metadata={
            "help": "Stage -> recipe YAML passed as --config (a stage without one runs on its defaults)."
        },
    )
    inputs: dict = field(
        default_factory=lambda: json.loads(json.dumps(DEFAULT_INPUTS)),
        metadata={
            "help": "Stage -> {key: value} wiring passed as --key value; '{stage}' means that stage's final model "
            "folder, '{run_name}' and '{output_root}' are filled in too. Nested mappings are passed as JSON."
        },
    )
    overrides: dict = field(
        default_factory=dict,
        metadata={"help": "Stage -> {key: value}: extra --key value options for that stage."},
    )
    accelerate: dict = field(
        default_factory=dict,
        metadata={
            "help": "Stage -> accelerate config file: launch that stage with `accelerate launch scripts/<stage>.py`."
        },
    )
    commands: dict = field(
        default_factory=dict,
        metadata={
            "help": "Stage -> command (list of words) replacing `python -m alignment.cli <stage>`; its options are "
            "appended. '{python}', '{stage}' and the other placeholders are filled in."
        },
    )
    outputs: dict = field(
        default_factory=lambda: {
            "prepare": [
                "cache://datasets/sentiment/prompts_heldout.jsonl",
                "cache://datasets/sentiment/corpus_train.jsonl",
                "cache://datasets/sentiment/snippets.jsonl",
            ],
            "evaluate": ["{run_dir}/report.json"],
        },
        metadata={"help": "Stage -> paths that must exist when it is done (default: '{run_dir}/model')."},
    )
    redo: list[str] = field(
        default_factory=list, metadata={"help": "Stages to run again even if they are done."}
    )
    redo_all: bool = field(default=False, metadata={"help": "Run every stage again."})
    dry_run: bool = field(
        default=False, metadata={"help": "Print what would run (and what is skipped); run nothing."}
    )

    def validate(self) -> None:
        """Reject unknown stages and wiring that points forward in time, naming the key."""
        super().validate()
        require(
            self.output_dir is None,
            "output_dir",
            "null: a pipeline writes <output_root>/<run_name>/<stage>/ for each stage (set those two instead)",
            self.output_dir,
        )
        require(bool(self.stages), "stages", "a non-empty list of stages", self.stages)
        require(len(set(self.stages)) == len(self.stages), "stages", "each stage once", self.stages)
        for stage in self.stages:
            require(
                stage in COMMANDS or stage in self.commands,
                "stages",
                f"names of commands ({', '.join(COMMANDS)}) or stages given in `commands`",
                stage,
            )
        for key in ("recipes", "inputs", "overrides", "accelerate", "commands", "outputs"):
            for stage, value in getattr(self, key).items():
                if key in ("inputs", "overrides"):
                    require(isinstance(value, dict), f"{key}.{stage}", "a mapping of option -> value", value)
                if key == "commands":
                    require(
                        isinstance(value, list) and all(isinstance(w, str) for w in value) and bool(value),
                        f"commands.{stage}",
                        "a non-empty list of strings",
                        value,
                    )
                if key == "outputs":
                    require(isinstance(value, list), f"outputs.{stage}", "a list of paths", value)
        for stage in self.redo:
            require(stage in self.stages, "redo", f"stages from {self.stages}", stage)
        for stage, wiring in self.inputs.items():
            if stage not in self.stages:
                continue
            for source in sorted(referenced_stages(wiring)):
                require(
                    source not in self.stages or self.stages.index(source) < self.stages.index(stage),
                    f"inputs.{stage}",
                    f"to name only stages that run before {stage!r}",
                    "{" + source + "}",
                )


# ---------------------------------------------------------------------------------------------
# Commands


def referenced_stages(value: Any) -> set[str]:
    """Stage names used as '{stage}' placeholders anywhere in `value` (a string, list or mapping)."""
    if isinstance(value, str):
        return {
            name
            for name in PLACEHOLDER.findall(value)
            if name not in ("run_name", "output_root", "run_dir", "python", "stage")
        }
    if isinstance(value, dict):
        return set().union(*(referenced_stages(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(referenced_stages(v) for v in value)) if value else set()
    return set()


def fill(value: Any, names: dict[str, str]) -> Any:
    """Replace '{name}' placeholders in every string of `value`; unknown names are left as written."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: names.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    return value


def as_cli_value(value: Any) -> str:
    """A config value as one command-line word that `parse_config` turns back into the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return json.dumps(value)  # JSON is YAML; parse_config reads lists and mappings from it
    return str(value)


def stage_dir(config: Config, stage: str) -> Path:
    """Where a stage of this pipeline writes: <output_root>/<run_name>/<stage>."""
    return Path(config.output_root) / config.run_name / stage


def placeholder_values(config: Config, stage: str) -> dict[str, str]:
    """What '{...}' placeholders mean for `stage`: other stages' model folders, run_dir, run_name..."""
    names = {s: str(stage_dir(config, s) / "model") for s in set(COMMANDS) | set(config.stages)}
    names.update(
        run_name=config.run_name,
        output_root=config.output_root,
        run_dir=str(stage_dir(config, stage)),
        python=sys.executable,
        stage=stage,
    )
    return names


def stage_arguments(config: Config, stage: str) -> list[str]:
    """The options `stage` is run with: its recipe, the run folder, its inputs and overrides."""
    names = placeholder_values(config, stage)
    arguments = ["--config", str(config.recipes[stage])] if config.recipes.get(stage) else []
    arguments += ["--run_name", config.run_name, "--output_root", config.output_root]
    if stage in CONFIGS and stage not in config.commands:  # our stages: the pipeline's seed seeds each one
        arguments += ["--seed", str(config.seed)]
    options = {**fill(config.inputs.get(stage, {}), names), **fill(config.overrides.get(stage, {}), names)}
    for key, value in options.items():
        arguments += [f"--{key}", as_cli_value(value)]
    return arguments


def check_stage_configs(config: Config) -> None:
    """Parse every stage's options with its config class before anything runs.

    A bad option in the last stage then fails now, not after the first stages spent their minutes.
    """
    for stage in config.stages:
        recipe = config.recipes.get(stage)
        if recipe and not Path(recipe).is_file():
            raise PipelineError(
                f"recipes.{stage}: {recipe} does not exist (paths are relative to {Path.cwd()})"
            )
        if stage in config.commands or stage not in CONFIGS or stage == "pipeline":
            continue  # a user's own command: its options are its own business
        try:
            stage_config = parse_config(config_class(stage), stage_arguments(config, stage))
            if hasattr(stage_config, "check_models"):
                stage_config.check_models()
        except ConfigError as err:
            raise ConfigError(f"stage '{stage}': {err}") from None


def build_command(config: Config, stage: str) -> list[str]:
    """The full command line that runs `stage` as its own process."""
    names = placeholder_values(config, stage)
    if stage in config.commands:
        command = fill(list(config.commands[stage]), names)
    elif stage in config.accelerate:
        script = REPO_ROOT / "scripts" / SCRIPTS.get(stage, f"{stage}.py")
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(config.accelerate[stage]),
            str(script),
        ]
    else:
        command = [sys.executable, "-m", "alignment.cli", stage]
    return command + stage_arguments(config, stage)


# ---------------------------------------------------------------------------------------------
# Done markers and running


def expected_outputs(config: Config, stage: str) -> list[Path]:
    """Paths that exist once `stage` finished (its final model folder unless `outputs` says otherwise)."""
    names = placeholder_values(config, stage)
    paths = config.outputs.get(stage, ["{run_dir}/model"])
    return [Path(resolve_path(fill(p, names))) for p in paths]


# Stages that decide for themselves what is already done (prepare verifies its manifest), so the pipeline
# never skips them on the evidence of files that exist but may come from an older builder.
SELF_CHECKING_STAGES = {"prepare"}


def is_done(config: Config, stage: str) -> bool:
    """Outputs present and success recorded; outputs outside the run folder (a cache) need no record."""
    if stage in SELF_CHECKING_STAGES:
        return False
    run_dir = stage_dir(config, stage).resolve()
    outputs = expected_outputs(config, stage)
    if not all(p.exists() for p in outputs):
        return False
    inside = any(run_dir in p.resolve().parents or p.resolve() == run_dir for p in outputs)
    return (run_dir / "timing.json").is_file() or not inside


def run_logged(command: list[str], log_path: Path) -> int:
    """Run `command`, copying its output line by line to the terminal and to `log_path`; return its exit code."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # so the log shows progress as it happens
    with log_path.open("w") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
        )
        assert process.stdout is not None
        try:
            for line in process.stdout:
                sys.stdout.write(line)
                log.write(line)
            return process.wait()
        except KeyboardInterrupt:
            process.terminate()
            process.wait()
            raise


def write_json_atomic(data: dict[str, Any], path: Path) -> None:
    """Write JSON through a temporary file, so a marker is never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def error_line(log_path: Path) -> str:
    """The error a failed stage printed: its `alignment <stage>: error:` line, else its log's last line."""
    if not log_path.is_file():
        return "no log"
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("alignment ") and (": error: " in line or ": interrupted" in line):
            return line
    return lines[-1] if lines else "no output"


def run(config: Config) -> dict[str, Any]:
    """Run the stages in order, skipping done ones; return {stage: {status, wall_s}} and the totals."""
    started = time.perf_counter()
    check_stage_configs(config)  # fail before spending minutes on early stages
    pipeline_dir = start_run(config) if not config.dry_run else config.run_dir
    ran: set[str] = set()
    summary: dict[str, dict[str, Any]] = {}
    for number, stage in enumerate(config.stages, start=1):
        run_dir = stage_dir(config, stage)
        depends_on = referenced_stages(config.inputs.get(stage, {})) | referenced_stages(
            config.overrides.get(stage, {})
        )
        forced = config.redo_all or stage in config.redo or bool(depends_on & ran)
        header = f"[pipeline {number}/{len(config.stages)}] {stage}"
        if not forced and is_done(config, stage):
            previous = _read_timing(run_dir)
            summary[stage] = {"status": "skipped", "wall_s": previous.get("wall_s")}
            print(f"{header}: done already ({run_dir}), skipping (use --redo {stage} to run it again)")
            continue
        for source in sorted(depends_on - set(config.stages)):
            missing = [p for p in expected_outputs(config, source) if not p.exists()]
            if missing:
                raise PipelineError(
                    f"stage '{stage}' needs the output of stage '{source}', which is not in `stages` and "
                    f"has not been run: {missing[0]} does not exist"
                )
        command = build_command(config, stage)
        print(f"{header}: {shlex.join(command)}")
        if config.dry_run:
            summary[stage] = {"status": "would run", "wall_s": None}
            ran.add(stage)
            continue
        if forced and run_dir.exists():
            # A clean folder: a stage resuming from checkpoints of an older run would not be a redo.
            shutil.rmtree(run_dir)
        (run_dir / "timing.json").unlink(missing_ok=True)
        log_path = run_dir / "stage.log"
        t0 = time.perf_counter()
        returncode = run_logged(command, log_path)
        wall_s = round(time.perf_counter() - t0, 2)
        missing = [str(p) for p in expected_outputs(config, stage) if not p.exists()]
        if returncode != 0 or missing:
            _write_summary(pipeline_dir, summary | {stage: {"status": "failed", "wall_s": wall_s}}, started)
            error = error_line(log_path) if returncode != 0 else f"{missing[0]} does not exist"
            raise StageFailed(stage, returncode, error, log_path)
        write_json_atomic(
            {
                "stage": stage,
                "wall_s": wall_s,
                "command": command,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
            run_dir / "timing.json",
        )
        summary[stage] = {"status": "ran", "wall_s": wall_s}
        ran.add(stage)
        print(f"{header}: finished in {wall_s:.1f}s")
    result = _write_summary(pipeline_dir, summary, started) if not config.dry_run else {"stages": summary}
    _print_summary(config, summary, result)
    return result


def _read_timing(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "timing.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_summary(pipeline_dir: Path, summary: dict[str, dict[str, Any]], started: float) -> dict[str, Any]:
    """`<run_name>/pipeline/timing.json`: each stage's status and seconds, their total, this invocation's wall time."""
    stage_seconds = [s["wall_s"] for s in summary.values() if isinstance(s.get("wall_s"), (int, float))]
    result = {
        "stages": summary,
        "total_s": round(sum(stage_seconds), 2),
        "wall_s": round(time.perf_counter() - started, 2),
    }
    write_json_atomic(result, pipeline_dir / "timing.json")
    return result


def _print_summary(config: Config, summary: dict[str, dict[str, Any]], result: dict[str, Any]) -> None:
    print("\n[pipeline] stage        status     seconds")
    for stage, info in summary.items():
        seconds = f"{info['wall_s']:.1f}" if isinstance(info.get("wall_s"), (int, float)) else "-"
        print(f"[pipeline] {stage:<12} {info['status']:<10} {seconds}")
    if "total_s" in result:
        print(f"[pipeline] all stages {result['total_s']:.1f}s; this invocation {result['wall_s']:.1f}s")
    report = stage_dir(config, "evaluate") / "report.md"
    if "evaluate" in summary and report.exists():
        print(f"[pipeline] report: {report}")


def main(argv: list[str] | None = None) -> None:
    """Entry point for `alignment pipeline` and scripts/pipeline.py."""

    def body(args: list[str]) -> dict[str, Any]:
        try:
            return run(parse_config(Config, args))
        except StageFailed as err:
            print(f"alignment pipeline: {err}", file=sys.stderr)
            raise SystemExit(err.returncode) from None

    run_cli("pipeline", body, argv)


if __name__ == "__main__":
    main()
