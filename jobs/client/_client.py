"""JobClient and SyncJobClient: submit jobs to a job server (queen or hive) and follow
their streams.

    async with JobClient("http://127.0.0.1:7833") as client:
        state = await client.submit_and_stream({"operation": "queen_status"}, print)

    with SyncJobClient("http://127.0.0.1:7833") as client:
        for event in client.stream(client.submit({"operation": "queen_status"})):
            print(event)

Servers relay with the async client. The keeper, which only ever follows one job at a
time, uses the sync twin: a command that needs no event loop starts without asyncio
(~50 ms of every `keeper status`). Both are thin shells around the same pieces below,
as httpx's Client and AsyncClient are: one set of client options, one translation of
errors, one resumable stream (`_Resume`).

httpx errors are translated here, at one boundary: a refused or timed-out connection is
DaemonUnreachable(url); error responses become the JobError leaf their status names. A
stream that drops mid-way is resumed with `Last-Event-ID`, so the caller sees every
event exactly once.
"""

from __future__ import annotations

import functools
import inspect
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import httpx

from jobs import (
    AuthRequired,
    DaemonUnreachable,
    InvalidRequest,
    JobError,
    JobEvent,
    JobFinished,
    JobNotFound,
    JobState,
    LogEntry,
    NotAJobServer,
    trace_headers,
)
from jobs.client._decoder import SSEDecoder
from narration_core.sanitize import strip_control

if TYPE_CHECKING:  # pydantic is only needed by a caller that passes a model (~45 ms import)
    from pydantic import BaseModel

TIMEOUT_S = 10.0  # connect/write/pool timeout for every request
STREAM_READ_TIMEOUT_S = 60.0  # silence tolerated on a stream (servers send keep-alives every 15 s)
STATUS_PATH = "/v1/status"  # the queen's read-only snapshot (queen/status.py)
PLACEMENTS_PATH = "/v1/placements"  # where the queen would place a model (queen/_split_plan.py)
MAX_RECONNECTS = 5  # consecutive failed reconnects before a stream gives up
RECONNECT_BACKOFF_S = 0.1  # first wait before reconnecting; doubles per failure

EventHandler = Callable[[JobEvent], Awaitable[None] | None]


class BearerToken(httpx.Auth):
    """Every request that does not opt out (`auth=None`, a health probe) carries the
    caller's trace (`traceparent` from the context, see jobs._trace: queen -> hive ->
    worker, one trace) and, with a token, `Authorization: Bearer <token>`."""

    def __init__(self, token: str | None) -> None:
        self._header = None if token is None else f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._header is not None:
            request.headers["Authorization"] = self._header
        # A submit starts a trace when none is running (the keeper's request begins here).
        mint = request.method == "POST" and request.url.path == "/v1/jobs"
        request.headers.update(trace_headers(mint=mint))
        yield request


