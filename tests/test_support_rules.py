"""Guards on how tests share code: helpers come from `tests.support`, fixtures from a
conftest.py, and no test module imports another."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tests.support

TESTS = Path(__file__).resolve().parent
TEST_MODULE = re.compile(r"^tests(\.\w+)*\.(test_\w+|conftest)$")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports, function-level and TYPE_CHECKING ones included:
    (line, dotted name); `from tests.x import test_y` counts as `tests.x.test_y`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_no_test_module_imports_another() -> None:
    """No file under tests/ imports a `tests.<dir>.test_*` module or a conftest.py (pytest
    may import a conftest twice, under two names): shared helpers live in tests/support/,
    shared fixtures in the nearest conftest.py, which pytest hands to the tests itself."""
    offences = [
        f"{path.relative_to(TESTS.parent)}:{line} imports {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, name in imports_of(path)
        if TEST_MODULE.match(name)
    ]
    assert offences == []


def test_support_imports_no_test_or_conftest_module() -> None:
    """tests/support/ builds on the project and itself only: never on a test module or a
    conftest.py (pytest may import a conftest twice, under two names)."""
    offences = [
        f"{path.relative_to(TESTS.parent)}:{line} imports {name}"
        for path in sorted((TESTS / "support").rglob("*.py"))
        for line, name in imports_of(path)
        if name.startswith("tests.") and not name.startswith("tests.support")
    ]
    assert offences == []


def test_support_all_names_each_helper_once() -> None:
    """Every name in `tests.support.__all__` exists, and none is listed twice."""
    names = tests.support.__all__
    assert [n for n in names if not hasattr(tests.support, n)] == []
    assert len(set(names)) == len(names)
