from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest
import yaml

from alignment.core.config import ConfigError, StageConfig, parse_config, require, save_config


@dataclass
class ToyConfig(StageConfig):
    stage: ClassVar[str] = "toy"
    learning_rate: float = field(default=1e-3, metadata={"help": "Step size."})
    steps: int = field(default=10, metadata={"help": "Number of steps."})
    use_lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter."})
    schedule: Literal["linear", "cosine"] = field(default="cosine", metadata={"help": "LR schedule."})
    layers: list[int] = field(default_factory=list, metadata={"help": "Layers to freeze."})
    dataset: str | None = field(default=None, metadata={"help": "Data file."})

    def validate(self) -> None:
        super().validate()
        require(self.learning_rate > 0, "learning_rate", "a positive number", self.learning_rate)


@pytest.fixture()
def recipe(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("learning_rate: 0.01\nsteps: 5\nlayers: [0, 1]\n")
    return path


def test_yaml_then_command_line_overrides(recipe):
    config = parse_config(
        ToyConfig, ["--config", str(recipe), "--steps", "7", "--schedule=linear", "--use_lora"]
    )
    assert config.learning_rate == 0.01 and config.steps == 7
    assert config.schedule == "linear" and config.use_lora is True and config.layers == [0, 1]
    assert config.dataset is None


def test_unknown_key_in_file_names_file_key_and_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as err:
        parse_config(ToyConfig, ["--config", str(path)])
    message = str(err.value)
    assert str(path) in message and "'learning_rat'" in message and "did you mean 'learning_rate'" in message
    assert "steps" in message  # lists the valid keys


def test_unknown_key_on_command_line(recipe):
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        parse_config(ToyConfig, ["--config", str(recipe), "--stepz", "3"])


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--steps", "three"], "steps: expected int"),
        (["--steps", "2.5"], "steps: expected int"),
        (["--learning_rate", "fast"], "learning_rate: expected float"),
        (["--use_lora", "maybe"], "use_lora: expected true or false"),
        (["--schedule", "step"], "schedule: expected one of 'linear', 'cosine'"),
        (["--learning_rate", "-1"], "learning_rate: expected a number > 0"),
        (["--layers", "a,b"], "layers[0]: expected int"),
    ],
)
def test_wrong_types_and_impossible_values_name_the_key(argv, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        parse_config(ToyConfig, argv)


def test_wrong_type_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps: [1, 2]\n")
    with pytest.raises(ConfigError, match="steps: expected int"):
        parse_config(ToyConfig, ["--config", str(path)])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(ToyConfig, ["--config", str(tmp_path / "nope.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config(ToyConfig, ["--config", str(bad)])


def test_resolved_config_round_trips(tmp_path, recipe):
    config = parse_config(ToyConfig, ["--config", str(recipe), "--run_name", "exp1"])
    assert config.run_dir == tmp_path.__class__("runs/exp1/toy")
    save_config(config, tmp_path / "out" / "config.yaml")
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved["steps"] == 5 and saved["run_name"] == "exp1"
    assert parse_config(ToyConfig, ["--config", str(tmp_path / "out" / "config.yaml")]) == config


def test_help_lists_fields(capsys):
    with pytest.raises(SystemExit):
        parse_config(ToyConfig, ["--help"])
    out = capsys.readouterr().out
    assert "--learning_rate (float, default 0.001)" in out and "Step size." in out
