"""A worker split across two RPC servers (started as a hive starts them, on loopback)
answers exactly as the unsplit worker does; an RPC server it cannot reach is a clear
refusal, not a crash."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from hive._rpc_server import RpcServer, RpcServers
from tests.support import infer, spawn_worker, text_of
from worker.__main__ import parse_args
from worker._rpc import (
    CONN_CAPS,
    HELLO_REPLY,
    RpcUnavailable,
    add_rpc_servers,
    rpc_devices,
    rpc_protocol,
)

pytestmark = [pytest.mark.anyio, pytest.mark.process]

QUESTION = "What is the capital of France?"
PROMPT = f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"  # SmolLM2's
GREEDY = {"temperature": 0, "max_tokens": 16, "seed": 1}
SHARE_MIN_BYTES = 15 * 2**20  # what a third of SmolLM2-135M's layers takes at least
LOGITS_BYTES = 49152 * 4  # one token's logits, SmolLM2's vocabulary in f32


@pytest.fixture
async def two_rpc_servers(tmp_path: Path) -> AsyncIterator[list[RpcServer]]:
    async with RpcServers(tmp_path / "rpc", threads=1).running() as servers:
        yield [await servers.start(), await servers.start()]


async def _answer(url: str) -> str:
    return text_of(await infer(url, PROMPT, **GREEDY))


def _rss(server: RpcServer) -> int:
    return int(psutil.Process(server.pid).memory_info().rss)


async def test_a_split_worker_answers_as_the_unsplit_one(
    rbee_home: Path, smollm2: Path, two_rpc_servers: list[RpcServer]
) -> None:
    async with spawn_worker(rbee_home, smollm2, "--parallel", "1") as worker:
        await worker.wait_action("ready")
        alone = await _answer(worker.url)
    assert "Paris" in alone
    idle = [_rss(server) for server in two_rpc_servers]
    rpc = [flag for server in two_rpc_servers for flag in ("--rpc", server.endpoint)]
    # Both servers and this CPU take a third of the layers each.
    flags = ("--parallel", "1", *rpc, "--tensor-split", "1,1,1")
    async with spawn_worker(rbee_home, smollm2, *flags) as worker:
        await worker.wait_action("ready")
        assert await _answer(worker.url) == alone
        # Each server holds its third of the weights (SmolLM2-135M: ~30 MB each) and the
        # worker stays connected to it while the model is loaded.
        for server, before in zip(two_rpc_servers, idle, strict=True):
            assert _rss(server) - before > SHARE_MIN_BYTES
            assert any(
                c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == server.port
                for c in psutil.Process(worker.process.pid).net_connections(kind="tcp")
            )
    said = [e.human for e in worker.events() if e.action == "model_load"]
    assert any("split across" in line for line in said)


async def test_the_output_layer_stays_on_the_worker(
    rbee_home: Path, smollm2: Path, two_rpc_servers: list[RpcServer]
) -> None:
    """The worker keeps the output layer, as the plan says: per token, the last server
    sends back a hidden state (576 floats), not the logits over SmolLM2's 49152 tokens
    (196 KB), which llama.cpp would put on the last device by itself."""
    rpc = [flag for server in two_rpc_servers for flag in ("--rpc", server.endpoint)]
    flags = ("--parallel", "1", *rpc, "--tensor-split", "1,1,1")
    async with spawn_worker(rbee_home, smollm2, *flags) as worker:
        await worker.wait_action("ready")
        before = [_received_from(server.port) for server in two_rpc_servers]
        events = await infer(worker.url, PROMPT, **{**GREEDY, "max_tokens": 32})
        after = [_received_from(server.port) for server in two_rpc_servers]
    tokens = sum(e.kind == "token" for e in events)
    assert tokens >= 5, text_of(events)
    per_token = [(a - b) / tokens for a, b in zip(after, before, strict=True)]
    assert all(0 < n < LOGITS_BYTES / 4 for n in per_token), per_token


async def test_a_split_load_narrates_each_place_the_weights_go(
    rbee_home: Path, smollm2: Path, two_rpc_servers: list[RpcServer]
) -> None:
    """While a split loads, the worker says where the weights are going, in layer order:
    this CPU, then each peer by its endpoint and hive, with the share loaded so far."""
    rpc = [flag for server in two_rpc_servers for flag in ("--rpc", server.endpoint)]
    flags = ("--parallel", "1", *rpc, "--rpc-names", "gpu2,gpu3", "--tensor-split", "1,1,1")
    async with spawn_worker(rbee_home, smollm2, *flags) as worker:
        await worker.wait_action("ready")
    said = [e.human for e in worker.events() if e.action == "model_load" and "%" in e.human]
    first, second = (s.endpoint for s in two_rpc_servers)
    places = [line.split("layers for ", 1)[1] for line in said]
    assert places == ["this CPU", f"{first} (hive gpu2)", f"{second} (hive gpu3)"], said
    shares = [int(line.split(": ")[-2].rstrip("%")) for line in said]
    assert shares == sorted(shares) and shares[-1] < 100, said


def _received_from(port: int) -> int:
    """Bytes received so far on the connections to 127.0.0.1:`port` (the worker is the
    only client of its RPC servers), as the kernel counts them (`ss -ti`)."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( dport = :{port} )"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return sum(int(n) for n in re.findall(r"bytes_received:(\d+)", out))