class JobClient:
    """A job server's HTTP API. Use as `async with`, or call `aclose()`."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = TIMEOUT_S,
        max_reconnects: int = MAX_RECONNECTS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self.max_reconnects = max_reconnects
        self._http = httpx.AsyncClient(**_http_options(self.base_url, token, timeout_s))

    async def __aenter__(self) -> JobClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def health(self) -> dict[str, Any]:
        """`{"status": "ok", "version"}`; raises DaemonUnreachable if nothing answers.

        Sent without the token: /health is open, and a probe should not hand a credential
        to whatever happens to answer on that port."""
        # A probe waits `timeout_s` for the answer too, not the streams' long read
        # timeout: a port held by something that accepts and never answers is down.
        reply: dict[str, Any] = await self._json(
            "GET", "/health", auth=None, timeout=self._timeout_s
        )
        return reply

    async def submit(self, operation: BaseModel | dict[str, Any]) -> str:
        """Create a job (it starts at once); returns its id."""
        reply = await self._json("POST", "/v1/jobs", json=_body(operation))
        return str(reply["job_id"])

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST JSON to another route of the server (a worker's /v1/inference); its JSON
        answer, or the JobError its status names."""
        return await self._json("POST", path, json=body)

    async def list_jobs(self, *, limit: int = 100) -> list[dict[str, Any]]:
        reply = await self._json("GET", "/v1/jobs", params={"limit": limit})
        return list(reply["jobs"])

    async def status(self) -> dict[str, Any]:
        """The queen's read-only snapshot (`GET /v1/status`): looking creates no job."""
        reply: dict[str, Any] = await self._json("GET", STATUS_PATH)
        return reply

    async def get_job(self, job_id: str) -> dict[str, Any]:
        """State, error and transitions; raises JobNotFound."""
        reply: dict[str, Any] = await self._json("GET", _job_path(job_id))
        return reply

    async def trace(self, job_id: str) -> dict[str, Any]:
        """The job's timeline across hops (`GET /v1/jobs/{id}/trace`); raises JobNotFound."""
        reply: dict[str, Any] = await self._json("GET", f"{_job_path(job_id)}/trace")
        return reply

    async def cancel(self, job_id: str) -> JobState:
        """Cancel a running job; returns its state. Raises JobNotFound or JobFinished."""
        reply = await self._json("DELETE", _job_path(job_id))
        return reply["state"]  # type: ignore[no-any-return]

    async def stream(self, job_id: str, *, after: int | None = None) -> AsyncIterator[JobEvent]:
        """Every event after seq `after` until the job ends; the last one is its final
        `state` event. Reconnects with Last-Event-ID if the connection drops."""
        async for batch in self.stream_entries(job_id, after=after):
            for entry in batch:
                yield entry.to_event()

    async def stream_entries(
        self, job_id: str, *, after: int | None = None
    ) -> AsyncIterator[list[LogEntry]]:
        """`stream` in batches of still-encoded events (what a relay hop passes on).

        Each batch is what one network read completed. Reconnects with Last-Event-ID if
        the connection drops, so every event arrives exactly once; raises
        DaemonUnreachable if the server cannot be reached or the stream keeps dropping.
        """
        resume = _Resume(self.base_url, after=after, max_reconnects=self.max_reconnects)
        path = f"{_job_path(job_id)}/stream"
        while True:
            dropped: httpx.TransportError | None = None
            try:
                async with self._http.stream("GET", path, headers=resume.attempt()) as response:
                    if not _is_event_stream(response):
                        await response.aread()
                        raise _error_from(response)
                    async for chunk in response.aiter_bytes():
                        batch = resume.feed(chunk)
                        if batch:
                            yield batch
                        if resume.ended:
                            return
            except httpx.TransportError as exc:
                dropped = exc  # read error, timeout, protocol: reconnect below
            await anyio.sleep(resume.retry_after(dropped))

    async def submit_and_stream(
        self, operation: BaseModel | dict[str, Any], handler: EventHandler
    ) -> JobState:
        """Submit, pass every event to `handler` (sync or async), return the final state."""
        job_id = await self.submit(operation)
        final: JobState = "failed"
        async for event in self.stream(job_id):
            outcome = handler(event)
            if inspect.isawaitable(outcome):
                await outcome
            if event.is_final:
                final = event.data["state"]
        return final

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return _reply(self.base_url, response)


