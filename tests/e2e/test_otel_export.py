"""OpenTelemetry export end to end: with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a real
OTLP/HTTP receiver on loopback, a `keeper infer` on a fresh home leaves the spans of the
queen, the hive and the worker in the receiver, under the request's one trace id, each
hop's job nested under the job that asked for it, and each one's narration as logs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support import Chain, OtlpReceiver, otlp_receiver, wait_until

pytestmark = pytest.mark.slow

SERVICES = {"queen-rbee", "rbee-hive", "llm-worker-rbee"}


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        # The keeper passes its environment to the queen and hive it starts, the hive to
        # its workers: every daemon of the chain exports to this receiver.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", running.url)
        yield running


def test_queen_hive_and_worker_export_their_spans_under_one_trace(
    receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> None:
    chain = Chain(tmp_path_factory.mktemp("otel-home"))
    try:
        run = chain.run("--json", "infer", "--model", "builtin:tiny", "--max-tokens", "8", "Hi")
        events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        job_id = next(e["job_id"] for e in events if e.get("action") == "job_start")
        trace = json.loads(chain.run("--json", "jobs", "trace", job_id).stdout)
        trace_id = trace["trace_id"]
        wait_until(
            lambda: receiver.services(trace_id) == SERVICES,
            "spans from the queen, the hive and the worker",
        )
    finally:
        chain.stop()
    with receiver.lock:
        spans = [s for s in receiver.spans if s.trace_id == trace_id]
    by_service = {service: [s for s in spans if s.service == service] for service in SERVICES}
    queen_job = job_id.removeprefix("job-")
    # The queen's job is the request's span; the phases it ran itself hang below it.
    queen_root = next(s for s in by_service["queen-rbee"] if s.span_id == queen_job)
    assert queen_root.name == "infer"
    assert {s.name for s in by_service["queen-rbee"]} >= {"infer", "queued", "relay"}
    # Each hop's job is a span whose parent is the queen's job, as its traceparent said.
    hop_jobs = {s["job_id"].removeprefix("job-") for s in trace["spans"] if s["kind"] == "job"}
    for service in ("rbee-hive", "llm-worker-rbee"):
        roots = [s for s in by_service[service] if s.span_id in hop_jobs - {queen_job}]
        assert roots, service
        assert all(root.parent_id == queen_job for root in roots)
    assert {s.name for s in by_service["rbee-hive"]} >= {"model_download", "worker_spawn"}
    assert {s.name for s in by_service["llm-worker-rbee"]} >= {"infer", "prompt evaluation"}
    for span in spans:
        assert span.end_ns >= span.start_ns > 0
    # Each daemon's own narration went along as log records, under its job's span.
    wait_until(
        lambda: {log.service for log in receiver.logs if log.trace_id == trace_id} == SERVICES,
        "narration from the queen, the hive and the worker",
    )
    with receiver.lock:
        logs = [log for log in receiver.logs if log.trace_id == trace_id]
    worker_log = {log.body for log in logs if log.service == "llm-worker-rbee"}
    assert any(body.startswith("Generating up to 8 tokens") for body in worker_log)
    worker_job = next(s.span_id for s in by_service["llm-worker-rbee"] if s.name == "infer")
    assert {log.span_id for log in logs if log.service == "llm-worker-rbee"} == {worker_job}
