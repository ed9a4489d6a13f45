"""`keeper queen start|status|stop|logs` against a real queen-rbee process."""

from __future__ import annotations

import json
import socket

import psutil
import pytest

from narration_core import parse_line


def _queen_processes(home) -> list[psutil.Process]:
    """queen-rbee processes started for this test's RBEE_HOME."""
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = proc.info["cmdline"] or []
            environ = proc.info["environ"] or {}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "queen" in cmdline and environ.get("RBEE_HOME") == str(home):
            found.append(proc)
    return found


def test_start_status_jobs_stop_three_times(keeper, rbee_home, free_tcp_port: int) -> None:
    """start → status running → jobs list → stop leaves no queen process, three times over."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    for round_ in range(3):
        started = keeper("--queen-url", url, "queen", "start", "--port", str(free_tcp_port))
        assert started.returncode == 0, started.stderr
        status = keeper("--json", "--queen-url", url, "queen", "status")
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        assert info["running"] and info["healthy"] and info["url"] == url
        assert psutil.pid_exists(info["pid"])
        listed = keeper("--queen-url", url, "jobs", "list")
        assert listed.returncode == 0, listed.stderr
        stopped = keeper("--queen-url", url, "queen", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "Queen stopped" in stopped.stdout, f"round {round_}: {stopped.stdout}"
        assert (
            not psutil.pid_exists(info["pid"])
            or psutil.Process(info["pid"]).status() == psutil.STATUS_ZOMBIE
        )
        assert _queen_processes(rbee_home) == []
        after = keeper("--queen-url", url, "queen", "status")
        assert after.returncode == 3
        assert "not running" in after.stdout


def test_startup_narration_reaches_keeper_output(keeper, free_tcp_port: int) -> None:
    """The queen's own startup narration appears in keeper's plain output, in the format."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    started = keeper("--queen-url", url, "queen", "start", "--port", str(free_tcp_port))
    try:
        assert started.returncode == 0, started.stderr
        events = [e for e in map(parse_line, started.stdout.splitlines()) if e is not None]
        queen_actions = [e.action for e in events if e.actor == "queen-rbee"]
        assert {"start", "listen", "ready"} <= set(queen_actions), started.stdout
        assert [e.action for e in events if e.actor == "keeper"][-1] == "ready"
    finally:
        keeper("queen", "stop")


def test_second_start_says_already_running(keeper, free_tcp_port: int) -> None:
    """Starting a running queen says so and exits 0 without a second process."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    args = ("--queen-url", url, "queen", "start", "--port", str(free_tcp_port))
    assert keeper(*args).returncode == 0
    try:
        again = keeper(*args)
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
    finally:
        keeper("queen", "stop")


def test_port_taken_by_another_program_exits_3(keeper, free_tcp_port: int) -> None:
    """A port held by something that is not a queen gives one sentence and exit 3."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", free_tcp_port))
        squatter.listen()
        result = keeper("queen", "start", "--port", str(free_tcp_port), timeout=30)
    assert result.returncode == 3
    assert f"port {free_tcp_port}" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_stale_pidfile_is_cleaned_up(keeper, rbee_home, free_tcp_port: int) -> None:
    """A pidfile naming a dead process is removed on start, and the queen starts."""
    run = rbee_home / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "queen.pid").write_text(
        json.dumps(
            {
                "name": "queen",
                "pid": 999_999,
                "create_time": 1.0,
                "url": "http://127.0.0.1:1",
                "log": "x",
                "argv": [],
            }
        )
    )
    url = f"http://127.0.0.1:{free_tcp_port}"
    started = keeper("--queen-url", url, "queen", "start", "--port", str(free_tcp_port))
    try:
        assert started.returncode == 0, started.stderr
        assert "stale pidfile" in started.stdout
        record = json.loads((run / "queen.pid").read_text())
        assert record["pid"] != 999_999 and psutil.pid_exists(record["pid"])
    finally:
        keeper("queen", "stop")


