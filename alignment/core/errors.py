"""The user-error types, and the one place that turns them into a one-line message and an exit code.

A user's mistake (a config key, a dataset row, a model folder, a checkpoint) raises one of the `UserError`
types below at the boundary where the input enters, with a message naming the file, row or key and what
was expected. Every command's `main` runs through `run_cli`, which prints that message as one line and
exits with code 2; Ctrl-C prints one line and exits with 130. The traceback goes to a file (named in the
message), or to the console with `--debug` (or ALIGNMENT_DEBUG=1).
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

T = TypeVar("T")
USER_ERROR_EXIT = 2
INTERRUPT_EXIT = 130
DEBUG_FLAG = "--debug"
DEBUG_ENV = "ALIGNMENT_DEBUG"


class UserError(Exception):
    """A mistake in what the user gave us; the message names the file, row or key and what was expected."""


class ConfigError(UserError, ValueError):
    """A configuration value or key is invalid."""


class DatasetFormatError(UserError, ValueError):
    """A dataset file or row does not match its format."""


class ModelLoadError(UserError, ValueError):
    """A model or tokenizer folder is missing or unusable."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint cannot be resumed from, or a model cannot be saved (non-finite weights)."""


class TrainingHalted(UserError, RuntimeError):
    """A guard stopped training (non-finite numbers, KL above its ceiling) after saving a checkpoint."""


def one_line(message: str) -> str:
    """The message on a single line (library messages sometimes span several)."""
    return " ".join(str(message).split())


def debug_requested(argv: list[str]) -> tuple[list[str], bool]:
    """Remove `--debug` from the arguments; True when it was there or ALIGNMENT_DEBUG is set."""
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    return [a for a in argv if a != DEBUG_FLAG], debug


def run_cli(command: str, body: Callable[[list[str]], T], argv: list[str] | None = None) -> T:
    """Run a command's body with the shared error path (see the module docstring)."""
    argv, debug = debug_requested(list(sys.argv[1:] if argv is None else argv))
    previous = os.environ.get(DEBUG_ENV)
    if debug:
        os.environ[DEBUG_ENV] = "1"  # child processes (the pipeline's stages) debug too
    rank = os.environ.get("RANK", "0")
    try:
        result = body(argv)
    except UserError as err:
        if debug:
            raise
        where = _save_traceback(command)
        if rank == "0":  # under `accelerate launch` every rank fails the same way: say it once
            print(f"alignment {command}: error: {one_line(err)} (traceback: {where})", file=sys.stderr)
        _exit(USER_ERROR_EXIT)
    except KeyboardInterrupt:
        if debug:
            raise
        if rank == "0":
            print(
                f"alignment {command}: interrupted; run the same command again to resume from its last "
                "complete checkpoint",
                file=sys.stderr,
            )
        _exit(INTERRUPT_EXIT)
    finally:
        if previous is None:
            os.environ.pop(DEBUG_ENV, None)
        else:
            os.environ[DEBUG_ENV] = previous
    if _launched_with_peers():
        _exit(0)
    return result


def _launched_with_peers() -> bool:
    """True in one process of a multi-process `accelerate launch` (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _exit(code: int) -> NoReturn:
    """Exit with `code`; a process of a multi-process launch skips the interpreter's teardown (see launch.py)."""
    if _launched_with_peers():
        from alignment.core.launch import exit_launched_process  # lazy: torch is loaded in such a process

        exit_launched_process(code)
    raise SystemExit(code) from None


def _save_traceback(command: str) -> str:
    """Write the current exception's traceback to a file and return its path."""
    path = Path(tempfile.gettempdir()) / f"alignment-{command}-{os.getpid()}.traceback"
    try:
        path.write_text(traceback.format_exc())
    except OSError:
        return "not saved"
    return str(path)
