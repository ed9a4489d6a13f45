"""Guards on the package structure: imports flow down, public names are curated."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import narration_core

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("narration_core", "jobs", "queen", "hive", "worker", "keeper")
# What each package may import from the project: libraries at the bottom, programs on
# top, keeper a client of the programs (it talks HTTP, never imports them).
ALLOWED = {
    "narration_core": set(),
    "jobs": {"narration_core"},
    "queen": {"narration_core", "jobs"},
    "hive": {"narration_core", "jobs"},
    "worker": {"narration_core", "jobs"},
    "keeper": {"narration_core", "jobs"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_only_flow_down(package: str) -> None:
    """No package imports a sibling program or anything above it in the layering."""
    violations = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path) & set(PACKAGES):
            if name != package and name not in ALLOWED[package]:
                violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert violations == []


def test_narration_core_all_matches_its_public_names() -> None:
    """`__all__` lists exactly the public names narration_core exposes."""
    public = {name for name in vars(narration_core) if not name.startswith("_")}
    modules = {
        name for name, value in vars(narration_core).items() if type(value) is type(narration_core)
    }
    assert set(narration_core.__all__) == (public - modules) | set(narration_core._LAZY)
    for name in narration_core.__all__:
        assert getattr(narration_core, name) is not None
