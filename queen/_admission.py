"""Admission: requests for a model wait their turn in a fair, bounded FIFO queue.

A request that finds a free slot (and nobody waiting before it) goes straight to its
worker. Otherwise it takes a ticket at the back of its model's queue and only the head
may take the next free slot, so requests are served in the order they came. The queue
holds at most `max_queue` requests per model; one more is refused with QueueFull (503 and
a Retry-After guess), never left to spin. A request a worker refused anyway (503: still
loading) goes back to the head, where it keeps its turn.

Event-loop only, no lock: every change wakes the queue's waiters, which look again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import anyio

from jobs import JobError

MAX_QUEUE = 64  # requests per model waiting for a slot before more are refused (RBEE_MAX_QUEUE)
RETRY_AFTER_S = (1, 60)  # the Retry-After a refused request gets: at least, at most (seconds)
SMOOTHING = 0.3  # weight of the latest generation in a model's average generation time


class QueueFull(JobError):
    """Raised when a model's queue already holds `limit` requests: answer 503 and tell the
    client to come back after `retry_after` seconds (the OpenAI door's Retry-After)."""

    status = 503

    def __init__(self, model: str, limit: int, retry_after: int) -> None:
        self.model = model
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            f"the queue for {model} is full ({limit} waiting for a free slot, the most "
            f"RBEE_MAX_QUEUE allows); retry in {retry_after} s or start another worker for it"
        )

    @property
    def detail(self) -> dict[str, object]:
        return {"model": self.model, "queued": self.limit, "retry_after": self.retry_after}


@dataclass(eq=False)
class Ticket:
    """One request's place in its model's queue."""

    key: str


class Admission:
    """The per-model queues; `statistics()` says how many wait for each."""

    def __init__(self, max_queue: int = MAX_QUEUE) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.max_queue = max_queue
        self._queues: dict[str, list[Ticket]] = {}
        self._changed: dict[str, anyio.Event] = {}
        self._took_s: dict[str, float] = {}  # key -> average seconds a request held its slot

    def waiting(self, key: str) -> int:
        """How many requests wait in `key`'s queue."""
        return len(self._queues.get(key, ()))

    def statistics(self) -> dict[str, int]:
        """Requests waiting, by model (for /metrics and status)."""
        return {key: len(queue) for key, queue in self._queues.items() if queue}

    def join(self, key: str, *, front: bool = False, slots: int = 1) -> Ticket:
        """A ticket at the back of `key`'s queue (at the front for a request that had its
        turn and was refused by the worker: it is never refused here); raises QueueFull
        when the queue holds `max_queue` already (`slots`: how many the model has, for the
        Retry-After guess)."""
        queue = self._queues.setdefault(key, [])
        if not front and len(queue) >= self.max_queue:
            raise QueueFull(key, self.max_queue, self.retry_after(key, slots=slots))
        ticket = Ticket(key)
        if front:
            queue.insert(0, ticket)
        else:
            queue.append(ticket)
        return ticket

    def ahead(self, ticket: Ticket) -> int:
        """How many requests are before `ticket` in its queue (0: it is the head)."""
        return self._queues[ticket.key].index(ticket)

    def leave(self, ticket: Ticket) -> None:
        """Take `ticket` out of its queue (served, refused or cancelled); the others move up."""
        queue = self._queues.get(ticket.key, [])
        if ticket in queue:
            queue.remove(ticket)
            if not queue:
                del self._queues[ticket.key]
            self.notify(ticket.key)

    def notify(self, key: str) -> None:
        """Wake the requests waiting for `key`: a slot freed, a worker came, a place moved."""
        event = self._changed.pop(key, None)
        if event is not None:
            event.set()

    async def wait(self, key: str, *, timeout_s: float) -> None:
        """Block until `notify(key)` or `timeout_s` (beats bring slots without a notify)."""
        event = self._changed.setdefault(key, anyio.Event())
        with anyio.move_on_after(timeout_s):
            await event.wait()

    def record(self, key: str, seconds: float) -> None:
        """A request of `key` held its slot for `seconds`: feeds the Retry-After guess."""
        before = self._took_s.get(key)
        self._took_s[key] = (
            seconds if before is None else SMOOTHING * seconds + (1 - SMOOTHING) * before
        )

    def retry_after(self, key: str, *, slots: int = 1) -> int:
        """Seconds until a slot is likely free for one more request: the queue ahead of it
        shared among the slots, at the model's average time per request."""
        took = self._took_s.get(key, 1.0)
        guess = math.ceil(took * (self.waiting(key) + 1) / max(slots, 1))
        return min(max(guess, RETRY_AFTER_S[0]), RETRY_AFTER_S[1])
