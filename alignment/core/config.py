"""Stage configuration: one dataclass per stage, filled from a YAML file plus `--key value` overrides.

Every stage config subclasses `StageConfig`. Each field carries its help text once, in
`metadata={"help": ...}`, next to its default. `parse_config` reads `--config file.yaml` and
command-line overrides (`--learning_rate 1e-4` or `--learning_rate=1e-4`), converts values to the
annotated types and rejects unknown keys, wrong types and impossible values with a `ConfigError`
that names the key (and the file) and lists what is valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from alignment.core.errors import ConfigError, one_line

C = TypeVar("C", bound="StageConfig")
# Keys with one meaning in every stage that has them, checked once here (see `StageConfig.validate`).
RESUME_HELP = (
    "auto: continue from the newest complete checkpoint in the run folder, if any (refused when the config "
    "changed); never: start fresh; or a checkpoint folder to continue from."
)
PRECISION_HELP = (
    "fp32; bf16: bfloat16 autocast for the forward and backward passes (weights and optimizer stay fp32), "
    "faster on GPUs and on CPUs with AVX-512 BF16 or AMX, far slower on AVX2-only CPUs; auto: bf16 where it "
    "is fast, fp32 elsewhere. Under DeepSpeed the Trainer stages (pretrain, SFT, reward) use DeepSpeed's "
    "bf16 mode instead of autocast: bf16 weights with an fp32 copy in the optimizer, and a bf16 saved model; "
    "there, auto on a CPU means fp32."
)


@dataclass
class StageConfig:
    """Fields shared by every stage: where the run folder is and how it is seeded."""

    stage: ClassVar[str] = "stage"

    run_name: str = field(
        default="default",
        metadata={"help": "Run folder name: outputs go to <output_root>/<run_name>/<stage>/."},
    )
    output_root: str = field(default="runs", metadata={"help": "Folder that holds all run folders."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Explicit output folder; overrides <output_root>/<run_name>/<stage>."}
    )
    seed: int = field(default=42, metadata={"help": "Seed for python, numpy and torch (and data order)."})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` for impossible values; stages extend this.

        Checked here for every stage: no float setting is NaN or infinite, and the keys that several stages
        share (resume, learning_rate, warmup_ratio, save_steps, ...) mean the same and take the same values.
        """
        if not self.run_name or "/" in self.run_name:
            raise ConfigError(f"run_name: expected a non-empty name without '/', got {self.run_name!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name}: expected a finite number, got {value!r}")
        checks = {
            "learning_rate": (lambda v: v > 0, "a number > 0"),
            "max_grad_norm": (lambda v: v >= 0, "a number >= 0 (0 turns clipping off)"),
            "weight_decay": (lambda v: v >= 0, "a number >= 0"),
            "warmup_ratio": (lambda v: 0 <= v < 1, "a share of the steps in [0, 1)"),
            "eval_fraction": (lambda v: 0 <= v < 1, "a share in [0, 1)"),
            "save_steps": (lambda v: v >= 0, "an int >= 0 (0: no checkpoints during training)"),
            "save_total_limit": (lambda v: v >= 1, "an int >= 1"),
            "logging_steps": (lambda v: v >= 1, "an int >= 1"),
            "eval_steps": (lambda v: v >= 0, "an int >= 0 (0: only at the end)"),
            "max_steps": (lambda v: v == -1 or v >= 1, "-1 (use num_train_epochs) or an int >= 1"),
            "num_train_epochs": (lambda v: v > 0, "a number > 0"),
            "gradient_accumulation_steps": (lambda v: v >= 1, "an int >= 1"),
            "per_device_train_batch_size": (lambda v: v >= 1, "an int >= 1"),
            "per_device_eval_batch_size": (lambda v: v >= 1, "an int >= 1"),
            "max_length": (lambda v: v >= 2, "an int >= 2"),
        }
        for key, (ok, expected) in checks.items():
            value = getattr(self, key, None)
            if value is not None and not isinstance(value, bool) and not ok(value):
                raise ConfigError(f"{key}: expected {expected}, got {value!r}")
        resume = getattr(self, "resume", None)
        if resume is not None and (not isinstance(resume, str) or not resume):
            raise ConfigError(f"resume: expected 'auto', 'never' or a checkpoint folder, got {resume!r}")

    @property
    def run_dir(self) -> Path:
        """The folder this stage writes everything into."""
        if self.output_dir:
            return Path(self.output_dir)
        return Path(self.output_root) / self.run_name / self.stage

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (what `save_config` writes)."""
        return dataclasses.asdict(self)


def require(condition: bool, key: str, expected: str, value: Any) -> None:
    """Raise a `ConfigError` naming `key` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


