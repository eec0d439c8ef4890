"""Pipeline logic with fake stage commands (a few milliseconds each): wiring, skip, redo, stop at failure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from alignment.core.config import ConfigError, build_config, parse_config
from alignment.pipeline import Config, PipelineError, StageFailed, build_command, main, run

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Records its options, then writes <output_root>/<run_name>/<stage>/model unless told to fail.
FAKE_STAGE = """
import json, os, sys
from pathlib import Path
stage, args = sys.argv[1], sys.argv[2:]
opts = dict(zip(args[::2], args[1::2]))
with open(Path(opts["--output_root"]) / "calls.jsonl", "a") as f:
    f.write(json.dumps({"stage": stage, "opts": opts}) + "\\n")
print(f"fake {stage} working")
if os.environ.get("FAIL_STAGE") == stage:
    print("something went wrong", file=sys.stderr)
    sys.exit(3)
(Path(opts["--output_root"]) / opts["--run_name"] / stage / "model").mkdir(parents=True, exist_ok=True)
"""


@pytest.fixture()
def fake(tmp_path):
    script = tmp_path / "fake_stage.py"
    script.write_text(FAKE_STAGE)
    root = tmp_path / "runs"
    root.mkdir()
    recipe = tmp_path / "sft.yaml"
    recipe.write_text("learning_rate: 0.1\n")

    def make(**extra) -> Config:
        values = {
            "run_name": "demo",
            "output_root": str(root),
            "stages": ["pretrain", "sft", "ppo"],
            "recipes": {"sft": str(recipe)},
            "commands": {s: ["{python}", str(script), "{stage}"] for s in ("pretrain", "sft", "ppo")},
            "inputs": {"sft": {"model": "{pretrain}"}, "ppo": {"model": "{sft}", "tags": ["a", "b"]}},
            "overrides": {"ppo": {"max_steps": 3, "normalize_reward": False}},
            "outputs": {},
        }
        values.update(extra)
        return build_config(Config, values)

    def calls() -> list[dict]:
        path = root / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    return make, calls, root


def test_stages_run_in_order_with_wired_inputs_then_skip(fake):
    make, calls, root = fake
    result = run(make())
    assert [c["stage"] for c in calls()] == ["pretrain", "sft", "ppo"]
    sft, ppo = calls()[1]["opts"], calls()[2]["opts"]
    assert sft["--config"].endswith("sft.yaml") and sft["--run_name"] == "demo"
    assert sft["--model"] == str(root / "demo" / "pretrain" / "model")
    assert ppo["--model"] == str(root / "demo" / "sft" / "model")
    assert (
        ppo["--tags"] == '["a", "b"]' and ppo["--max_steps"] == "3" and ppo["--normalize_reward"] == "false"
    )
    for stage in ("pretrain", "sft", "ppo"):
        timing = json.loads((root / "demo" / stage / "timing.json").read_text())
        assert timing["stage"] == stage and timing["wall_s"] >= 0
        assert f"fake {stage} working" in (root / "demo" / stage / "stage.log").read_text()
    summary = json.loads((root / "demo" / "pipeline" / "timing.json").read_text())
    assert {s["status"] for s in summary["stages"].values()} == {"ran"}
    assert summary["total_s"] == pytest.approx(sum(s["wall_s"] for s in result["stages"].values()), abs=0.05)

    run(make())  # everything is done: nothing runs
    assert len(calls()) == 3

    run(make(redo=["sft"]))  # sft again, and ppo because its input changed; pretrain stays
    assert [c["stage"] for c in calls()[3:]] == ["sft", "ppo"]

    run(make(redo_all=True))
    assert [c["stage"] for c in calls()[5:]] == ["pretrain", "sft", "ppo"]


def test_a_model_without_a_done_marker_is_not_done(fake):
    make, calls, root = fake
    (root / "demo" / "pretrain" / "model").mkdir(parents=True)  # left by a crashed run: no timing.json
    run(make(stages=["pretrain"]))
    assert [c["stage"] for c in calls()] == ["pretrain"]


def test_first_failing_stage_stops_the_pipeline(fake, monkeypatch, capsys):
    make, calls, root = fake
    monkeypatch.setenv("FAIL_STAGE", "sft")
    with pytest.raises(StageFailed) as err:
        run(make())
    message = str(err.value)
    log = root / "demo" / "sft" / "stage.log"
    assert "stage 'sft' failed with exit code 3" in message and str(log) in message and "\n" not in message
    assert "something went wrong" in message and "fake_stage.py" in log.read_text().splitlines()[0]
    assert [c["stage"] for c in calls()] == ["pretrain", "sft"]
    assert not (root / "demo" / "sft" / "timing.json").exists()

    monkeypatch.setenv("FAIL_STAGE", "ppo")
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(_write_yaml(root / "p.yaml", make())), "--dry_run", "false"])
    assert exit_info.value.code == 3  # the failing stage's own exit code
    assert "stage 'ppo' failed with exit code 3" in capsys.readouterr().err
    assert [c["stage"] for c in calls()[2:]] == ["sft", "ppo"]  # pretrain was done, sft was not

    monkeypatch.delenv("FAIL_STAGE")
    run(make())
    assert [c["stage"] for c in calls()[4:]] == ["ppo"]


def test_a_stage_that_writes_no_model_fails(fake, tmp_path):
    make, calls, root = fake
    config = make(stages=["pretrain"], commands={"pretrain": [sys.executable, "-c", "print('no model')"]})
    with pytest.raises(StageFailed, match="finished without its output: .*pretrain.model does not exist"):
        run(config)


def test_dry_run_and_accelerate_commands(fake):
    make, calls, root = fake
    result = run(make(dry_run=True))
    assert calls() == [] and {s["status"] for s in result["stages"].values()} == {"would run"}
    config = make(commands={}, accelerate={"sft": "configs/accelerate/zero3.yaml"})
    command = build_command(config, "sft")
    assert command[1:5] == [
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "configs/accelerate/zero3.yaml",
    ]
    assert command[5].endswith("scripts/sft.py") and command[6] == "--config"
    assert build_command(config, "ppo")[1:4] == ["-m", "alignment.cli", "ppo"]
    # the pipeline's seed seeds every stage, and a stage's own override still wins (it comes later)
    seeded = make(commands={}, seed=7, overrides={"ppo": {"seed": 3}})
    sft_words, ppo_words = build_command(seeded, "sft"), build_command(seeded, "ppo")
    assert sft_words[sft_words.index("--seed") + 1] == "7"
    assert [ppo_words[i + 1] for i, w in enumerate(ppo_words) if w == "--seed"] == ["7", "3"]


def test_bad_pipeline_configs_name_the_key(fake):
    make, _, _ = fake
    with pytest.raises(ConfigError, match="inputs.sft"):
        make(stages=["sft", "pretrain"])  # sft would read a model that does not exist yet
    with pytest.raises(ConfigError, match="stages"):
        make(stages=["pretrain", "no-such-stage"])
    with pytest.raises(ConfigError, match="redo"):
        make(redo=["reward"])
    with pytest.raises(PipelineError, match="needs the output of stage 'pretrain'"):
        run(make(stages=["sft"]))
    with pytest.raises(PipelineError, match="recipes.ppo: nope.yaml does not exist"):
        run(make(recipes={"ppo": "nope.yaml"}))


@pytest.mark.parametrize("recipe", ["tiny-sentiment.yaml", "smollm2-sentiment.yaml"])
def test_every_stage_command_of_a_shipped_pipeline_parses_into_its_stage_config(recipe):
    import importlib

    from alignment.cli import COMMANDS

    config = parse_config(Config, ["--config", str(CONFIGS / "pipeline" / recipe)])
    for stage in config.stages:
        command = build_command(config, stage)
        assert command[1:4] == ["-m", "alignment.cli", stage]
        stage_config = parse_config(importlib.import_module(COMMANDS[stage][0]).Config, command[4:])
        assert stage_config.run_dir == Path("runs") / config.run_name / stage, stage


def test_shipped_pipeline_recipes():
    tiny = parse_config(Config, ["--config", str(CONFIGS / "pipeline" / "tiny-sentiment.yaml")])
    assert tiny.stages == ["prepare", "pretrain", "sft", "reward", "ppo", "evaluate"]
    for stage in tiny.stages[1:]:
        assert (CONFIGS.parent / tiny.recipes[stage]).is_file(), stage
    smol = parse_config(Config, ["--config", str(CONFIGS / "pipeline" / "smollm2-sentiment.yaml")])
    assert "pretrain" not in smol.stages
    sft_command = build_command(smol, "sft")
    assert sft_command[sft_command.index("--model") + 1] == "cache://models/smollm2-135m-instruct"
    evaluate_models = json.loads(
        build_command(smol, "evaluate")[build_command(smol, "evaluate").index("--models") + 1]
    )
    assert evaluate_models["ppo"] == "runs/smollm2-sentiment/ppo/model"


def _write_yaml(path: Path, config: Config) -> Path:
    import yaml

    values = config.to_dict()
    path.write_text(yaml.safe_dump(values))
    return path
