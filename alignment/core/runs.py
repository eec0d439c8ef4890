"""Run folders: the resolved config, atomic final-model folders, complete checkpoints and the resume policy.

Every stage writes into `<output_root>/<run_name>/<stage>/` and uses this module for three things:
- `save_model_folder`: the final `model/` is written under a temporary name (weights, tokenizer, model card,
  extra files), checked for non-finite weights, then renamed into place; a crash leaves the old folder or none.
- `latest_checkpoint`: the newest `checkpoints/checkpoint-<step>` that is complete and readable. A damaged one
  (truncated weights, unreadable state, missing RNG file) is reported by path and the one before it is used.
  transformers' `get_last_checkpoint` takes the newest folder whether or not its save finished, which is
  exactly the folder a Ctrl-C during saving leaves behind, so we verify instead.
- `resume_checkpoint`: `resume: auto | never | <folder>`, one meaning in every stage; `auto` refuses to mix a
  checkpoint with a changed config (only the keys a stage lists as resumable may differ).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import struct
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from alignment.core.config import StageConfig, save_config
from alignment.core.errors import CheckpointError, ConfigError

CHECKPOINTS = "checkpoints"
CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "trainer_state.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# Keys any stage may change between a run and its resumption (logging and bookkeeping only).
ALWAYS_RESUMABLE = {"resume", "progress_bar", "logging_steps", "save_steps", "save_total_limit", "debug"}


def world_size() -> int:
    """Number of processes in this launch (1 when not launched by accelerate/torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True on global rank 0; works before any process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def start_run(config: StageConfig) -> Path:
    """Create the run folder and write the resolved config into it; return the folder."""
    run_dir = config.run_dir
    if is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    return run_dir


# ---------------------------------------------------------------------------------------------
# Final model folders


def save_model_folder(
    final_dir: str | Path,
    save_weights: Callable[[Path], None],
    *,
    tokenizer: Any = None,
    card: Callable[[Path], None] | None = None,
    extra_files: dict[str, str] | None = None,
    is_main: bool = True,
    barrier: Callable[[], None] | None = None,
) -> Path:
    """Write a model folder atomically: `save_weights(tmp)` on every process, the rest on the main one, rename.

    `save_weights` may be a collective (a ZeRO-3 gather), so every process calls it; `card(tmp)` writes the
    model card. Non-finite weights are refused (`CheckpointError`) before anything replaces the old folder:
    a diverged run must never leave a NaN model where the next stage will load it.
    """
    final_dir = Path(final_dir)
    tmp_dir = final_dir.with_name(final_dir.name + ".tmp")
    if is_main:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    if barrier is not None:
        barrier()
    save_weights(tmp_dir)
    if is_main:
        try:
            bad = non_finite_tensors(tmp_dir)
            if bad:
                raise CheckpointError(
                    f"{final_dir}: not saved, the trained weights hold NaN or inf ({', '.join(bad[:3])}"
                    f"{' ...' if len(bad) > 3 else ''}); lower learning_rate or check the data"
                )
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp_dir))
            for name, text in (extra_files or {}).items():
                (tmp_dir / name).write_text(text)
            if card is not None:
                card(tmp_dir)
            replace_folder(tmp_dir, final_dir)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    if barrier is not None:
        barrier()
    return final_dir


def replace_folder(source: Path, target: Path) -> None:
    """Move `source` to `target`, replacing an existing folder with two renames (never a half-written target)."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)


def non_finite_tensors(folder: Path) -> list[str]:
    """Names of tensors holding NaN or inf in the folder's safetensors files (what `save_pretrained` writes)."""
    import torch
    from safetensors import safe_open

    bad = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                tensor = f.get_tensor(name)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    bad.append(name)
    return bad


