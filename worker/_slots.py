"""The engine thread: every running generation advanced one token per step, in one batch.

Modelled on llama.cpp's server (`update_slots`): a step puts the next token of every
generating slot into one llama_batch, fills what room is left with a chunk of the prompts
waiting to be evaluated, decodes it once, then samples each slot from its own logits
with its own sampler chain. So a new request's prompt is evaluated between the tokens of
the running streams (continuous batching), which pause for one chunk at most; the chunk
is sized, at the speed of the last step, to take about PROMPT_CHUNK_S. Cancel is read at
every step, so it takes effect within a token or a chunk, whatever the slot is doing.

Only the engine thread touches the llama.cpp context. Other threads hand orders in
(`submit`, `cancel`, `close`, under one condition) and read `statistics()`; results go out
through `outbox`, and `notify()` (a non-blocking wake-up) tells the event loop to read it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from worker._batch import Batch
from worker._sampler import Sampler
from worker._stop_text import StopText
from worker.engine import Engine, Generation, Sampling, StopReason

PROMPT_CHUNK_S = 0.25  # seconds a step with prompt tokens aims at: the longest a running
# stream pauses for a new prompt, and the longest a cancel waits during one
PROMPT_CHUNK_MIN = 32  # tokens: the first chunk, and the least (smaller batches waste the CPU)

SlotState = Literal["idle", "prompt", "generating"]


@dataclass(eq=False)
class Order:
    """One generation handed to the engine thread: prompt tokens, sampling, the tokens it
    may generate. `cancelled` may be set by any thread (then call `SlotLoop.cancel`)."""

    tokens: list[int]
    sampling: Sampling
    limit: int
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class Started:
    """An order got slot `slot`: its prompt is being evaluated."""

    slot: int


Piece = tuple[str, int]  # a piece of text and its index in the stream
# What an order gets, in this order: Started (unless cancelled while waiting), pieces,
# then its end: a Generation, or the Exception that failed it.
Outcome = Started | Piece | Generation | Exception


@dataclass(eq=False)
class Slot:
    """One sequence of the context. `cached` is what its KV cells hold, in order."""

    id: int
    state: SlotState = "idle"
    cached: list[int] = field(default_factory=list)
    order: Order | None = None
    sampler: Sampler | None = None
    stop_text: StopText | None = None
    done: int = 0  # prompt tokens in the context
    count: int = 0  # tokens generated
    pieces: int = 0  # pieces of text sent
    index: int = -1  # batch index of the token whose logits it samples from, -1: none
    next_token: int = -1  # sampled, to be decoded in the next step
    started: float = 0.0
    first: float | None = None


class SlotLoop:
    """`engine.parallel` slots over the engine's context, run by `run()` on one thread."""

    def __init__(self, engine: Engine, *, notify: Callable[[], None]) -> None:
        self.engine = engine
        self.slots = [Slot(i) for i in range(engine.parallel)]
        self.outbox: deque[tuple[Order, Outcome]] = deque()
        self._notify = notify
        self._cond = threading.Condition()
        self._waiting: deque[Order] = deque()
        self._closed = False
        self._chunk = PROMPT_CHUNK_MIN
        self._memory: Any = None

    def submit(self, order: Order) -> None:
        """Queue `order` for the next free slot (any thread)."""
        with self._cond:
            self._waiting.append(order)
            self._cond.notify()

    def cancel(self, order: Order) -> None:
        """Stop `order` within a step (or before it starts); it still gets its end."""
        order.cancelled = True
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        """Make `run()` return within a step; orders not finished end `cancelled`."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def statistics(self) -> dict[str, Any]:
        """Busy slots and each slot's state, for /health (any thread: plain reads)."""
        busy = [s for s in self.slots if s.state != "idle"]
        return {
            "slots_busy": len(busy),
            "slot_info": [
                {"id": s.id, "state": s.state, "tokens": s.count, "prompt_tokens": s.done}
                for s in self.slots
            ],
        }

    def run(self) -> None:
        """Serve orders until `close()`. Blocks: the engine thread's whole life."""
        batch: Batch | None = None
        try:
            while self._admit():
                if batch is None:
                    batch = Batch(self.engine.batch_tokens)
                try:
                    self._step(batch)
                except Exception as exc:  # a failed step fails its orders, not the worker
                    for slot in self.slots:
                        if slot.order is not None:
                            self._end(slot, exc)
                if self.outbox:
                    self._notify()
        finally:
            for slot in self.slots:
                if slot.order is not None:
                    self._finish(slot, "cancelled")
            with self._cond:
                while self._waiting:
                    self._send(self._waiting.popleft(), _cancelled())
            if batch is not None:
                batch.close()
            self._notify()

    def _admit(self) -> bool:
        """Wait for work; put waiting orders into free slots. False once closed."""
        with self._cond:
            while not self._closed and not self._waiting and not self._any_busy():
                self._cond.wait()
            if self._closed:
                return False
            for order in [o for o in self._waiting if o.cancelled]:
                self._waiting.remove(order)
                self._send(order, _cancelled())
            while self._waiting and not self._any_busy(all_of=True):
                self._start(self._pick_slot(self._waiting[0]), self._waiting.popleft())
        return True

    def _any_busy(self, *, all_of: bool = False) -> bool:
        test = all if all_of else any
        return test(s.state != "idle" for s in self.slots)

    def _pick_slot(self, order: Order) -> Slot:
        """The idle slot whose cells already hold the longest start of the prompt (a
        conversation's earlier turns, a repeated prompt), as llama.cpp's server picks."""
        idle = [s for s in self.slots if s.state == "idle"]
        return max(idle, key=lambda s: _common(s.cached, order.tokens))

    def _start(self, slot: Slot, order: Order) -> None:
        import llama_cpp

        if self._memory is None:  # orders come once the model is loaded: its context is made
            self._memory = llama_cpp.llama_get_memory(self.engine.ctx)

        # What the slot holds of the prompt is kept; the last token is always evaluated,
        # so sampling reads fresh logits.
        keep = min(_common(slot.cached, order.tokens), len(order.tokens) - 1)
        if self._memory is None or not llama_cpp.llama_memory_seq_rm(
            self._memory, slot.id, keep, -1
        ):
            keep = 0  # a recurrent model's state cannot be cut: evaluate it all
            if self._memory is not None:
                llama_cpp.llama_memory_seq_rm(self._memory, slot.id, -1, -1)
        slot.cached = order.tokens[:keep]
        slot.state, slot.order, slot.done = "prompt", order, keep
        slot.sampler = Sampler(order.sampling)
        slot.stop_text = StopText(order.sampling.stop)
        slot.count = slot.pieces = 0
        slot.index = slot.next_token = -1
        slot.started, slot.first = time.perf_counter(), None
        self._send(order, Started(slot.id))

    def _step(self, batch: Batch) -> None:
        """One decode: the next token of every generating slot, then prompt chunks."""
        batch.clear()
        for slot in self.slots:
            slot.index = -1
            if slot.order is not None and slot.order.cancelled:
                self._finish(slot, "cancelled")
            elif slot.state == "generating":
                slot.index = batch.add(
                    [slot.next_token], len(slot.cached), slot.id, logits_last=True
                )
                slot.cached.append(slot.next_token)
        generating = batch.size
        prompting = [s for s in self.slots if s.state == "prompt"]
        budget = min(self._chunk, batch.room)
        for slot in sorted(prompting, key=lambda s: s.started):
            if budget <= 0:
                break
            assert slot.order is not None
            chunk = slot.order.tokens[slot.done : slot.done + budget]
            last = slot.done + len(chunk) == len(slot.order.tokens)
            index = batch.add(chunk, slot.done, slot.id, logits_last=last)
            slot.index = index if last else -1
            slot.done += len(chunk)
            slot.cached.extend(chunk)
            budget -= len(chunk)
        if batch.size == 0:
            return
        began = time.perf_counter()
        code = batch.decode(self.engine.ctx)
        if code != 0:
            raise RuntimeError(
                f"llama_decode returned {code} for a batch of {batch.size} tokens; "
                "retry the request, or lower --parallel or --ctx-size if it persists"
            )
        prompt_tokens = batch.size - generating
        if prompt_tokens:
            # Sized as if a chunk's cost grew with its square (attention spans the chunk),
            # at most doubling: a rate measured on a small chunk overestimates a big one's
            # speed, and a chunk sized from it stalled the streams for a second.
            took = max(time.perf_counter() - began, 1e-6)
            grown = int(prompt_tokens * math.sqrt(PROMPT_CHUNK_S / took))
            self._chunk = max(PROMPT_CHUNK_MIN, min(batch.capacity, 2 * prompt_tokens, grown))
        for slot in self.slots:
            if slot.index >= 0:
                self._sample(slot)

    def _sample(self, slot: Slot) -> None:
        assert slot.order is not None and slot.sampler is not None and slot.stop_text
        if slot.order.cancelled:
            self._finish(slot, "cancelled")
            return
        token = slot.sampler.sample(self.engine.ctx, slot.index)
        if self.engine.is_end(token):
            self._finish(slot, "stop")
            return
        slot.count += 1
        text, stopped = slot.stop_text.push(self.engine.piece(token))
        self._piece(slot, text)
        if stopped:
            self._finish(slot, "stop")
        elif slot.count >= slot.order.limit:
            self._finish(slot, "length")
        else:
            slot.state, slot.next_token = "generating", token

    def _piece(self, slot: Slot, text: str) -> None:
        if text and slot.order is not None:
            if slot.first is None:
                slot.first = time.perf_counter()
            self._send(slot.order, (text, slot.pieces))
            slot.pieces += 1

    def _finish(self, slot: Slot, reason: StopReason) -> None:
        assert slot.order is not None
        if reason != "cancelled" and slot.stop_text is not None:
            self._piece(slot, slot.stop_text.flush())
        now = time.perf_counter()
        self._end(
            slot,
            Generation(
                tokens_out=slot.count,
                stop_reason=reason,
                decode_time_ms=round((now - slot.started) * 1000, 3),
                first_token_ms=None if slot.first is None else _ms(slot.first - slot.started),
                prompt_tokens=len(slot.order.tokens),
            ),
        )

    def _end(self, slot: Slot, outcome: Generation | Exception) -> None:
        """Send the order its end and free the slot."""
        assert slot.order is not None
        if isinstance(outcome, Exception) and self._memory is not None:
            import llama_cpp

            # A failed decode leaves the sequence's cells unknown: forget them.
            llama_cpp.llama_memory_seq_rm(self._memory, slot.id, -1, -1)
            slot.cached = []
        self._send(slot.order, outcome)
        if slot.sampler is not None:
            slot.sampler.close()
        slot.state, slot.order, slot.sampler, slot.stop_text = "idle", None, None, None
        slot.index = -1

    def _send(self, order: Order, outcome: Outcome) -> None:
        self.outbox.append((order, outcome))


def _common(a: list[int], b: list[int]) -> int:
    """Length of the common start of `a` and `b`."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _cancelled() -> Generation:
    """The end of an order cancelled before it had a slot."""
    return Generation(0, "cancelled", 0.0, None, 0)