def test_queen_that_dies_at_startup_is_reported(keeper, rbee_home, free_tcp_port: int) -> None:
    """A queen that cannot start: its last lines are shown and keeper exits 1 in one sentence."""
    from jobs.server import lock_state_folder

    with lock_state_folder(rbee_home / "state"):  # as if another queen served this folder
        result = keeper("queen", "start", "--port", str(free_tcp_port))
    assert result.returncode == 1
    assert "exited with code 2 before it was ready" in result.stderr
    assert "already uses the state folder" in result.stdout  # the queen's own reason, relayed
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("bind", ["0.0.0.0", "203.0.113.9"])
def test_unsafe_or_foreign_bind_is_a_usage_error(keeper, free_tcp_port: int, bind: str) -> None:
    """Binding beyond loopback without a token, or to a foreign address, exits 2 in a sentence."""
    args = ["queen", "start", "--port", str(free_tcp_port), "--bind", bind]
    if bind != "0.0.0.0":
        args += ["--token", "t0k"]
    result = keeper(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert ("needs a token" if bind == "0.0.0.0" else "--bind") in result.stderr


def test_logs_show_the_queen_log(keeper, free_tcp_port: int) -> None:
    """`keeper queen logs` prints the daemon's log lines, narration included."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    assert (
        keeper("--queen-url", url, "queen", "start", "--port", str(free_tcp_port)).returncode == 0
    )
    try:
        logs = keeper("queen", "logs", "-n", "200")
        assert logs.returncode == 0, logs.stderr
        assert any(
            (e := parse_line(line)) and e.actor == "queen-rbee" for line in logs.stdout.splitlines()
        )
    finally:
        keeper("queen", "stop")


WATCH = {"operation": "queen_status", "watch": True, "interval_s": 0.02}  # runs until stopped


def test_stop_keeps_jobs_and_logs_whole(keeper, rbee_home, free_tcp_port: int) -> None:
    """After `keeper queen stop` (which ends the queen without interpreter teardown), a
    restarted queen serves a finished job and the job the stop cancelled, each with its
    whole log, and the queen's own log ends with its `stopped` line."""
    from contextlib import closing

    from jobs.client import SyncJobClient

    url = f"http://127.0.0.1:{free_tcp_port}"
    start = ("--queen-url", url, "queen", "start", "--port", str(free_tcp_port))
    assert keeper(*start).returncode == 0
    try:
        with SyncJobClient(url) as client:
            done_id = client.submit({"operation": "queen_status"})
            done = list(client.stream(done_id))
            watch_id = client.submit(WATCH)
            seen = []
            with closing(client.stream(watch_id)) as events:
                for event in events:
                    seen.append(event)
                    if sum(e.kind == "narration" for e in seen) >= 3:
                        break
        stopped = keeper("--queen-url", url, "queen", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert "Queen stopped" in stopped.stdout
        last = parse_line((rbee_home / "logs" / "queen.log").read_text().splitlines()[-1])
        assert last is not None and (last.actor, last.action) == ("queen-rbee", "stopped")

        assert keeper(*start).returncode == 0
        with SyncJobClient(url) as client:
            assert client.get_job(done_id)["state"] == "completed"
            assert list(client.stream(done_id)) == done
            record = client.get_job(watch_id)
            replay = list(client.stream(watch_id))
    finally:
        keeper("queen", "stop")
    assert done[-1].state == "completed"
    assert record["state"] == "cancelled", record  # not `failed`: no crash recovery
    assert replay[: len(seen)] == seen
    assert [e.seq for e in replay] == list(range(1, len(replay) + 1))
    assert replay[-1].state == "cancelled"


def _imports(keeper, *args: str) -> set[str]:
    """The modules `keeper ARGS` imported (from `python -X importtime`), after checking it
    exited 0."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "keeper", *args],
        env=keeper.env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }


def test_stop_loads_no_event_loop_or_http_client(keeper, free_tcp_port: int) -> None:
    """`keeper queen stop` stops a running queen, and says when none runs, without loading
    asyncio, an HTTP client or Rich: start-up is most of what it costs."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    start = ("--queen-url", url, "queen", "start", "--port", str(free_tcp_port))
    assert keeper(*start).returncode == 0
    try:
        running = _imports(keeper, "--queen-url", url, "queen", "stop")
    finally:
        keeper("queen", "stop")
    assert keeper("--queen-url", url, "queen", "status").returncode == 3  # it did stop
    idle = _imports(keeper, "--queen-url", url, "queen", "stop")
    for loaded in (running, idle):
        assert "keeper.stopping" in loaded  # the command did run
        assert sorted(loaded & {"asyncio", "httpx", "httpcore", "rich", "uvicorn"}) == []


def test_stop_when_not_running_says_so(keeper) -> None:
    """Stopping a queen that is not running is not an error."""
    result = keeper("queen", "stop")
    assert result.returncode == 0
    assert "not running" in result.stdout


def test_foreground_streams_until_ctrl_c_then_stops_the_queen(
    keeper, rbee_home, free_tcp_port: int
) -> None:
    """`queen start --foreground` shows the queen live; Ctrl-C stops it and exits 130."""
    import signal
    import subprocess
    import sys

    url = f"http://127.0.0.1:{free_tcp_port}"
    argv = [sys.executable, "-m", "keeper", "--queen-url", url, "queen", "start"]
    argv += ["--port", str(free_tcp_port), "--foreground"]
    with subprocess.Popen(
        argv,
        env=keeper.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as fg:
        assert fg.stdout is not None
        seen = []
        for line in fg.stdout:  # ends at EOF if keeper dies: the assert below then fails
            event = parse_line(line)
            seen.append(line)
            if event is not None and event.actor == "keeper" and event.action == "ready":
                break
        assert any("[queen-rbee] listen" in line for line in seen), seen
        status = keeper("--json", "--queen-url", url, "queen", "status")
        assert json.loads(status.stdout)["running"]
        fg.send_signal(signal.SIGINT)
        assert fg.wait(timeout=30) == 130
        rest = fg.stdout.read()
    assert "[queen-rbee] stopped" in rest  # the queen's own shutdown narration, relayed
    assert _queen_processes(rbee_home) == []
    assert keeper("queen", "status").returncode == 3


def test_logs_follow_prints_new_lines_until_ctrl_c(keeper, free_tcp_port: int) -> None:
    """`queen logs -f` keeps printing what the queen appends; Ctrl-C ends it with 130."""
    import queue
    import signal
    import subprocess
    import sys
    import threading
    import time

    url = f"http://127.0.0.1:{free_tcp_port}"
    assert (
        keeper("--queen-url", url, "queen", "start", "--port", str(free_tcp_port)).returncode == 0
    )
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "keeper", "queen", "logs", "-f", "-n", "0"],
            env=keeper.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        ) as follower:
            assert follower.stdout is not None
            lines: queue.Queue[str] = queue.Queue()
            reader = threading.Thread(target=lambda: [lines.put(x) for x in follower.stdout])
            reader.start()
            # A hive_list job makes the queen narrate into its log while we follow it.
            # The follower may not be tailing yet (-n 0 skips what is there), so narrate
            # again until it shows a hive_list line, under a deadline.
            deadline = time.monotonic() + 30
            seen = False
            while not seen and time.monotonic() < deadline:
                assert keeper("--queen-url", url, "hive", "list").returncode == 0
                try:
                    while not seen:
                        event = parse_line(lines.get(timeout=2))
                        seen = event is not None and event.action == "hive_list"
                except queue.Empty:
                    continue
            if not seen:
                follower.kill()  # or leaving the `with` would wait on it for ever
                raise AssertionError("logs -f did not show a new hive_list line within 30 s")
            follower.send_signal(signal.SIGINT)
            assert follower.wait(timeout=30) == 130
    finally:
        keeper("queen", "stop")


def test_each_start_gets_a_fresh_log_and_json_logs_are_events(
    keeper, rbee_home, free_tcp_port: int
) -> None:
    """A restart keeps the previous log as queen.log.1; `--json queen logs` prints events."""
    url = f"http://127.0.0.1:{free_tcp_port}"
    for _ in range(2):
        assert (
            keeper("--queen-url", url, "queen", "start", "--port", str(free_tcp_port)).returncode
            == 0
        )
        assert keeper("queen", "stop").returncode == 0
    log = (rbee_home / "logs" / "queen.log").read_text()
    assert log.count("[queen-rbee] start") == 1
    assert (rbee_home / "logs" / "queen.log.1").exists()
    logs = keeper("--json", "queen", "logs", "-n", "100")
    assert logs.returncode == 0, logs.stderr
    events = [json.loads(line) for line in logs.stdout.splitlines()]
    assert {"event": "narration", "actor": "queen-rbee", "action": "start"}.items() <= events[
        0
    ].items()


def _start(keeper, port: int, *extra: str):
    """`keeper queen start --port PORT` without --queen-url, as a user types it."""
    return keeper("queen", "start", "--port", str(port), *extra)


def test_concurrent_starts_leave_one_queen_that_stop_stops(
    keeper, rbee_home, free_tcp_port: int
) -> None:
    """Four keepers starting one RBEE_HOME's queen at once leave exactly one queen; the
    pidfile names it, its log holds one start, and `queen stop` stops it."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "keeper", "queen", "start", "--port", str(free_tcp_port)]
    starters = [
        subprocess.Popen(
            argv, env=keeper.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    try:
        results = [(p.wait(timeout=120), *p.communicate()) for p in starters]
        assert [code for code, _, _ in results] == [0, 0, 0, 0], results
        assert sum("already running" in out for _, out, _ in results) == 3, results
        (queen,) = _queen_processes(rbee_home)
        record = json.loads((rbee_home / "run" / "queen.pid").read_text())
        assert record["pid"] == queen.pid
        log = (rbee_home / "logs" / "queen.log").read_text()
        assert log.count("[queen-rbee] start") == 1, log
    finally:
        stopped = keeper("queen", "stop")
    assert stopped.returncode == 0 and "Queen stopped" in stopped.stdout, stopped.stdout
    assert _queen_processes(rbee_home) == []


def test_restart_on_the_same_port_after_a_keepalive_client(keeper, free_tcp_port: int) -> None:
    """Stop then start on one port works at once, though a keep-alive client left the
    port in TIME_WAIT (the check binds as the server does, with SO_REUSEADDR)."""
    import httpx

    assert _start(keeper, free_tcp_port).returncode == 0
    try:
        with httpx.Client(trust_env=False) as client:  # holds its connection open
            assert client.get(f"http://127.0.0.1:{free_tcp_port}/health").status_code == 200
            assert keeper("queen", "stop").returncode == 0
        again = _start(keeper, free_tcp_port)
        assert again.returncode == 0, again.stderr
    finally:
        keeper("queen", "stop")


def test_pidfile_lock_and_log_are_private(keeper, rbee_home, free_tcp_port: int) -> None:
    """The queen's pidfile, start lock and log are created 0600 (only their owner reads them)."""
    import stat

    assert _start(keeper, free_tcp_port).returncode == 0
    try:
        for path in ("run/queen.pid", "run/queen.lock", "logs/queen.log"):
            mode = stat.S_IMODE((rbee_home / path).stat().st_mode)
            assert mode == 0o600, f"{path}: {oct(mode)}"
    finally:
        keeper("queen", "stop")


def test_every_command_finds_the_queen_started_on_another_port(keeper, free_tcp_port: int) -> None:
    """After `queen start --port P`, `keeper status` and `jobs list` talk to that queen
    (the pidfile records its URL); an explicit --queen-url still wins."""
    assert _start(keeper, free_tcp_port).returncode == 0
    try:
        overview = keeper("status")
        assert overview.returncode == 0, overview.stderr
        assert keeper("jobs", "list").returncode == 0
        elsewhere = keeper("--queen-url", "http://127.0.0.1:9", "jobs", "list")
        assert elsewhere.returncode == 3 and "127.0.0.1:9" in elsewhere.stderr
    finally:
        keeper("queen", "stop")


def test_start_on_another_port_while_running_is_refused(
    keeper, rbee_home, free_tcp_port_factory
) -> None:
    """`queen start --port Q` while this home's queen runs on P says where it runs and
    exits 1, starting nothing; without --port it just reports the running queen."""
    first, second = free_tcp_port_factory(), free_tcp_port_factory()
    assert _start(keeper, first).returncode == 0
    try:
        moved = _start(keeper, second)
        assert moved.returncode == 1
        assert f"127.0.0.1:{first}" in moved.stderr and f"port {second}" in moved.stderr
        assert len(_queen_processes(rbee_home)) == 1
        plain = keeper("queen", "start")
        assert plain.returncode == 0 and "already running" in plain.stdout
    finally:
        keeper("queen", "stop")


def test_a_queen_of_another_home_is_named_not_stopped(keeper, tmp_path, free_tcp_port: int) -> None:
    """`queen status`/`stop` against another RBEE_HOME's queen say whose it is and how to
    stop it (exit 3), and leave it running."""
    other = type(keeper)(tmp_path / "other-home")  # a second user's keeper, its own home
    assert _start(other, free_tcp_port).returncode == 0
    try:
        url = f"http://127.0.0.1:{free_tcp_port}"
        for command in ("status", "stop"):
            result = keeper("--queen-url", url, "queen", command)
            assert result.returncode == 3, result
            assert str(tmp_path / "other-home" / "state") in result.stderr
            assert f"RBEE_HOME={tmp_path / 'other-home'} keeper queen stop" in result.stderr
        assert other("queen", "status").returncode == 0
        taken = _start(keeper, free_tcp_port)
        assert taken.returncode == 3 and "another RBEE_HOME" in taken.stderr
    finally:
        other("queen", "stop")


UNHEALTHY_SERVER = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "unavailable", "error": "the disk is full"}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_status_exits_1_when_health_answers_503(keeper, rbee_home, free_tcp_port: int) -> None:
    """A queen that runs but answers /health 503 makes `queen status` say why and exit 1."""
    import subprocess
    import sys
    import time

    server = subprocess.Popen(
        [sys.executable, "-c", UNHEALTHY_SERVER, str(free_tcp_port)], stderr=subprocess.DEVNULL
    )

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", free_tcp_port)) == 0

    try:
        deadline = time.monotonic() + 30
        while not listening():
            assert time.monotonic() < deadline, "the stand-in server never listened"
            time.sleep(0.02)
        (rbee_home / "run").mkdir(parents=True, exist_ok=True)
        record = {
            "name": "queen",
            "pid": server.pid,
            "create_time": psutil.Process(server.pid).create_time(),
            "url": f"http://127.0.0.1:{free_tcp_port}",
            "log": "x",
            "argv": [],
        }
        (rbee_home / "run" / "queen.pid").write_text(json.dumps(record))
        result = keeper("queen", "status")
        assert result.returncode == 1, result
        assert "503" in result.stderr and "the disk is full" in result.stderr
        info = json.loads(keeper("--json", "queen", "status").stdout)
        assert info["running"] and not info["healthy"] and "disk is full" in info["problem"]
    finally:
        server.kill()
        server.wait()


def test_whitespace_token_is_refused(keeper, free_tcp_port: int) -> None:
    """A whitespace-only RBEE_TOKEN is a usage error (exit 2) for the keeper and the queen."""
    import subprocess
    import sys

    env = {**keeper.env(), "RBEE_TOKEN": "  \t "}
    for args in (
        ["queen", "start", "--bind", "0.0.0.0", "--port", str(free_tcp_port)],
        ["jobs", "list"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "keeper", *args], env=env, capture_output=True, text=True
        )
        assert result.returncode == 2, (args, result)
        assert "only whitespace" in result.stderr
    queen = subprocess.run(
        [sys.executable, "-m", "queen", "--bind", "0.0.0.0", "--port", str(free_tcp_port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert queen.returncode != 0 and "whitespace" in queen.stderr, queen
