"""A real OTLP/HTTP receiver on loopback: what a user's collector (Jaeger, Tempo, an
OpenTelemetry Collector) would receive from rbee's daemons, decoded.

    with otlp_receiver() as receiver:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
        ...
        spans = receiver.spans   # ReceivedSpan(service, trace_id, span_id, parent_id, name)

A Starlette app served by uvicorn in a thread of this process; `POST /v1/traces` bodies
are `ExportTraceServiceRequest` protobufs, decoded with `opentelemetry.proto` as a
collector decodes them, and so are `/v1/logs` bodies (`ExportLogsServiceRequest`).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support._waiting import wait_until

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    service: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str  # 16 hex digits, or "" for a root
    name: str
    start_ns: int
    end_ns: int


@dataclass(frozen=True, slots=True)
class ReceivedLog:
    service: str
    trace_id: str
    span_id: str
    body: str
    severity: str


@dataclass
class OtlpReceiver:
    url: str
    spans: list[ReceivedSpan] = field(default_factory=list)
    logs: list[ReceivedLog] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def services(self, trace_id: str) -> set[str]:
        """The services that sent spans of `trace_id`."""
        with self.lock:
            return {s.service for s in self.spans if s.trace_id == trace_id}


def _service(resource: object) -> str:
    return next(
        (a.value.string_value for a in resource.attributes if a.key == "service.name"),  # type: ignore[attr-defined]
        "",
    )


def _decode_logs(receiver: OtlpReceiver, body: bytes) -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    request.ParseFromString(body)
    received = [
        ReceivedLog(
            _service(resource_logs.resource),
            record.trace_id.hex(),
            record.span_id.hex(),
            record.body.string_value,
            record.severity_text,
        )
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    ]
    with receiver.lock:
        receiver.logs.extend(received)


def _decode(receiver: OtlpReceiver, body: bytes) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    received = []
    for resource_spans in request.resource_spans:
        service = _service(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                received.append(
                    ReceivedSpan(
                        service,
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        span.name,
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                    )
                )
    with receiver.lock:
        receiver.spans.extend(received)


@contextlib.contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """An OTLP/HTTP receiver on a free loopback port, for the block."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    receiver = OtlpReceiver(f"http://127.0.0.1:{port}")

    async def traces(request: Request) -> Response:
        _decode(receiver, await request.body())
        return Response(b"", media_type=PROTOBUF)  # an empty ExportTraceServiceResponse

    async def logs(request: Request) -> Response:
        _decode_logs(receiver, await request.body())
        return Response(b"", media_type=PROTOBUF)

    app = Starlette(
        routes=[
            Route("/v1/traces", traces, methods=["POST"]),
            Route("/v1/logs", logs, methods=["POST"]),
        ]
    )
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "the OTLP receiver to listen", deadline_s=10)
        yield receiver
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
