"""Every shipped YAML under configs/ parses: stage recipes into their stage's Config, accelerate configs
into a launchable layout whose DeepSpeed JSON exists. Recipes must never drift to keys the code ignores."""

import json
from pathlib import Path

import pytest
import yaml

from alignment.cli import COMMANDS, config_class
from alignment.core.config import parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STAGE_RECIPES = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name != "accelerate")
ACCELERATE = sorted((CONFIGS / "accelerate").glob("*.yaml"))


def test_every_stage_has_a_tiny_recipe():
    for stage in ("pretrain", "sft", "reward", "ppo"):
        assert (CONFIGS / stage / "tiny.yaml").is_file(), stage
    assert (CONFIGS / "pipeline" / "tiny-sentiment.yaml").is_file()


def test_every_command_module_exposes_the_config_class_the_cli_names():
    import importlib

    for stage, (module, _) in COMMANDS.items():
        assert importlib.import_module(module).Config is config_class(stage), stage


@pytest.mark.parametrize("recipe", STAGE_RECIPES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_stage_recipe_parses(recipe):
    stage = recipe.parent.name
    assert stage in COMMANDS, f"{recipe}: folder {stage!r} is not a command ({sorted(COMMANDS)})"
    config = parse_config(config_class(stage), ["--config", str(recipe)])
    assert config.stage == stage
    # A wall-clock stop would make a recipe's result depend on the machine's speed (opt-in only).
    assert getattr(config, "max_time_minutes", None) is None, f"{recipe}: max_time_minutes is set"
    header = recipe.read_text().splitlines()[0]
    assert header.startswith("#"), (
        f"{recipe}: start with a comment saying what it is for and how to launch it"
    )


@pytest.mark.parametrize("accelerate_config", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_config_is_complete(accelerate_config):
    config = yaml.safe_load(accelerate_config.read_text())
    assert config["distributed_type"] in ("NO", "MULTI_GPU", "DEEPSPEED")
    assert config["num_processes"] >= 1
    if config["distributed_type"] == "DEEPSPEED":
        ds_path = CONFIGS.parent / config["deepspeed_config"]["deepspeed_config_file"]
        ds = json.loads(ds_path.read_text())
        assert ds["zero_optimization"]["stage"] in (2, 3)
        assert "mixed_precision" not in config  # accelerate rejects it next to a deepspeed_config_file


def test_demo_recipes_ask_in_the_form_sft_teaches():
    # PPO and evaluation must prompt the tuned model with the instruction its demonstrations use.
    from alignment.prepare.sentiment import CONTINUE_INSTRUCTION

    for recipe in ("ppo/tiny.yaml", "evaluate/tiny.yaml"):
        config = yaml.safe_load((CONFIGS / recipe).read_text())
        assert config["prompt_template"] == CONTINUE_INSTRUCTION and config["use_chat_template"] is True, (
            recipe
        )
