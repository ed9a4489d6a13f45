"""The queen's Prometheus metrics: `GET /metrics` in the text exposition format.

    rbee_requests_total{route,status}            OpenAI door answers, by route and status
    rbee_queue_depth                             requests waiting for a worker to take them
    rbee_queue_wait_seconds                      how long they waited (histogram)
    rbee_time_to_first_token_seconds{model}      request in -> first token out (histogram)
    rbee_request_duration_seconds{model}         request in -> last byte out (histogram)
    rbee_generated_tokens_total{model}           tokens generated (rate() is tokens/s)
    rbee_prompt_tokens_total{model}              prompt tokens read, where workers count them
    rbee_worker_spawns_total{hive,model}         workers started for prompts
    rbee_failures_total{reason}                  door requests that failed on rbee's side
    rbee_infer_failures_total{reason}            infer jobs (door or keeper) the scheduler
                                                 failed: queue_full, worker_gone, no_room, …
    rbee_queue_waiting{model}                    requests in the scheduler's queue, by model
    rbee_replicas{model,kind}                    workers `model_serve` wants, and live ones
    rbee_slots{hive,model,state}                 worker slots busy / idle, from the beats
    rbee_hive_up{hive}                           1 while a hive's beats arrive, 0 once stale

Each queen has its own `CollectorRegistry` (never prometheus_client's global one), so
several queens in one process (tests) keep their counts apart. The door and the queen's
handlers call the small methods here (`request_done`, `waiting`, `first_token`, …); the
scheduler calls `spawned(hive, model)` and `infer_failed(reason)`, and hands its queue
and replicas over with `watch_scheduler`. Slots and queues are read when scraped, so
they are as fresh as the last beat and cost nothing between scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from queen.hives import HiveRegistry

METRICS_PATH = "/metrics"
# Seconds: a first token on a loaded worker is tens of ms; a first request may fetch and
# load a model for minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

OPENAPI_PATHS = {
    METRICS_PATH: {
        "get": {
            "summary": "Prometheus metrics: queue, slots, tokens, latencies, spawns, failures",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": {"description": "the queen has a token and the request lacks it"},
            },
        }
    }
}


class QueenMetrics:
    """One queen's metrics and the registry that exposes them."""

    def __init__(self, hives: HiveRegistry) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter(
            "rbee_requests",
            "OpenAI door answers by route and status",
            ["route", "status"],
            registry=r,
        )
        self._queue = Gauge(
            "rbee_queue_depth", "Requests waiting for a worker to take them", registry=r
        )
        self._wait = Histogram(
            "rbee_queue_wait_seconds",
            "Time from a request's arrival until a worker took it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._ttft = Histogram(
            "rbee_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._latency = Histogram(
            "rbee_request_duration_seconds",
            "Time from a request's arrival to the end of its answer",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._tokens = Counter(
            "rbee_generated_tokens",
            "Tokens generated (rate() gives tokens/s)",
            ["model"],
            registry=r,
        )
        self._prompt = Counter(
            "rbee_prompt_tokens",
            "Prompt tokens read, where workers count them",
            ["model"],
            registry=r,
        )
        self._spawns = Counter(
            "rbee_worker_spawns", "Workers started for prompts", ["hive", "model"], registry=r
        )
        self._failures = Counter(
            "rbee_failures",
            "Requests that failed on rbee's side, by reason",
            ["reason"],
            registry=r,
        )
        self._infer_failures = Counter(
            "rbee_infer_failures",
            "Infer jobs the scheduler failed on rbee's side, by reason",
            ["reason"],
            registry=r,
        )
        r.register(_SlotCollector(hives))

    def request_done(self, route: str, status: int) -> None:
        """The door answered a request on `route` with `status`."""
        self._requests.labels(route, str(status)).inc()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Counts a request in the queue while the block runs, and its wait when it ends."""
        self._queue.inc()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._queue.dec()
            self._wait.observe(time.perf_counter() - started)

    def first_token(self, model: str, seconds: float) -> None:
        self._ttft.labels(model).observe(seconds)

    def finished(
        self, model: str, seconds: float, *, tokens: int, prompt_tokens: int | None
    ) -> None:
        """A generation ended: its duration and the tokens it made (and read, if known)."""
        self._latency.labels(model).observe(seconds)
        self._tokens.labels(model).inc(tokens)
        if prompt_tokens is not None:
            self._prompt.labels(model).inc(prompt_tokens)

    def spawned(self, hive: str, model: str) -> None:
        """A worker was started on `hive` for `model` (the scheduler calls this)."""
        self._spawns.labels(hive, model).inc()

    def failed(self, reason: str) -> None:
        """A request failed on rbee's side: `worker_failed`, `unreachable`, `timeout`, …"""
        self._failures.labels(reason).inc()

    def infer_failed(self, reason: str) -> None:
        """An infer job failed in the scheduler: `queue_full`, `worker_gone`, `no_room`, …"""
        self._infer_failures.labels(reason).inc()

    def watch_scheduler(
        self,
        queued: Callable[[], Mapping[str, int]],
        replicas: Callable[[], list[dict[str, Any]]],
    ) -> None:
        """Report the scheduler's queue (`queued()`: model -> requests waiting) and the
        replicas it keeps (rows with model, replicas, live) at each scrape."""
        self.registry.register(_SchedulerCollector(queued, replicas))

    def text(self) -> bytes:
        """The exposition text of every metric, as a scrape reads it."""
        return generate_latest(self.registry)

    def routes(self) -> list[BaseRoute]:
        """`GET /metrics` (behind the queen's auth like every route not opened)."""

        async def metrics(request: Request) -> Response:
            return Response(self.text(), media_type=CONTENT_TYPE_LATEST)

        return [Route(METRICS_PATH, metrics, methods=["GET"])]


class _SlotCollector(Collector):
    """Slots busy and idle per hive and model, and hive liveness, from the last beats."""

    def __init__(self, hives: HiveRegistry) -> None:
        self.hives = hives

    def collect(self) -> Iterator[GaugeMetricFamily]:
        slots = GaugeMetricFamily(
            "rbee_slots",
            "Worker slots by state (from the hives' beats)",
            labels=["hive", "model", "state"],
        )
        up = GaugeMetricFamily(
            "rbee_hive_up", "1 while the hive beats, 0 once stale", labels=["hive"]
        )
        now = time.time()
        for hive in self.hives.all():
            up.add_metric([hive.id], 0.0 if hive.is_stale(now) else 1.0)
            busy: dict[str, int] = {}
            total: dict[str, int] = {}
            for worker in hive.workers:
                if worker.state in ("ready", "busy"):
                    total[worker.model] = total.get(worker.model, 0) + worker.slots
                    busy[worker.model] = busy.get(worker.model, 0) + min(
                        worker.slots_busy, worker.slots
                    )
            for model, count in sorted(total.items()):
                slots.add_metric([hive.id, model, "busy"], busy[model])
                slots.add_metric([hive.id, model, "idle"], count - busy[model])
        yield slots
        yield up


class _SchedulerCollector(Collector):
    """The scheduler's queue per model and the replicas it keeps, read at each scrape."""

    def __init__(
        self,
        queued: Callable[[], Mapping[str, int]],
        replicas: Callable[[], list[dict[str, Any]]],
    ) -> None:
        self.queued = queued
        self.replicas = replicas

    def collect(self) -> Iterator[GaugeMetricFamily]:
        waiting = GaugeMetricFamily(
            "rbee_queue_waiting",
            "Requests waiting in the scheduler's queue for a free slot, by model",
            labels=["model"],
        )
        for model, count in sorted(self.queued().items()):
            waiting.add_metric([model], count)
        kept = GaugeMetricFamily(
            "rbee_replicas",
            "Workers `keeper model serve` keeps (wanted, most) and those live",
            labels=["model", "kind"],
        )
        for row in self.replicas():
            kept.add_metric([row["model"], "wanted"], row["replicas"])
            kept.add_metric([row["model"], "most"], row["max_replicas"])
            kept.add_metric([row["model"], "live"], len(row["live"]))
        yield waiting
        yield kept