# ---------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_dir(run_dir: str | Path) -> Path:
    """Where a run's checkpoints live."""
    return Path(run_dir) / CHECKPOINTS


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a `checkpoint-<step>` folder, or None for any other name."""
    match = _CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def checkpoint_problem(path: str | Path, processes: int | None = None) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None when it is complete and every file reads).

    Besides weights and trainer state, each of the `processes` resuming (default: this launch's) needs its
    random-number state: without it a resume would silently not be exact.
    """
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        return f"no {STATE_FILE} (its save did not finish)"
    try:
        json.loads(state_file.read_text())
    except (ValueError, UnicodeDecodeError):
        return f"{STATE_FILE} is not valid JSON"
    weights = [p for p in path.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt")]
    if not weights:
        return "no weights file in it"
    for rank in range(processes or world_size()):
        names = [f"random_states_{rank}.pkl", f"rng_state_{rank}.pth"] + (
            ["rng_state.pth"] if rank == 0 else []
        )
        if not any((path / name).is_file() for name in names):
            return f"no random-number state for process {rank} ({' or '.join(names)}), so it cannot resume exactly"
    for file in sorted(path.rglob("*")):
        if not file.is_file():
            continue
        problem = _file_problem(file)
        if problem:
            return f"{file.relative_to(path)}: {problem}"
    return None


def _file_problem(file: Path) -> str | None:
    """A cheap integrity check by file kind: safetensors header and size, torch zip CRCs, pickles load."""
    if file.suffix == ".safetensors":
        return safetensors_problem(file)
    try:
        if file.suffix in (".bin", ".pt", ".pth", ".pkl") and zipfile.is_zipfile(file):  # torch.save's format
            with zipfile.ZipFile(file) as archive:
                if archive.testzip() is not None:
                    return "corrupt"
        elif file.suffix in (".bin", ".pt", ".pth"):
            return "truncated or not a torch file"
        elif file.suffix == ".pkl":
            with file.open("rb") as f:
                pickle.load(f)  # noqa: S301 (a checkpoint this run family wrote itself)
        elif file.suffix == ".json":
            json.loads(file.read_text())
    except (
        OSError,
        ValueError,
        EOFError,
        struct.error,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        KeyError,
    ):
        return "unreadable (truncated?)"
    return None


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be read (truncated, bad header), or None; reads the header only."""
    try:
        with path.open("rb") as f:
            header_len = struct.unpack("<Q", f.read(8))[0]
            if header_len > 100_000_000:
                return "not a safetensors file (impossible header size)"
            header = json.loads(f.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, struct.error, KeyError, TypeError, AttributeError):
        return "not a readable safetensors file (truncated or corrupt header)"
    if path.stat().st_size < 8 + header_len + end:
        return f"truncated ({path.stat().st_size} bytes, its header promises {8 + header_len + end})"
    return None


def latest_checkpoint(
    run_dir: str | Path,
    log: Callable[[str], None] | None = print,
    before: int | None = None,
    damaged: list[Path] | None = None,
) -> Path | None:
    """The newest complete, readable checkpoint of a run (steps below `before` only, if given), or None.

    Damaged or unfinished checkpoints newer than it are reported through `log`, appended to `damaged`, and
    skipped.
    """
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return None
    candidates = sorted(
        (p for p in folder.iterdir() if p.is_dir() and checkpoint_step(p) is not None),
        key=lambda p: checkpoint_step(p),
        reverse=True,
    )
    for candidate in candidates:
        if before is not None and checkpoint_step(candidate) >= before:
            continue
        problem = checkpoint_problem(candidate)
        if problem is None:
            return candidate
        if log is not None:
            log(f"skipping checkpoint {candidate}: {problem}; trying the one before it")
        if damaged is not None:
            damaged.append(candidate)
    return None


def resume_checkpoint(config: Any, resumable: Iterable[str] = ()) -> Path | None:
    """The checkpoint `config.resume` asks for: None (start fresh), the newest complete one, or a folder.

    Call before `start_run` rewrites `config.yaml`: with `auto`, a checkpoint written under a different
    config is refused (naming the changed keys) unless only keys in `resumable` changed.
    """
    if config.resume == "never":
        if is_main_process():
            forget_logs_after(config.run_dir, -1)  # a fresh start must not append to an earlier run's log
        return None
    if config.resume != "auto":
        path = Path(config.resume)
        if not path.is_dir():
            raise ConfigError(
                f"resume: expected 'auto', 'never' or a checkpoint folder, got {config.resume!r}"
            )
        problem = checkpoint_problem(path)
        if problem:
            raise CheckpointError(f"resume: checkpoint {path} cannot be resumed from: {problem}")
        if (
            is_main_process()
            and checkpoint_step(path) is not None
            and path.parent == checkpoint_dir(config.run_dir)
        ):
            forget_logs_after(config.run_dir, checkpoint_step(path))
        return path
    damaged: list[Path] = []

    def report(message: str) -> None:
        print(f"[{config.stage}] {message}", flush=True)

    found = latest_checkpoint(config.run_dir, log=report, damaged=damaged)
    if found is not None:
        check_same_config(config, set(resumable) | ALWAYS_RESUMABLE)
    if is_main_process():
        # The run redoes the steps after `found`, so what a killed run left there is only in the way
        # (a trainer rotating checkpoints would count it, and might delete the good one instead).
        leftovers = list(checkpoint_dir(config.run_dir).glob(".tmp-*"))  # a save killed before its rename
        for folder in [*damaged, *leftovers]:
            shutil.rmtree(folder, ignore_errors=True)
        if found is not None:
            forget_logs_after(config.run_dir, checkpoint_step(found))
    if found is None:
        if damaged:
            report("no complete checkpoint to resume from: starting from the beginning")
        if is_main_process():
            forget_logs_after(config.run_dir, -1)
    return found


def forget_logs_after(run_dir: str | Path, step: int) -> None:
    """Drop rows a killed run logged after the checkpoint it resumes from (and a half-written last line).

    The resumed run logs those steps again, so without this `metrics.jsonl` would hold them twice; a run
    that starts from the beginning (`step` -1) keeps none of an earlier run's rows.
    """
    for name in ("metrics.jsonl", "samples.jsonl"):
        path = Path(run_dir) / name
        if not path.is_file():
            continue
        kept = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("step", 0) <= step:
                kept.append(line + "\n")
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, path)


def check_same_config(config: Any, resumable: set[str]) -> None:
    """Refuse to resume checkpoints written under a different config (compares with the run's config.yaml)."""
    saved_path = config.run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    try:
        saved = yaml.safe_load(saved_path.read_text()) or {}
    except yaml.YAMLError:
        return  # an unreadable record of the old config cannot be compared; start_run rewrites it
    current = config.to_dict()
    changed = sorted(k for k, v in current.items() if k not in resumable and k in saved and saved[k] != v)
    if changed:
        details = ", ".join(f"{k}: {saved[k]!r} -> {current[k]!r}" for k in changed[:4])
        raise ConfigError(
            f"resume: {checkpoint_dir(config.run_dir)} was written with a different config ({details}); "
            "pass --resume never to start over, or pick another run_name"
        )