async def test_an_unreachable_rpc_server_fails_the_worker_with_its_name(
    rbee_home: Path, smollm2: Path
) -> None:
    with socket.socket() as taken:  # bound, never listening: connections are refused
        taken.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{taken.getsockname()[1]}"
        flags = ("--rpc", endpoint, "--rpc-names", "gpu9")  # the hive lending it
        async with spawn_worker(rbee_home, smollm2, *flags) as worker:
            await worker.wait_action("failed")
            assert await worker.process.wait() == 1
    failed = [e.human for e in worker.events() if e.action == "failed"]
    assert len(failed) == 1, failed
    assert f"the RPC server {endpoint} (hive gpu9) cannot be reached" in failed[0]


def test_an_rpc_server_of_another_protocol_or_beyond_loopback_is_refused() -> None:
    """ggml's client would abort the worker on a version mismatch: it is refused first,
    naming both versions; an address beyond loopback is refused before any connection."""
    ours = rpc_protocol()
    assert ours is not None
    major = int(ours.split(".")[0])
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        endpoint = f"127.0.0.1:{server.getsockname()[1]}"
        answer = threading.Thread(target=_answer_hello, args=(server, major - 1), daemon=True)
        answer.start()
        with pytest.raises(
            RpcUnavailable, match=re.escape(f"speaks protocol {major - 1}.0.0, this worker {ours}")
        ):
            add_rpc_servers([endpoint])
        answer.join(timeout=10)
    with pytest.raises(RpcUnavailable, match=re.escape("is not on 127.0.0.1")):
        add_rpc_servers(["192.0.2.1:50052"])
    assert rpc_devices() == []


def _answer_hello(server: socket.socket, major: int) -> None:
    """A ggml RPC server of protocol `major`.0.0 as far as its HELLO reply goes."""
    conn, _ = server.accept()
    with conn:
        conn.recv(1 + 8 + CONN_CAPS, socket.MSG_WAITALL)
        conn.sendall(struct.pack("<Q", HELLO_REPLY) + bytes([major, 0, 0, 0]) + bytes(CONN_CAPS))


def test_tensor_split_without_rpc_servers_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--model", "m.gguf", "--port", "1", "--tensor-split", "1,1"])
    assert exited.value.code == 2
    assert "--tensor-split splits the model across --rpc servers" in capsys.readouterr().err
    args = parse_args(
        ["--model", "m.gguf", "--port", "1", "--rpc", "127.0.0.1:5", "--tensor-split", "3,1"]
    )
    assert (args.rpc, args.tensor_split) == (["127.0.0.1:5"], [3.0, 1.0])
