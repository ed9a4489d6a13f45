"""The lifecycle library on this machine, with real detached processes: a start narrates
the daemon's own lines until /health answers and records its pidfile; a second start finds
it running; stop ends it; a daemon that dies early or a port already held fail in one
sentence and leave no pidfile behind."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import anyio
import httpx
import pytest

import daemons
from narration_core import Narrator, capture_narration

pytestmark = pytest.mark.process

NARRATE = Narrator("tester")
START_S = 30.0  # a cold interpreter on a busy 2-core machine
# A stand-in daemon: narrates, then serves /health on argv[1]; or, given "die", exits 3
# right after a last line.
FAKE = """
import http.server, json, sys
print("[fake      ] startup        : Fake starting on port " + sys.argv[1], flush=True)
if sys.argv[2:] == ["die"]:
    print("[fake      ] broken         : Cannot go on", flush=True)
    sys.exit(3)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ok", "version": "test"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
print("[fake      ] ready          : Fake serving", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fake_daemon(folder: Path, port: int, *extra: str) -> daemons.Daemon:
    argv = [sys.executable, "-c", FAKE, str(port), *extra]
    return daemons.Daemon(
        "fake", "fake", argv, f"http://127.0.0.1:{port}", folder / "logs" / "fake.log"
    )


@pytest.mark.anyio
async def test_start_narrates_records_finds_and_stops(tmp_path: Path) -> None:
    """ensure_running relays the daemon's own lines (its actor, origin `pid N`), returns
    once /health answers, and records the pidfile; a second call says it is already
    running; stop ends the process and removes the pidfile, and says so."""
    host = daemons.LocalHost(tmp_path / "run")
    daemon = fake_daemon(tmp_path, free_port())
    with capture_narration() as seen:
        first = await daemons.ensure_running(
            host, daemon, label="fake", timeout_s=START_S, narrate=NARRATE, start_hint="x"
        )
    assert first.started
    fake_lines = [(e.action, e.origin) for e in seen.events if e.actor == "fake"]
    assert ("startup", f"pid {first.record.pid}") in fake_lines
    assert ("ready", f"pid {first.record.pid}") in fake_lines
    assert seen.events[0].actor == "tester" and seen.events[0].action == "spawn"
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{daemon.url}/health")).status_code == 200
    assert host.pidfile("fake").read() == first.record

    with capture_narration() as again_seen:
        again = await daemons.ensure_running(
            host, daemon, label="fake", timeout_s=START_S, narrate=NARRATE, start_hint="x"
        )
    assert not again.started and again.record.pid == first.record.pid
    assert again_seen.actions() == ["already_running"]

    with capture_narration() as stop_seen:
        result = await daemons.stop(host, "fake", label="fake", narrate=NARRATE)
    assert result is not None and not result.killed
    assert stop_seen.actions() == ["stop", "stopped"]
    assert await daemons.status(host, "fake") is None
    assert host.pidfile("fake").read() is None
    async with httpx.AsyncClient(timeout=10) as http:
        with pytest.raises(httpx.TransportError):
            await http.get(f"{daemon.url}/health")


@pytest.mark.anyio
async def test_a_daemon_that_dies_before_ready_fails_with_its_last_lines(tmp_path: Path) -> None:
    """A daemon exiting before /health answers: StartFailed naming its exit code and log,
    its last line relayed first, and no pidfile left."""
    host = daemons.LocalHost(tmp_path / "run")
    daemon = fake_daemon(tmp_path, free_port(), "die")
    with capture_narration() as seen, pytest.raises(daemons.StartFailed) as failed:
        await daemons.start_detached(host, daemon, START_S, narrate=NARRATE)
    assert "exited with code 3 before it was ready" in str(failed.value)
    assert str(daemon.log_path) in str(failed.value)
    assert "Cannot go on" in seen.humans()
    assert host.pidfile("fake").read() is None


@pytest.mark.anyio
async def test_a_port_held_by_another_program_is_refused_before_any_start(
    tmp_path: Path,
) -> None:
    """A port another program listens on: PortTaken says so with the start command and
    a free port, and nothing was spawned (no log, no pidfile)."""
    host = daemons.LocalHost(tmp_path / "run")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        daemon = fake_daemon(tmp_path, port)
        with pytest.raises(daemons.PortTaken) as taken:
            await daemons.ensure_running(
                host,
                daemon,
                label="fake",
                timeout_s=START_S,
                narrate=NARRATE,
                start_hint="fake start",
                bind="127.0.0.1",
                state_dir=tmp_path / "state",
            )
    assert f"port {port} on 127.0.0.1 is taken" in str(taken.value)
    assert "`fake start --port " in str(taken.value)
    assert not daemon.log_path.exists() and host.pidfile("fake").read() is None


@pytest.mark.anyio
async def test_two_starters_take_turns_on_the_start_lock(tmp_path: Path) -> None:
    """hold_start_lock waits while another holds the lock (saying so once, the event loop
    still running), and enters as soon as the holder leaves."""
    run = tmp_path / "run"
    said: list[str] = []
    order: list[str] = []
    entered, release, waiting = anyio.Event(), anyio.Event(), anyio.Event()

    def second_waits() -> None:
        said.append("wait")
        waiting.set()

    async def first() -> None:
        async with daemons.hold_start_lock(run, "fake", on_wait=lambda: said.append("first")):
            entered.set()
            await release.wait()
            order.append("first out")

    async def second() -> None:
        await entered.wait()
        async with daemons.hold_start_lock(run, "fake", on_wait=second_waits):
            order.append("second in")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            tg.start_soon(second)
            await waiting.wait()
            assert said == ["wait"] and order == []  # the second waits, and this loop still runs
            release.set()
    assert order == ["first out", "second in"]
