"""What a keeper command loads before it answers: the start-up budget, guarded by module
names rather than by timing (see bench/bench_keeper.py for the figures).

`python -X importtime` lists every module a run imports; these tests run the real
keeper against a real queen and fail when a heavy module creeps back onto a path that
does not need it.
"""

from __future__ import annotations

import inspect

import typer

from keeper import cli
from tests.support import NOT_FOR_A_QUERY, NOT_FOR_HELP, imported_by


def test_queen_queries_load_no_event_loop_pydantic_or_live_view(keeper, free_tcp_port: int) -> None:
    """`keeper status` (tables and --json) and `keeper jobs list` against a running queen
    get their answer over httpx without importing asyncio, pydantic or the live view."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    started = keeper("--queen-url", url, "queen", "start", "--port", str(free_tcp_port))
    assert started.returncode == 0, started.stderr
    try:
        for args, shows in (
            (["status"], url),
            (["--json", "status"], '"event":"status"'),
            (["jobs", "list"], "No jobs yet"),  # looking at the status made no job
        ):
            result, modules = imported_by(keeper, "--queen-url", url, *args)
            assert result.returncode == 0, result.stderr[-2000:]
            assert shows in result.stdout  # the answer arrived: it did talk to the queen
            assert sorted(modules.intersection(NOT_FOR_A_QUERY)) == [], args
    finally:
        assert keeper("queen", "stop").returncode == 0


def test_help_loads_no_http_client_or_rich(keeper) -> None:
    """`keeper --help` shows the command tree without HTTP, Rich or anyio."""
    result, modules = imported_by(keeper, "--help")
    assert result.returncode == 0 and "status" in result.stdout
    assert "typer" in modules
    assert sorted(modules.intersection(NOT_FOR_HELP)) == []


def test_command_signatures_are_not_strings() -> None:
    """Typer reads every command's signature on every run; real annotations spare it
    evaluating hundreds of strings (a `from __future__ import annotations` in cli.py)."""
    callbacks = [cli.app.registered_callback.callback] if cli.app.registered_callback else []
    apps: list[typer.Typer] = [cli.app]
    while apps:
        app = apps.pop()
        callbacks += [command.callback for command in app.registered_commands]
        apps += [group.typer_instance for group in app.registered_groups if group.typer_instance]
    assert len(callbacks) > 20
    for callback in callbacks:
        assert callback is not None
        strings = [
            name
            for name, parameter in inspect.signature(callback).parameters.items()
            if isinstance(parameter.annotation, str)
        ]
        assert strings == [], callback.__name__
