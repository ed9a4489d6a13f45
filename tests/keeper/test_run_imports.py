"""`keeper run` starts without the libraries only other commands need.

Start-up is most of what `keeper run` costs on a short command, so what it imports is
held here; how fast it runs is measured by bench/bench_run.py, not by a test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

# The list the keeper process imported, printed by the child itself at exit.
SHOW_MODULES = (
    "import atexit, sys; atexit.register(lambda: print("
    "*sorted(name for name, module in sys.modules.items() if module), file=sys.stderr)); "
    "sys.argv = ['keeper', *sys.argv[1:]]; "
    "import keeper.__main__ as m; raise SystemExit(m.main())"
)
HEAVY = (
    "rich",
    "pydantic",
    "httpx",
    "httpcore",
    "uvicorn",
    "starlette",
    "asyncssh",
    "typer",
)


def _modules(*args: str, env: dict[str, str]) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", SHOW_MODULES, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return set(done.stderr.split())


def test_plain_and_json_keeper_run_import_no_typer_rich_pydantic_or_http() -> None:
    """Plain and --json `keeper run` (the flag before or after `run`) are read without
    Typer and print through narration alone: no Typer, Rich, pydantic, HTTP client or
    server is loaded."""
    env = {**os.environ, "NO_COLOR": "1"}
    for args in (
        ("run", "--", "true"),
        ("--json", "run", "--", "true"),
        ("run", "--json", "--", "true"),
    ):
        loaded = _modules(*args, env=env)
        assert "keeper.commands.run" in loaded  # the command did run
        heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY)
        assert heavy == [], f"`keeper {' '.join(args)}` imported {heavy}"


def test_plain_one_shot_commands_start_without_typer() -> None:
    """`keeper status`, `keeper queen stop` and `keeper infer` in their plain forms, which
    scripts poll and every prompt pays, are read without Typer (keeper.run_argv) and
    still answer as the command tree does: exit 3 naming the queen that is not there, or
    "not running"."""
    env = {**os.environ, "NO_COLOR": "1"}
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for args, code, says in (
        (("--queen-url", url, "status"), 3, f"queen is not reachable at {url}"),
        (("queen", "stop"), 0, "Queen is not running"),
        (("--queen-url", url, "infer", "--no-autostart", "--model", "m", "hi"), 3, url),
    ):
        done = subprocess.run(
            [sys.executable, "-c", SHOW_MODULES, *args],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == code, done.stderr
        assert says in done.stdout + done.stderr
        loaded = set(done.stderr.split())
        assert "typer" not in loaded, f"`keeper {' '.join(args)}` imported Typer"
