"""Every `make` target the README names does what it says, as far as a dry run can tell."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _dry_run(target: str) -> list[str]:
    """The shell lines `make -n TARGET` would run (the venv install steps included)."""
    result = subprocess.run(
        ["make", "-n", target], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_readme_names_only_targets_the_makefile_has() -> None:
    """Each `make X` in the README is a target `make -n X` accepts."""
    targets = set(re.findall(r"\bmake (\w+)", README))
    assert {"demo", "test", "bench"} <= targets
    for target in targets:
        _dry_run(target)


def test_make_demo_runs_keeper_commands_that_exist() -> None:
    """`make demo` only runs keeper subcommands the CLI accepts (checked with --help)."""
    keeper_lines = [line for line in _dry_run("demo") if "/keeper " in line]
    assert keeper_lines, "make demo runs no keeper command"
    for line in keeper_lines:
        args = shlex.split(line)[1:]
        helped = subprocess.run(
            [sys.executable, "-m", "keeper", *args, "--help"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert helped.returncode == 0, f"{line}: {helped.stderr}"


def test_make_test_runs_the_checks_ci_runs() -> None:
    """`make test` checks the lock against pyproject.toml, then runs lint, format check, mypy
    and pytest."""
    lines = "\n".join(_dry_run("test"))
    for tool in ("uv lock --check", "ruff check", "ruff format --check", "mypy", "pytest"):
        assert tool in lines


def test_make_bench_globs_only_runnable_benches() -> None:
    """`make bench` runs bench/bench_*.py with --quick, and that glob holds only benches."""
    (loop,) = [line for line in _dry_run("bench") if "bench/bench_*.py" in line]
    assert "--quick" in loop
    scripts = sorted((ROOT / "bench").glob("bench_*.py"))
    assert scripts
    for script in scripts:
        source = script.read_text()
        assert 'if __name__ == "__main__":' in source, f"{script.name} is a helper, not a bench"


@pytest.mark.parametrize(
    "script", sorted(p.name for p in (ROOT / "bench").glob("bench_*.py")), ids=str
)
def test_every_bench_accepts_quick(script: str) -> None:
    """Each bench parses --quick (its --help lists it and exits 0 without running)."""
    helped = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert helped.returncode == 0, helped.stderr
    assert "--quick" in helped.stdout
