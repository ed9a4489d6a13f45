"""Guards on the package structure: imports flow down, layers meet at public faces, and
public names are curated."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

import narration_core

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("narration_core", "jobs", "daemons", "queen", "hive", "worker", "keeper")
PROGRAMS = ("queen", "hive", "worker", "keeper")
# What each package may import from the project: libraries at the bottom, programs on
# top, keeper a client of the programs (it talks HTTP, never imports them).
ALLOWED = {
    "narration_core": set(),
    "jobs": {"narration_core"},
    # The daemon-lifecycle library, shared by the two programs that start daemons.
    "daemons": {"narration_core", "jobs"},
    "queen": {"narration_core", "jobs", "daemons"},
    "hive": {"narration_core", "jobs"},
    "worker": {"narration_core", "jobs"},
    "keeper": {"narration_core", "jobs", "daemons"},
}
# The layers of jobs and what each may import of jobs: the vocabulary (`jobs` itself) at
# the bottom, the client and the server shell side by side on it, the relay on top of both.
JOBS_LAYERS = {
    "jobs": {"jobs"},
    "jobs.client": {"jobs", "jobs.client"},
    "jobs.server": {"jobs", "jobs.server"},
    "jobs.relay": {"jobs", "jobs.client", "jobs.server", "jobs.relay"},
}
# All the keeper (and the lifecycle library) may import of jobs: the vocabulary and the
# client, by their public faces.
KEEPER_JOBS = {"jobs", "jobs.client"}
FACES = ("jobs", "jobs.client", "jobs.server")
# Never loaded by `import jobs`: the keeper's --help and `keeper run` import the vocabulary.
NOT_FOR_THE_VOCABULARY = ("pydantic", "httpx", "anyio", "starlette", "uvicorn", "argparse")
# Never loaded by `import daemons`: `keeper queen stop` reads pidfiles through it.
NOT_FOR_THE_LIFECYCLE = ("pydantic", "httpx", "anyio", "asyncssh", "starlette", "uvicorn")


@dataclass(frozen=True, slots=True)
class Import:
    """One import of a project module: the file and line it stands on, the module it names."""

    path: Path
    line: int
    module: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.module}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    """True when the dotted `name` is a module or package of the tree."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _project_imports(path: Path) -> list[Import]:
    """Every import of a project module in `path`, function-level and TYPE_CHECKING ones
    included. `from X import y` names `X.y` when that is a module, else `X`."""
    found: list[Import] = []
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *filter(None, [base])])
            names = [
                f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base
                for alias in node.names
            ]
        else:
            continue
        found.extend(
            Import(path, node.lineno, name) for name in names if name.split(".")[0] in PACKAGES
        )
    return found


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _layer(module: str) -> str:
    """The jobs layer a module of jobs belongs to (`jobs._events` -> `jobs`)."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("client", "server", "relay"):
        return ".".join(parts[:2])
    return "jobs"


def _is_private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split("."))


def _jobs_imports(package: str) -> list[Import]:
    return [
        found
        for path in _files(package)
        for found in _project_imports(path)
        if found.module.split(".")[0] == "jobs"
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_only_flow_down(package: str) -> None:
    """No package imports a sibling program or anything above it in the layering."""
    violations = [
        str(found)
        for path in _files(package)
        for found in _project_imports(path)
        if (name := found.module.split(".")[0]) != package and name not in ALLOWED[package]
    ]
    assert violations == []


def test_keeper_imports_only_the_vocabulary_and_the_client() -> None:
    """Every keeper module imports of jobs only `jobs` and `jobs.client`: never the server
    shell, the relay or a private module."""
    violations = [
        str(found) for found in _jobs_imports("keeper") if found.module not in KEEPER_JOBS
    ]
    assert violations == []


def test_programs_import_jobs_only_by_its_public_faces() -> None:
    """No program imports a `_private` module of jobs: what they use is on a public face."""
    violations = [
        str(found)
        for program in PROGRAMS
        for found in _jobs_imports(program)
        if _is_private(found.module)
    ]
    assert violations == []


def test_jobs_layers_import_only_the_layers_below() -> None:
    """The vocabulary imports only itself; the client and the server shell import the
    vocabulary and themselves (never each other, never the relay); the relay may use all."""
    violations = [
        str(found)
        for found in _jobs_imports("jobs")
        if _layer(found.module) not in JOBS_LAYERS[_layer(_module_name(found.path))]
    ]
    assert violations == []


def test_jobs_layers_meet_only_at_public_faces() -> None:
    """A module of jobs imports `_private` modules of its own layer only; another layer's
    names come through that layer's face (`from jobs import LogEntry`)."""
    violations = [
        str(found)
        for found in _jobs_imports("jobs")
        if _is_private(found.module) and _layer(found.module) != _layer(_module_name(found.path))
    ]
    assert violations == []


