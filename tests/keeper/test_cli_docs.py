"""docs/cli.md is the CLI reference: it must match the command tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_is_current(tmp_path: Path) -> None:
    """Regenerating docs/cli.md from the Typer app gives the committed file (`make docs`)."""
    out = tmp_path / "cli.md"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "typer",
            "keeper.cli",
            "utils",
            "docs",
            "--name",
            "keeper",
            "--output",
            str(out),
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    expected = out.read_text() + (ROOT / "docs" / "cli-notes.md").read_text()
    assert (ROOT / "docs" / "cli.md").read_text() == expected, "run `make docs`"
