"""The body-read deadline of every job server (queen, hive, worker: jobs.server.BodyLimit)
times the reading of the body alone: a handler that takes longer than the deadline to
answer, or streams its answer for longer, is not cut; a body that trickles still is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from jobs.server import BodyLimit, ServerConfig, bind_socket, create_app, open_job_server

DEADLINE_S = 0.2  # the servers' body-read deadline in these tests
SLOW_S = 3 * DEADLINE_S  # how long the handlers below take to answer, after the body


async def slow_echo(request: Request) -> Response:
    """Answers the body it read, once SLOW_S have passed (a generation's length)."""
    body = await request.body()
    await anyio.sleep(SLOW_S)
    return JSONResponse({"echo": body.decode()})


async def slow_stream(request: Request) -> Response:
    """Streams the body back in two pieces, SLOW_S apart."""
    body = await request.body()

    async def pieces() -> AsyncIterator[bytes]:
        yield b"first:"
        await anyio.sleep(SLOW_S)
        yield body

    return StreamingResponse(pieces(), media_type="text/plain")


@pytest.mark.anyio
async def test_answers_slower_than_the_body_deadline_arrive_whole(tmp_path: Path) -> None:
    """A JSON answer and a streamed one, each finished three deadlines after the body was
    read, arrive whole with status 200; a body that stops halfway is still a 408."""
    job_app = create_app(
        ServerConfig("limits-test", "test", tmp_path),
        {},
        routes=[
            Route("/echo", slow_echo, methods=["POST"]),
            Route("/stream", slow_stream, methods=["POST"]),
        ],
        middleware=[Middleware(BodyLimit, read_timeout_s=DEADLINE_S)],
    )
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with open_job_server(job_app, sock), httpx.AsyncClient(base_url=url) as http:
        echoed = await http.post("/echo", json={"prompt": "hi"})
        streamed = await http.post("/stream", json="bee")
        host, port = url.removeprefix("http://").split(":")
        async with await anyio.connect_tcp(host, int(port)) as conn:
            await conn.send(
                b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            with anyio.fail_after(10):
                head = await conn.receive()
    assert echoed.status_code == 200
    assert echoed.json() == {"echo": '{"prompt":"hi"}'}
    assert streamed.status_code == 200
    assert streamed.text == 'first:"bee"'
    assert head.startswith(b"HTTP/1.1 408")
