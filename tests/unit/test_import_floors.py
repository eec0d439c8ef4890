"""The floors of CONTRIBUTING.md: imports only go down, core -> reward -> stages -> pipeline/cli -> scripts.

Every import in every module counts, including the lazy ones inside functions, because a lazy import
upward is still a dependency upward (it just fails later).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = ("prepare", "pretrain", "sft", "ppo", "evaluate", "finetune", "reason")


def floor(module: str) -> tuple[int, str]:
    """(floor number, room) of one of our modules: 0 core, 1 reward, 2 a stage (room = its name), 3 top."""
    parts = module.split(".")
    if parts[0] == "reward":
        return 1, "reward"
    if parts[0] == "scripts":
        return 4, "scripts"
    if parts[:2] == ["alignment", "core"]:
        return 0, "core"
    if len(parts) >= 2 and parts[1] in STAGES:
        return 2, parts[1]
    return 3, parts[1] if len(parts) > 1 else "alignment"  # pipeline, cli, the package itself


def our_modules() -> dict[str, Path]:
    files = [*REPO.glob("alignment/**/*.py"), *REPO.glob("reward/**/*.py"), *REPO.glob("scripts/*.py")]
    modules = {}
    for path in files:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(path: Path, module: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = (
                    module.split(".")[: -node.level] if not path.name == "__init__.py" else module.split(".")
                )
                names.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.add(node.module)
    return {name for name in names if name.split(".")[0] in ("alignment", "reward", "scripts")}


def violations(module: str, path: Path) -> list[str]:
    """Every import of `module` that goes up a floor, or sideways from one stage into another."""
    here, room = floor(module)
    found = []
    for imported in sorted(imports_of(path, module)):
        there, other_room = floor(imported)
        if there > here:
            found.append(f"{module} (floor {here}) imports {imported} (floor {there}), which is above it")
        elif here == there == 2 and room != other_room:
            found.append(f"stage module {module} imports another stage, {imported}")
    return found


def test_imports_only_go_down():
    modules = our_modules()
    assert len(modules) > 40  # the walk found the tree
    assert [v for module, path in sorted(modules.items()) for v in violations(module, path)] == []


def test_an_upward_or_sideways_import_is_caught(tmp_path):
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from alignment.ppo.train import run\n    import reward.model\n")
    assert len(violations("alignment.core.lazy", lazy)) == 2  # core may import neither a stage nor reward
    assert len(violations("reward.lazy", lazy)) == 1  # reward may not import a stage
    assert len(violations("alignment.sft.lazy", lazy)) == 1  # a stage may not import another stage
    assert violations("alignment.pipeline", lazy) == []