class SyncJobClient:
    """The blocking twin of JobClient for a program that follows one job at a time (the
    keeper): same requests, errors and resuming stream, no event loop. Use as `with`,
    or call `close()`."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = TIMEOUT_S,
        max_reconnects: int = MAX_RECONNECTS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_reconnects = max_reconnects
        self._http = httpx.Client(**_http_options(self.base_url, token, timeout_s))

    def __enter__(self) -> SyncJobClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(self, operation: BaseModel | dict[str, Any]) -> str:
        """Create a job (it starts at once); returns its id."""
        return str(self._json("POST", "/v1/jobs", json=_body(operation))["job_id"])

    def list_jobs(self, *, limit: int = 100) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/jobs", params={"limit": limit})["jobs"])

    def status(self) -> dict[str, Any]:
        """The queen's read-only snapshot (`GET /v1/status`): looking creates no job."""
        reply: dict[str, Any] = self._json("GET", STATUS_PATH)
        return reply

    def get_job(self, job_id: str) -> dict[str, Any]:
        """State, error and transitions; raises JobNotFound."""
        reply: dict[str, Any] = self._json("GET", _job_path(job_id))
        return reply

    def trace(self, job_id: str) -> dict[str, Any]:
        """The job's timeline across hops (`GET /v1/jobs/{id}/trace`); raises JobNotFound."""
        reply: dict[str, Any] = self._json("GET", f"{_job_path(job_id)}/trace")
        return reply

    def placement(self, model: str, **params: str | int | None) -> dict[str, Any]:
        """Where the queen would place `model` (`GET /v1/placements`: `hive`, `ctx_size`,
        `parallel`; None ones are left out), placing nothing; raises the JobError its
        refusal stands for (404: no hive has the model, 503: the hives cannot hold it)."""
        query = {"model": model, **{k: v for k, v in params.items() if v is not None}}
        reply: dict[str, Any] = self._json("GET", PLACEMENTS_PATH, params=query)
        return reply

    def cancel(self, job_id: str, *, timeout_s: float | None = None) -> JobState:
        """Cancel a running job; returns its state. Raises JobNotFound or JobFinished.

        `timeout_s` bounds each step of the answer (connecting, sending, each read), not
        their sum as the async twin's cancel scope does: after Ctrl-C nobody should wait
        out a stream's long read timeout, and a queen that answers nothing costs at most
        a few times `timeout_s`."""
        timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s
        return self._json("DELETE", _job_path(job_id), timeout=timeout)["state"]  # type: ignore[no-any-return]

    def stream(self, job_id: str, *, after: int | None = None) -> Iterator[JobEvent]:
        """Every event after seq `after` until the job ends; the last one is its final
        `state` event. Reconnects with Last-Event-ID as JobClient.stream does."""
        resume = _Resume(self.base_url, after=after, max_reconnects=self.max_reconnects)
        path = f"{_job_path(job_id)}/stream"
        while True:
            dropped: httpx.TransportError | None = None
            try:
                with self._http.stream("GET", path, headers=resume.attempt()) as response:
                    if not _is_event_stream(response):
                        response.read()
                        raise _error_from(response)
                    for chunk in response.iter_bytes():
                        for entry in resume.feed(chunk):
                            yield entry.to_event()
                        if resume.ended:
                            return
            except httpx.TransportError as exc:
                dropped = exc  # read error, timeout, protocol: reconnect below
            time.sleep(resume.retry_after(dropped))

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return _reply(self.base_url, response)


class _Resume:
    """Where one job's stream stands across reconnects, for both clients (sans-I/O): the
    headers of the next attempt, which decoded events are new, and how long to wait
    before trying again."""

    __slots__ = ("_decoder", "_failures", "_max_reconnects", "_url", "last")

    def __init__(self, url: str, *, after: int | None, max_reconnects: int) -> None:
        self._url = url
        self._max_reconnects = max_reconnects
        self._failures = 0
        self._decoder = SSEDecoder()
        self.last = after or 0

    def attempt(self) -> dict[str, str]:
        """The request headers of the next attempt, which reads a fresh response."""
        self._decoder = SSEDecoder()
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.last:
            headers["Last-Event-ID"] = str(self.last)
        return headers

    def feed(self, chunk: bytes) -> list[LogEntry]:
        """The events `chunk` completes that the caller has not seen yet."""
        batch = self._decoder.feed(chunk)
        if batch and batch[0].seq <= self.last:  # replayed after a reconnect
            batch = [entry for entry in batch if entry.seq > self.last]
        if batch:
            self.last, self._failures = batch[-1].seq, 0
        return batch

    @property
    def ended(self) -> bool:
        """The end marker arrived: the job is over and so is its stream."""
        return self._decoder.terminator is not None

    def retry_after(self, error: httpx.TransportError | None) -> float:
        """Seconds to wait before reconnecting, once an attempt ended without the end
        marker (`error` when the transport failed, None when the server just closed).

        Raises:
            DaemonUnreachable: the very first connection failed (nothing is there), or
                the stream dropped more than `max_reconnects` times in a row.
        """
        first = self.last == 0 and self._failures == 0
        if first and isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
            raise DaemonUnreachable(self._url, reason=str(error) or None) from error
        self._failures += 1
        if self._failures > self._max_reconnects:
            raise DaemonUnreachable(self._url, reason="the event stream kept dropping")
        return RECONNECT_BACKOFF_S * 2.0 ** (self._failures - 1)


def _http_options(base_url: str, token: str | None, timeout_s: float) -> dict[str, Any]:
    """What both clients build their httpx client with."""
    return {
        "base_url": base_url,
        "auth": BearerToken(token or None),
        "timeout": httpx.Timeout(timeout_s, read=STREAM_READ_TIMEOUT_S),
        # rbee daemons are addressed directly: a proxy from the environment would
        # only break loopback calls, and would be handed the bearer token.
        "trust_env": False,
        "verify": tls_for(base_url),
    }


