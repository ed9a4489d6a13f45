"""Bad input to the job API, as an attacker or a buggy client sends it (issue 7 item 6).

Each drill runs against an in-process queen on a loopback port, through real sockets;
the body-limit drills speak raw HTTP/1.1 so they can lie about sizes and trickle bytes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx
import pytest

from jobs.server import LIST_LIMIT_MAX, MAX_BODY_BYTES, MAX_BODY_ENV, JobRegistry
from queen.errors import QueenConfigError
from queen.settings import QueenSettings
from tests.support import queen_settings, start_queen

if TYPE_CHECKING:
    from tests.support import RunningQueen

REPLY_DEADLINE_S = 5.0  # an answer that takes longer means the server waited for the body


async def raw_exchange(url: str, head: bytes, body_chunks: Sequence[bytes] = ()) -> bytes:
    """Send `head` and then `body_chunks` on one connection while reading what the server
    answers (a server that answers early and closes resets the connection, and a client
    that reads only after sending would lose the answer); returns the answer."""
    host, port = url.removeprefix("http://").split(":")
    reply = bytearray()
    async with await anyio.connect_tcp(host, int(port)) as stream:

        async def read_reply() -> None:
            while True:
                try:
                    reply.extend(await stream.receive())
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return

        with anyio.fail_after(REPLY_DEADLINE_S):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_reply)
                await stream.send(head)
                for chunk in body_chunks:
                    try:
                        await stream.send(chunk)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        break  # the server answered and closed: the rest is never read
    return bytes(reply)


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


# --- ids and text that would poison every later listing ------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        rb'{"operation":"hive_status","hive_id":"\ud800"}',
        b'{"operation":"hive_status","hive_id":"\xed\xa0\x80"}',  # the surrogate as raw bytes
        rb'{"operation":"hive_status","hive_id":"gpu1\u001b[2J"}',
        rb'{"operation":"worker_stop","worker_id":"w\n1"}',
        rb'{"operation":"model_list","hive_id":"a b"}',
        rb'{"operation":"model_delete","model":"tiny\u0007"}',
    ],
)
async def test_bad_ids_are_refused_and_listing_survives(queen: RunningQueen, body: bytes) -> None:
    """Lone surrogates and control characters in ids are refused with a 4xx JSON error,
    and GET /v1/jobs keeps answering 200."""
    async with httpx.AsyncClient(base_url=queen.url) as http:
        response = await http.post(
            "/v1/jobs", content=body, headers={"content-type": "application/json"}
        )
        listing = await http.get("/v1/jobs")
    assert response.status_code in (400, 422), response.text
    assert set(response.json()) == {"error", "detail"}
    assert listing.status_code == 200 and listing.json()["jobs"] == []


@pytest.mark.anyio
async def test_rows_stored_by_an_older_server_do_not_break_listing(rbee_home: Path) -> None:
    """A job row holding a lone surrogate (what the old server accepted) is still listed
    and shown, across a restart, instead of turning every listing into a 500."""
    settings = queen_settings(rbee_home)
    registry = await JobRegistry.open(settings.paths.state / "jobs.sqlite3")
    await registry.create("job-poisoned", {"operation": "hive_status", "hive_id": "\ud800"})
    await registry.transition("job-poisoned", "completed")
    await registry.aclose()
    async with start_queen(settings) as queen, httpx.AsyncClient(base_url=queen.url) as http:
        listing = await http.get("/v1/jobs")
        one = await http.get("/v1/jobs/job-poisoned")
    assert listing.status_code == 200, listing.text
    assert [j["job_id"] for j in listing.json()["jobs"]] == ["job-poisoned"]
    assert one.status_code == 200 and one.json()["params"]["hive_id"] == "?"


@pytest.mark.anyio
async def test_a_damaged_row_does_not_break_listing(rbee_home: Path) -> None:
    """A job row whose stored operation is not JSON (a damaged database) is listed with
    empty params; the other jobs are listed as usual."""
    settings = queen_settings(rbee_home)
    registry = await JobRegistry.open(settings.paths.state / "jobs.sqlite3")
    await registry.create("job-fine", {"operation": "hive_list"})
    await registry.transition("job-fine", "completed")
    await registry.aclose()
    with sqlite3.connect(settings.paths.state / "jobs.sqlite3") as db:
        db.execute(
            "INSERT INTO jobs (id, operation, state, created_at, updated_at)"
            " VALUES ('job-damaged', '{oops', 'completed', ?, ?)",
            (time.time() - 1, time.time() - 1),  # older than job-fine, too new to prune
        )
    async with start_queen(settings) as queen, httpx.AsyncClient(base_url=queen.url) as http:
        listing = await http.get("/v1/jobs")
        one = await http.get("/v1/jobs/job-damaged")
    assert listing.status_code == 200, listing.text
    assert [j["job_id"] for j in listing.json()["jobs"]] == ["job-fine", "job-damaged"]
    assert one.status_code == 200 and one.json()["params"] == {}


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 1000 + b"]" * 1000,
        b'{"operation":"infer","prompt":"x","model":"m","stop":' + b"[" * 900 + b"]" * 900 + b"}",
    ],
)
async def test_deeply_nested_json_is_400(queen: RunningQueen, body: bytes) -> None:
    """JSON nested 1,000 deep is a 400 with the JSON error body, not a 500 RecursionError."""
    async with httpx.AsyncClient(base_url=queen.url) as http:
        response = await http.post(
            "/v1/jobs", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error", "detail"}
    assert "not valid JSON" in response.json()["error"]


# --- strict types ----------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "fields",
    [
        {"operation": "queen_status", "watch": "yes"},
        {"operation": "queen_status", "watch": 1},
        {"operation": "queen_status", "interval_s": "2"},
        {"operation": "infer", "prompt": "p", "model": "m", "max_tokens": 5.5},
        {"operation": "infer", "prompt": "p", "model": "m", "max_tokens": "5"},
        {"operation": "infer", "prompt": "p", "model": "m", "seed": True},
    ],
)
async def test_types_are_strict(queen: RunningQueen, fields: dict[str, object]) -> None:
    """Booleans are booleans and integers are integers: no coercion from strings or floats."""
    async with httpx.AsyncClient(base_url=queen.url) as http:
        response = await http.post("/v1/jobs", json=fields)
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"error", "detail"}


NOT_PLAIN_INTEGERS = ["", " 5 ", "1_000", "+3", "٣", "5.0", "0x10", "-1", "9" * 19]


@pytest.mark.anyio
@pytest.mark.parametrize("raw", NOT_PLAIN_INTEGERS)
async def test_integer_parameters_are_plain_digits(queen: RunningQueen, raw: str) -> None:
    """`after`, `limit` and Last-Event-ID take plain ASCII digits only; what int() would
    also accept (spaces, underscores, signs, other scripts' digits) is a 400."""
    async with httpx.AsyncClient(base_url=queen.url) as http:
        created = await http.post("/v1/jobs", json={"operation": "queen_status"})
        stream = f"/v1/jobs/{created.json()['job_id']}/stream"
        replies = [
            await http.get(stream, params={"after": raw}),
            await http.get("/v1/jobs", params={"limit": raw}),
        ]
        if raw.isascii() and raw == raw.strip() and raw:  # HTTP strips a header's spaces;
            # an empty Last-Event-ID is what EventSource sends before it has seen an id
            replies.append(await http.get(stream, headers={"Last-Event-ID": raw}))
    for reply in replies:
        assert reply.status_code == 400, (reply.request.url, reply.text)
        assert set(reply.json()) == {"error", "detail"}


@pytest.mark.anyio
async def test_limit_outside_its_range_is_400(queen: RunningQueen) -> None:
    """limit is 1 to LIST_LIMIT_MAX, as /openapi.json says; 0 and too many are refused."""
    async with httpx.AsyncClient(base_url=queen.url) as http:
        zero = await http.get("/v1/jobs", params={"limit": "0"})
        many = await http.get("/v1/jobs", params={"limit": str(LIST_LIMIT_MAX + 1)})
        most = await http.get("/v1/jobs", params={"limit": str(LIST_LIMIT_MAX)})
    assert zero.status_code == many.status_code == 400
    assert most.status_code == 200


# --- body size and read deadline -------------------------------------------------------


@pytest.mark.anyio
async def test_declared_huge_body_is_413_before_it_is_sent(queen: RunningQueen) -> None:
    """A Content-Length over the limit is answered 413 at once, without reading a byte of
    the body, and the connection is closed."""
    head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 104857600\r\n\r\n"
    )
    reply = await raw_exchange(queen.url, head)
    assert status_of(reply) == 413
    assert b"connection: close" in reply.lower()
    assert b'"error":"the request body is larger than' in reply