# ---------------------------------------------------------------------------------------------
# Type conversion


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    inner, optional = _strip_optional(tp)
    if typing.get_origin(inner) is Literal:
        name = "one of " + ", ".join(repr(a) for a in typing.get_args(inner))
    elif typing.get_origin(inner) in (list, tuple):
        (item,) = typing.get_args(inner)[:1] or (Any,)
        name = f"a list of {getattr(item, '__name__', str(item))}"
    elif typing.get_origin(inner) is dict or inner is dict:
        name = "a mapping"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name} or null" if optional else name


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert `value` (from YAML or a command-line string) to annotated type `tp`, or raise `ConfigError`."""
    inner, optional = _strip_optional(tp)
    expected = _type_name(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none") and optional):
        if optional:
            return None
        raise ConfigError(f"{key}: expected {expected}, got null")
    origin = typing.get_origin(inner)
    try:
        if origin is Literal:
            choices = typing.get_args(inner)
            for choice in choices:
                if value == choice or (isinstance(value, str) and str(choice) == value):
                    return choice
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
        if inner is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        if inner is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ConfigError(f"{key}: expected int, got {value!r}")
            return int(value) if not isinstance(value, str) else int(value.replace("_", ""))
        if inner is float:
            if isinstance(value, bool):
                raise ConfigError(f"{key}: expected float, got {value!r}")
            return float(value)
        if inner is str:
            if isinstance(value, (dict, list)):
                raise ConfigError(f"{key}: expected str, got {value!r}")
            return str(value)
        if origin in (list, tuple):
            if isinstance(value, str):
                value = (
                    yaml.safe_load(value)
                    if value.strip().startswith("[")
                    else [v for v in value.split(",") if v]
                )
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{key}: expected {expected}, got {value!r}")
            (item_tp,) = typing.get_args(inner)[:1] or (Any,)
            items = [
                coerce(v, item_tp, f"{key}[{i}]") if item_tp is not Any else v for i, v in enumerate(value)
            ]
            return items if origin is list else tuple(items)
        if origin is dict or inner is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected {expected}, got {value!r}")
            return dict(value)
        if inner is Any:
            return value
    except (TypeError, ValueError, yaml.YAMLError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{key}: expected {expected}, got {value!r}") from None
    raise ConfigError(f"{key}: unsupported field type {tp!r}")


# ---------------------------------------------------------------------------------------------
# Parsing


def _split_cli(argv: list[str], bool_keys: set[str]) -> tuple[str | None, dict[str, str]]:
    """Turn `--config f.yaml --a 1 --b=2 --flag` into ('f.yaml', {'a': '1', 'b': '2', 'flag': 'true'})."""
    config_path = None
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: expected --key value pairs")
        key, sep, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if not sep:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is None or (nxt.startswith("--") and key in bool_keys):
                if key not in bool_keys:
                    raise ConfigError(f"--{key}: expected a value after it")
                value = "true"
            else:
                value = nxt
                i += 1
        if key == "config":
            config_path = value
        else:
            overrides[key] = value
        i += 1
    return config_path, overrides


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; expected a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {one_line(str(err))}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected YAML)") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty; expected a mapping of keys to values")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def build_config(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    """Build `cls` from a dict, rejecting unknown keys and converting each value to its field type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{source}: unknown key {key!r} for stage '{cls.stage}'{hint}. Valid keys: {', '.join(sorted(fields))}"
            )
        kwargs[key] = coerce(value, hints[key], f"{source}: {key}")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def parse_config(cls: type[C], argv: list[str] | None = None) -> C:
    """Parse `--config file.yaml` plus `--key value` overrides into a validated `cls`.

    `--help` prints every field with its type, default and help text, then exits.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(describe(cls))
        raise SystemExit(0)
    hints = typing.get_type_hints(cls)
    bool_keys = {k for k, tp in hints.items() if _strip_optional(tp)[0] is bool}
    config_path, overrides = _split_cli(argv, bool_keys)
    values = load_yaml(config_path) if config_path else {}
    if config_path:
        build_config(cls, values, str(config_path))  # the file alone first, so its own errors name the file
    values.update(overrides)
    return build_config(cls, values, str(config_path) if config_path and not overrides else "command line")


def describe(cls: type[StageConfig]) -> str:
    """Human-readable list of a config's fields (what `--help` prints)."""
    hints = typing.get_type_hints(cls)
    lines = [f"Options for stage '{cls.stage}' (YAML keys or --key value):"]
    for f in dataclasses.fields(cls):
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        )
        lines.append(f"  --{f.name} ({_type_name(hints[f.name])}, default {default!r})")
        if f.metadata.get("help"):
            lines.append(f"      {f.metadata['help']}")
    return "\n".join(lines)


def save_config(config: StageConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically, so a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    tmp.replace(path)
