"""`keeper run` shows no secret anywhere it draws: the live view's status line, the head of
a line that only looks like narration, or the place where an over-long line is cut."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

DEADLINE_S = 30.0  # seconds any single run may take on a slow 2-core machine
KEEPER = [sys.executable, "-m", "keeper"]
SECRET = "s3cr3t99x"  # what must never reach the screen


def run_keeper(*args: str) -> subprocess.CompletedProcess[str]:
    """`keeper ARGS...` to completion, output captured as text."""
    return subprocess.run(
        [*KEEPER, *args], capture_output=True, text=True, timeout=DEADLINE_S, check=False
    )


def run_on_terminal(*args: str) -> str:
    """Everything `keeper ARGS...` writes to a 160-column terminal until it exits."""
    import fcntl
    import pty
    import struct
    import termios

    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
    env.pop("NO_COLOR", None)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [*KEEPER, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    seen = bytearray()
    deadline = time.monotonic() + DEADLINE_S
    try:
        while (left := deadline - time.monotonic()) > 0:
            if select.select([leader], [], [], left)[0]:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the keeper closed the terminal
                    break
                if not data:
                    break
                seen += data
        assert proc.wait(timeout=DEADLINE_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    return seen.decode("utf-8", "replace")


def test_the_live_status_line_redacts_the_command() -> None:
    """The spinner line under the live view names the running command with its secrets
    redacted, as the narration lines above it do."""
    shown = run_on_terminal("run", "--", "sh", "-c", "sleep 0.6", f"token={SECRET}")
    assert "token=[REDACTED] ·" in shown  # the spinner showed the command
    assert SECRET not in shown


# Lines in the narration shape whose secret sits in the head (actor or action), or whose
# head names the secret its message holds.
HEAD_SECRETS = (
    f"[app       ] token={SECRET} : starting",
    f"[app       ] password       : {SECRET}",
    f"[x] api_key={SECRET}: msg",
    f"[ghp_{SECRET}abcdefghijklmnopqrstuvwxyz] run: hi",
)


def test_a_secret_in_a_narration_head_is_redacted_in_plain_and_json() -> None:
    """A line that looks like narration but holds its secret in the actor or action, or
    names it there, is redacted as the same text is on a plain line."""
    script = "".join(f"print({line!r})\n" for line in HEAD_SECRETS)
    plain = run_keeper("--no-color", "run", "--", sys.executable, "-c", script)
    assert plain.returncode == 0, plain.stderr
    assert SECRET not in plain.stdout + plain.stderr
    assert plain.stdout.count("[REDACTED]") == len(HEAD_SECRETS)
    assert "[app       ] password       : [REDACTED]\n" in plain.stdout
    as_json = run_keeper("--json", "run", "--", sys.executable, "-c", script)
    assert as_json.returncode == 0, as_json.stderr
    assert SECRET not in as_json.stdout + as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    heads = {(event["actor"], event["action"], event["human"]) for event in events}
    assert ("app", "password", "[REDACTED]") in heads


VALUE = "Zq7Wv3Kp9Lm2Xn8Rb5Tc"  # a secret value that only a leak would print
KEY_BODY = "".join(f"MIIE{i:04d}Qw9z" for i in range(150))  # 1,800 characters of key
# Secrets in the shapes redaction knows, as a line of over 64 KiB may hold them.
LONG_LINE_SECRETS = (
    f"ghp_{VALUE}{VALUE}",
    f"password={VALUE}",
    f"password: {VALUE}",
    f"Authorization: Bearer {VALUE}",
    f"--token {VALUE}",
    f'"private_key": "-----BEGIN PRIVATE KEY-----\\n{KEY_BODY}\\n-----END PRIVATE KEY-----\\n"',
)
PIECE = 64 * 1024  # characters in each piece an over-long line is printed in


def test_a_secret_where_an_over_long_line_is_cut_is_redacted(tmp_path: Path) -> None:
    """A line longer than a piece is printed in pieces, and a secret that straddles the
    place where one piece ends is redacted, not printed in two halves, also on a last
    line without a newline."""
    lines = []
    for secret in LONG_LINE_SECRETS:
        for before in (5, len(secret) // 2, len(secret) - 3):  # characters before the cut
            for after in (100, 3 * PIECE):  # the line ends in the next piece, or later
                lines.append("x" * (PIECE - before - 1) + " " + secret + " " + "y" * after)
    printed = tmp_path / "printed.txt"
    last = "x" * (PIECE - 10) + " " + LONG_LINE_SECRETS[0] + " " + "y" * 100  # no newline
    printed.write_text("".join(line + "\n" for line in lines) + last)
    result = run_keeper("--no-color", "run", "--", "cat", str(printed))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") > len(lines) + 1  # the lines were cut
    shown = re.sub("[xy]{50,}", "\n", result.stdout)  # the filler, out of the way
    for text in (VALUE, KEY_BODY):
        leaks = {text[at : at + 8] for at in range(len(text) - 8) if text[at : at + 8] in shown}
        assert not leaks, f"pieces of a secret were printed: {sorted(leaks)[:5]}"


def _pkcs1_key() -> str:
    import asyncssh

    return (
        asyncssh.generate_private_key("ssh-rsa", key_size=1024)
        .export_private_key("pkcs1-pem")
        .decode()
    )


def test_a_private_key_printed_with_a_prefix_on_each_line_is_hidden(tmp_path: Path) -> None:
    """A key whose every line carries the prefix of the BEGIN line (docker compose's
    `web_1  | `) or a stamp of the same width (a log's time) comes out as one marker."""
    key = _pkcs1_key().splitlines()
    compose = [f"web_1  | {line}" for line in [*key, "started"]]
    stamped = [f"05:42:{i:02d}.{i * 7:03d} app: {line}" for i, line in enumerate([*key, "started"])]
    printed = tmp_path / "printed.txt"
    printed.write_text("".join(line + "\n" for line in [*compose, *stamped]))
    result = run_keeper("--no-color", "run", "--", "cat", str(printed))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "web_1  | [REDACTED PRIVATE KEY]",
        "web_1  | started",
        "05:42:00.000 app: [REDACTED PRIVATE KEY]",
        stamped[-1],
    ]


def test_a_closed_stdout_or_stderr_still_ends_with_the_command_s_code() -> None:
    """Started with stdout or stderr closed (`>&-`, `2>&-`), keeper run writes nothing
    there, shows no traceback and exits with the command's code."""
    command = ("--no-color", "run", "--", "sh", "-c", "echo out; echo err >&2; exit 4")
    for closing in (">&-", "2>&-"):
        result = subprocess.run(
            ["sh", "-c", f'exec "$@" {closing}', "sh", *KEEPER, *command],
            capture_output=True, text=True, timeout=DEADLINE_S, check=False,
        )  # fmt: skip
        assert result.returncode == 4, (closing, result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr


def test_the_verbose_traceback_is_redacted_and_neutralised_too() -> None:
    """`-v` adds a traceback, which quotes the same failing command line: its secret is
    redacted and its escape sequences neutralised, as in the one-sentence error."""
    result = run_keeper(
        "-v", "--no-color", "run", "--", "sh", "-c", "exit 3", f"token={SECRET}", "\x1b]0;t\x07"
    )
    assert result.returncode == 3
    assert "Traceback" in result.stderr
    assert SECRET not in result.stderr and "\x1b" not in result.stderr