def test_vocabulary_lazy_names_stay_in_the_vocabulary() -> None:
    """The names `jobs` loads on first use come from its own private modules."""
    jobs = importlib.import_module("jobs")
    assert {_layer(module) for module in jobs._LAZY.values()} == {"jobs"}


def test_narration_core_all_matches_its_public_names() -> None:
    """`__all__` lists exactly the public names narration_core exposes."""
    public = {name for name in vars(narration_core) if not name.startswith("_")}
    modules = {
        name for name, value in vars(narration_core).items() if type(value) is type(narration_core)
    }
    assert set(narration_core.__all__) == (public - modules) | set(narration_core._LAZY)
    for name in narration_core.__all__:
        assert getattr(narration_core, name) is not None


@pytest.mark.parametrize("face", [*FACES, "daemons"])
def test_library_faces_all_match_their_public_names(face: str) -> None:
    """`__all__` of `jobs`, `jobs.client`, `jobs.server` and `daemons` lists exactly the
    public names each exposes (lazy ones included), once each, and every one resolves."""
    module = importlib.import_module(face)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert len(module.__all__) == len(set(module.__all__))
    assert set(module.__all__) == public | set(getattr(module, "_LAZY", {}))
    for name in module.__all__:
        assert getattr(module, name) is not None


def test_importing_the_vocabulary_loads_no_models_or_http() -> None:
    """`import jobs` loads neither pydantic nor an HTTP, server or async library: the keeper
    pays for those only in the commands that use them."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, jobs; print(*sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    loaded = {name.split(".")[0] for name in done.stdout.split()}
    assert sorted(loaded.intersection(NOT_FOR_THE_VOCABULARY)) == []


def test_lifecycle_library_imports_only_the_vocabulary_and_the_client() -> None:
    """`daemons` imports of jobs only `jobs` and `jobs.client` (the health probe), by their
    faces: it sits below the programs, beside nothing of the servers."""
    violations = [
        str(found) for found in _jobs_imports("daemons") if found.module not in KEEPER_JOBS
    ]
    assert violations == []


def test_programs_import_the_lifecycle_library_only_by_its_face() -> None:
    """The keeper and the queen use `daemons` through `daemons/__init__.py`, never a
    `_private` module of it."""
    violations = [
        str(found)
        for program in PROGRAMS
        for path in _files(program)
        for found in _project_imports(path)
        if found.module.split(".")[0] == "daemons" and _is_private(found.module)
    ]
    assert violations == []


def test_importing_the_lifecycle_library_loads_no_event_loop_or_http() -> None:
    """`import daemons` stays cheap: anyio, httpx and asyncssh load only in the calls that
    use them, so `keeper queen stop` (pidfiles, a signal) starts no event loop."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, daemons; print(*sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    loaded = {name.split(".")[0] for name in done.stdout.split()}
    assert sorted(loaded.intersection(NOT_FOR_THE_LIFECYCLE)) == []
