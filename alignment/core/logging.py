"""What a run records: `metrics.jsonl`, TensorBoard events and a model card.

Every stage writes the same `metrics.jsonl` shape, one JSON object per line with at least `step`, so the
evaluation report can plot any stage's curves without knowing which trainer produced them.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from alignment.core.launch import is_main_process


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible rather than dropping them
    return value


class MetricsLogger:
    """Append metrics to `<run_dir>/metrics.jsonl` and TensorBoard; a no-op on non-main processes."""

    def __init__(self, run_dir: str | Path, enabled: bool | None = None, tensorboard: bool = True):
        self.enabled = is_main_process() if enabled is None else enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._writer = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Record `metrics` at `step` (numbers go to TensorBoard, everything to the JSONL file)."""
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time(), 3)}
        row.update({k: _jsonable(v) for k, v in metrics.items()})
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
        if self._writer is not None:
            for key, value in row.items():
                if (
                    key not in ("step", "time")
                    and isinstance(value, (int, float))
                    and not isinstance(value, bool)
                ):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()

    def log_text(self, step: int, tag: str, text: str) -> None:
        """Record free text (sample generations) in TensorBoard and in `samples.jsonl`."""
        if not self.enabled:
            return
        with (self.path.parent / "samples.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, "tag": tag, "text": text}) + "\n")
        if self._writer is not None:
            self._writer.add_text(tag, text, step)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All rows of a run's `metrics.jsonl` (empty if the file does not exist).

    A line that does not parse (the half-written last line of a killed run, or of a stage still writing)
    is skipped.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


class MetricsCallback(TrainerCallback):
    """Mirror a transformers/TRL Trainer's logs into our `metrics.jsonl` (TensorBoard is the Trainer's own)."""

    def __init__(self, run_dir: str | Path):
        self.logger = MetricsLogger(run_dir, tensorboard=False)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: D102 (Trainer hook)
        if logs and state.is_world_process_zero:
            self.logger.log(state.global_step, {"epoch": state.epoch, **logs})


def write_model_card(
    model_dir: str | Path, stage: str, config: dict[str, Any], metrics: dict[str, Any], notes: str = ""
) -> None:
    """Write `README.md` into a saved model folder: what made it, with which config, and how it scored."""
    model_dir = Path(model_dir)
    metric_lines = "\n".join(f"| {k} | {_format(v)} |" for k, v in metrics.items())
    card = (
        f"---\nlibrary_name: transformers\ntags: [alignment, {stage}]\n---\n\n"
        f"# {stage} model\n\nTrained by the `alignment {stage}` stage.\n\n{notes}\n\n"
        f"## Final metrics\n\n| metric | value |\n|---|---|\n{metric_lines}\n\n"
        f"## Config\n\n```yaml\n{yaml.safe_dump(config, sort_keys=False)}```\n"
    )
    (model_dir / "README.md").write_text(card)


def _format(value: Any) -> str:
    value = _jsonable(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)