@pytest.mark.anyio
async def test_chunked_body_over_the_limit_is_413(queen: RunningQueen) -> None:
    """A chunked body (no Content-Length) is counted as it streams and cut off with 413
    once it passes the limit; the server does not read the rest."""
    head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 65536
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    chunks = [chunk] * (4 * MAX_BODY_BYTES // len(piece))  # 4 MiB offered
    reply = await raw_exchange(queen.url, head, chunks)
    assert status_of(reply) == 413


@pytest.mark.anyio
async def test_body_under_the_limit_is_accepted(queen: RunningQueen) -> None:
    """A job body just under the limit (a long prompt) is read whole and becomes a job
    holding every byte of the prompt."""
    prompt = "p" * (MAX_BODY_BYTES - 200)
    async with httpx.AsyncClient(base_url=queen.url) as http:
        response = await http.post(
            "/v1/jobs", json={"operation": "infer", "prompt": prompt, "model": "m"}
        )
        # What infer does next is upstream's business (this queen's hive is a closed port:
        # 502, the job failed); either way the job exists, with its id in the answer.
        assert response.status_code in (201, 502), response.text
        reply = response.json()
        job_id = reply["job_id"] if response.status_code == 201 else reply["detail"]["job_id"]
        job = await http.get(f"/v1/jobs/{job_id}")
    assert job.status_code == 200, job.text
    assert job.json()["params"]["prompt"] == prompt


@pytest.mark.anyio
async def test_trickled_body_is_408_after_the_read_deadline(rbee_home: Path) -> None:
    """A client that declares a body and sends only part of it gets 408 once the read
    deadline passes, and its connection is closed: it cannot hold a server task."""
    settings = queen_settings(rbee_home, body_read_timeout_s=0.3)
    head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    async with start_queen(settings) as queen:
        reply = await raw_exchange(queen.url, head, [b'{"operation":'])
        async with httpx.AsyncClient(base_url=queen.url) as http:
            still_serving = await http.get("/v1/jobs")
    assert status_of(reply) == 408
    assert b"did not arrive within 0.3 s" in reply
    assert still_serving.status_code == 200


def test_body_limit_is_configurable(rbee_home: Path) -> None:
    """RBEE_MAX_BODY_BYTES sets the limit; a value that is not a positive number is refused."""
    assert QueenSettings.build(env={MAX_BODY_ENV: "2048"}).max_body_bytes == 2048
    assert QueenSettings.build(env={}).max_body_bytes == MAX_BODY_BYTES
    with pytest.raises(QueenConfigError, match=MAX_BODY_ENV):
        QueenSettings.build(env={MAX_BODY_ENV: "1e6"})


@pytest.mark.anyio
async def test_configured_limit_applies(rbee_home: Path) -> None:
    """A smaller configured limit turns an ordinary-sized body into a 413."""
    settings = queen_settings(rbee_home, max_body_bytes=64)
    async with start_queen(settings) as queen, httpx.AsyncClient(base_url=queen.url) as http:
        small = await http.post("/v1/jobs", json={"operation": "hive_list"})
        big = await http.post(
            "/v1/jobs", json={"operation": "infer", "prompt": "p" * 100, "model": "m"}
        )
    assert small.status_code == 201
    assert big.status_code == 413 and big.json()["detail"] == {"max_bytes": 64}


# --- 405 and the document --------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/jobs", "GET, HEAD, POST"),
        ("PATCH", "/v1/jobs/job-x", "DELETE, GET, HEAD"),
        ("POST", "/v1/jobs/job-x/stream", "GET, HEAD"),
        ("DELETE", "/health", "GET, HEAD"),
    ],
)
async def test_405_names_every_allowed_method(
    queen: RunningQueen, method: str, path: str, allow: str
) -> None:
    """A method a path does not serve gets 405 with an Allow header naming every method
    that path does serve (not just the first route's)."""
    async with httpx.AsyncClient(base_url=queen.url) as http:
        response = await http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert set(response.json()) == {"error", "detail"}


@pytest.mark.anyio
async def test_openapi_matches_the_server(queen: RunningQueen) -> None:
    """The document requires `operation` in every body and lists the statuses /stream and
    /v1/jobs really answer."""
    async with httpx.AsyncClient(base_url=queen.url) as http:
        doc = (await http.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    for name in ("QueenStatus", "HiveStatus", "Infer", "WorkerSpawn"):
        assert "operation" in schemas[name]["required"], name
    stream = doc["paths"]["/v1/jobs/{job_id}/stream"]["get"]["responses"]
    assert {"200", "400", "404"} <= set(stream)
    post = doc["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"201", "400", "413", "422", "502"} <= set(post)
    listing = doc["paths"]["/v1/jobs"]["get"]
    assert [p["name"] for p in listing["parameters"]] == ["limit"]


@pytest.mark.anyio
async def test_repeated_query_parameter_is_400(queen: RunningQueen) -> None:
    """`?limit=5&limit=6` is ambiguous (the server would silently pick one), so it is a 400."""
    async with httpx.AsyncClient(base_url=queen.url) as http:
        reply = await http.get("/v1/jobs", params=[("limit", "5"), ("limit", "6")])
    assert reply.status_code == 400 and "given 2 times" in reply.json()["error"]