def _body(operation: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """A submit's JSON body; a model is dumped by duck typing, so pydantic stays unimported."""
    if isinstance(operation, dict):
        return operation
    dumped: dict[str, Any] = operation.model_dump(mode="json")
    return dumped


def _job_path(job_id: str) -> str:
    """A job's route, its id quoted as one path segment whatever the user typed (`../x`)."""
    return f"/v1/jobs/{quote(job_id, safe='')}"


def _is_event_stream(response: httpx.Response) -> bool:
    content_type = response.headers.get("content-type", "")
    return response.status_code == 200 and "event-stream" in content_type


def _unreachable(base_url: str, exc: httpx.TransportError) -> DaemonUnreachable:
    """A request that got no answer: refused or timed out connecting, or cut off."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return DaemonUnreachable(base_url, reason=str(exc) or None)
    if isinstance(exc, httpx.TimeoutException):
        return DaemonUnreachable(base_url, reason="it stopped answering (timed out)")
    # A read or protocol error: the daemon went away mid-answer (killed, crashed).
    said = f": {exc}" if str(exc) else ""
    return DaemonUnreachable(base_url, reason=f"the connection was cut off{said}")


def _reply(base_url: str, response: httpx.Response) -> Any:
    """A successful answer's JSON, or the error it stands for."""
    if response.is_success:
        try:
            return response.json()
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise NotAJobServer(base_url, reason=_answer(response)) from exc
    raise _error_from(response)


def _answer(response: httpx.Response) -> str:
    """What a foreign server answered, for an error message: `HTTP 501 text/html`."""
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return strip_control(
        f"{response.request.method} {response.url.path}: HTTP {response.status_code} {kind}"
    )


def tls_for(url: str) -> ssl.SSLContext:
    """httpx's `verify=` for requests to `url`: the one verifying context for https, and
    for plain http one that loads no CA bundle. httpx's default (`verify=True`) builds and
    loads a new one for every client, ~40 ms of a keeper command or a daemon's start."""
    return _tls_context() if url.lower().startswith("https:") else _no_tls()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one loads the CA bundle (~40 ms),
    which every forwarded job (a client per hop) would otherwise pay again."""
    return httpx.create_ssl_context()


@functools.cache
def _no_tls() -> ssl.SSLContext:
    """For a plain-http server: requests never leave its base URL (no redirects are
    followed), so no CA bundle is loaded (~40-400 ms of a keeper command's start). The
    context still requires verification, so TLS, were it ever attempted, fails closed.
    httpx wants a context even for http; one per process spares a relay ~0.3 ms a hop."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _error_from(response: httpx.Response) -> JobError:
    """The JobError leaf an error response stands for (servers send {"error", "detail"})."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = {}
    body = body if isinstance(body, dict) else {}
    # The text may come from another daemon or a remote host: never let it drive a terminal.
    message = strip_control(
        str(body.get("error") or f"HTTP {response.status_code} from {response.url}")
    )
    detail = body.get("detail")
    info = detail if isinstance(detail, dict) else {}
    status = response.status_code
    if "error" not in body and status != 401:  # every rbee error answer has "error"
        base = str(response.url.copy_with(path="/", query=None)).rstrip("/")
        return NotAJobServer(base, reason=_answer(response))
    if status == 404 and response.request.method == "POST":
        # the job was created and failed at once: something its operation names is unknown
        return InvalidRequest(message, detail=detail, status=status)
    if status == 404 and "job_id" in info:
        return JobNotFound(info["job_id"])
    if status == 409 and "job_id" in info:
        return JobFinished(info["job_id"], info.get("state", "ended"))
    if status == 401:
        return AuthRequired(str(response.url.copy_with(path="/", query=None)).rstrip("/"))
    if status in (400, 422):
        return InvalidRequest(message, detail=detail, status=status)
    if status == 502:  # the server could not reach its upstream (a hive): keep its words
        url = info.get("url") or str(response.url)
        return DaemonUnreachable(url, reason=info.get("reason"), message=message)
    error = JobError(message)
    error.status = status
    return error
