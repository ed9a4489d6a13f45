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
from worker._logprobs import Entry, Logprobs
from worker._sampler import Sampler
from worker._stop_text import StopText
from worker.engine import Choice, Engine, Generation, Sampling, StopReason

PROMPT_CHUNK_S = 0.25  # seconds a step with prompt tokens aims at: the longest a running
# stream pauses for a new prompt, and the longest a cancel waits during one
PROMPT_CHUNK_MIN = 64  # tokens: the first chunk, and the least: a chat prompt with a system
# prompt (SmolLM2's: 43 tokens) in one step; smaller batches waste the CPU

SlotState = Literal["idle", "prompt", "generating"]


@dataclass(eq=False)
class Order:
    """One generation handed to the engine thread: prompt tokens, sampling, the tokens it
    may generate, in `n` choices (the prompt evaluated once, its cells copied to the other
    choices' slots), each starting with `echo` when given. `cancelled` may be set by any
    thread (then call `SlotLoop.cancel`)."""

    tokens: list[int]
    sampling: Sampling
    limit: int
    n: int = 1
    echo: str | None = None
    cancelled: bool = False
    # the engine thread's: each choice's end, and when its first text went out
    ended: dict[int, Choice] = field(default_factory=dict)
    started: float = 0.0
    first: float | None = None

    def end_choice(self, choice: Choice) -> Generation | None:
        """Record how a choice ended; the order's end once it was the last."""
        self.ended[choice.index] = choice
        if len(self.ended) < self.n:
            return None
        choices = tuple(self.ended[c] for c in range(self.n))
        first = self.first
        return Generation(
            tokens_out=sum(c.tokens_out for c in choices),
            stop_reason=choices[0].stop_reason,
            decode_time_ms=_ms(time.perf_counter() - self.started),
            first_token_ms=None if first is None else _ms(first - self.started),
            prompt_tokens=len(self.tokens),
            choices=choices,
        )


@dataclass(frozen=True, slots=True)
class Started:
    """An order got slot `slot`: its prompt is being evaluated."""

    slot: int


@dataclass(frozen=True, slots=True)
class Piece:
    """A piece of a choice's text, its index in that choice's stream, and the logprobs
    entries of the tokens it carries (None: not asked for)."""

    text: str
    index: int
    choice: int = 0
    logprobs: list[Entry] | None = None


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
    choice: int = 0  # which of the order's choices this slot generates
    leader: Slot | None = None  # the slot evaluating the prompt, for the other choices
    sampler: Sampler | None = None
    logprobs: Logprobs | None = None
    pending: list[Entry] = field(default_factory=list)  # entries of tokens with no text yet
    stop_text: StopText | None = None
    done: int = 0  # prompt tokens in the context
    count: int = 0  # tokens generated
    pieces: int = 0  # pieces of text sent
    index: int = -1  # batch index of the token whose logits it samples from, -1: none
    next_token: int = -1  # sampled, to be decoded in the next step

    def assign(self, order: Order, choice: int, leader: Slot | None, engine: Engine) -> None:
        """Take `order`'s `choice`: its own sampler (seeded for the choice), stop strings
        and logprobs; `leader`: the slot whose prompt cells it will copy."""
        self.state, self.order, self.choice, self.leader = "prompt", order, choice, leader
        self.sampler = Sampler(
            order.sampling,
            vocab=engine.vocab,
            n_vocab=engine.n_vocab,
            penalty_window=engine.ctx_size,
            choice=choice,
        )
        k = order.sampling.logprobs
        self.logprobs = None if k is None else Logprobs(engine.n_vocab, k, engine.piece)
        self.pending = []
        self.stop_text = StopText(order.sampling.stop)
        self.count = self.pieces = 0
        self.index = self.next_token = -1

    def free(self) -> None:
        """Back to idle; its cells (`cached`) stay for a later prompt that shares them."""
        if self.sampler is not None:
            self.sampler.close()
        self.state, self.order, self.sampler, self.stop_text = "idle", None, None, None
        self.leader, self.logprobs, self.pending = None, None, []
        self.index = -1


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
                    waiting = self._waiting.popleft()
                    self._send(waiting, _cancelled(waiting))
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
                self._send(order, _cancelled(order))
            while self._waiting and self._idle() >= self._waiting[0].n:
                order = self._waiting.popleft()
                try:
                    self._start(order)
                except Exception as exc:  # a sampler llama.cpp would not make: the order's
                    if any(s.order is order for s in self.slots):
                        self._end(next(s for s in self.slots if s.order is order), exc)
                    else:
                        self._send(order, exc)
        return True

    def _any_busy(self) -> bool:
        return any(s.state != "idle" for s in self.slots)

    def _idle(self) -> int:
        return sum(s.state == "idle" for s in self.slots)

    def _pick_slot(self, order: Order) -> Slot:
        """The idle slot whose cells already hold the longest start of the prompt (a
        conversation's earlier turns, a repeated prompt), as llama.cpp's server picks."""
        idle = [s for s in self.slots if s.state == "idle"]
        return max(idle, key=lambda s: _common(s.cached, order.tokens))

    def _start(self, order: Order) -> None:
        """Give `order` its slots: the one that evaluates the prompt, and one more for each
        other choice, which takes a copy of the prompt's cells once they are made."""
        import llama_cpp

        if self._memory is None:  # orders come once the model is loaded: its context is made
            self._memory = llama_cpp.llama_get_memory(self.engine.ctx)
        order.started = time.perf_counter()
        slot = self._pick_slot(order)

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
        slot.done = keep
        slot.assign(order, 0, None, self.engine)
        for choice in range(1, order.n):
            other = next(s for s in self.slots if s.state == "idle")
            llama_cpp.llama_memory_seq_rm(self._memory, other.id, -1, -1)
            other.cached, other.done = [], 0
            other.assign(order, choice, slot, self.engine)
        self._send(order, Started(slot.id))
        for each in self.slots:  # the prompt's text first, in every choice
            if order.echo and each.order is order:
                self._send(order, Piece(order.echo, 0, each.choice))
                each.pieces = 1

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
        prompting = [s for s in self.slots if s.state == "prompt" and s.leader is None]
        budget = offered = min(self._chunk, batch.room)
        for slot in sorted(prompting, key=lambda s: s.order.started if s.order else 0.0):
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
        took = max(time.perf_counter() - began, 1e-6)
        # Resized by a full chunk or an overrun only: a prompt's short tail says nothing
        # of a full chunk's cost (sizing from it left the next chat prompt two steps).
        if prompt_tokens and (prompt_tokens == offered or took > PROMPT_CHUNK_S):
            # Sized as if a chunk's cost grew with its square (attention spans the chunk),
            # at most doubling: a rate measured on a small chunk overestimates a big one's
            # speed, and a chunk sized from it stalled the streams for a second.
            grown = int(prompt_tokens * math.sqrt(PROMPT_CHUNK_S / took))
            self._chunk = max(PROMPT_CHUNK_MIN, min(batch.capacity, 2 * prompt_tokens, grown))
        for slot in self.slots:  # the other choices take the prompt's cells and logits
            leader = slot.leader
            if leader is not None and leader.index >= 0 and slot.state == "prompt":
                import llama_cpp

                llama_cpp.llama_memory_seq_cp(self._memory, leader.id, slot.id, -1, -1)
                slot.cached, slot.done = list(leader.cached), leader.done
                slot.index, slot.leader = leader.index, None
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
        if slot.logprobs is not None:
            import llama_cpp

            logits = llama_cpp.llama_get_logits_ith(self.engine.ctx, slot.index)
            slot.pending.append(slot.logprobs.entry(logits, token))
        text, stopped = slot.stop_text.push(self.engine.piece(token))
        self._piece(slot, text)
        if stopped:
            self._finish(slot, "stop")
        elif slot.count >= slot.order.limit:
            self._finish(slot, "length")
        else:
            slot.state, slot.next_token = "generating", token

    def _piece(self, slot: Slot, text: str, *, last: bool = False) -> None:
        """Send `text` with the entries of the tokens it carries; at the `last`, entries
        still held (tokens of a stop string, bytes of no character) go out even alone."""
        order = slot.order
        if order is None or not (text or (last and slot.pending)):
            return
        if order.first is None:
            order.first = time.perf_counter()
        entries = None
        if slot.logprobs is not None:
            entries, slot.pending = slot.pending, []
        self._send(order, Piece(text, slot.pieces, slot.choice, entries))
        slot.pieces += 1

    def _finish(self, slot: Slot, reason: StopReason) -> None:
        """End the slot's choice; the order's end goes out with its last choice's."""
        order = slot.order
        assert order is not None
        if reason != "cancelled" and slot.stop_text is not None:
            self._piece(slot, slot.stop_text.flush(), last=True)
        end = order.end_choice(Choice(slot.choice, slot.count, reason))
        slot.free()
        if end is not None:
            self._send(order, end)

    def _end(self, slot: Slot, outcome: Exception) -> None:
        """Fail the slot's order: send it the exception and free all its slots."""
        order = slot.order
        assert order is not None
        for other in self.slots:
            if other.order is order:
                if self._memory is not None:
                    import llama_cpp

                    # A failed decode leaves the sequence's cells unknown: forget them.
                    llama_cpp.llama_memory_seq_rm(self._memory, other.id, -1, -1)
                other.cached = []
                other.free()
        self._send(order, outcome)

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


def _cancelled(order: Order) -> Generation:
    """The end of an order cancelled before it had a slot."""
    choices = tuple(Choice(c, 0, "cancelled") for c in range(order.n))
    return Generation(0, "cancelled", 0.0, None, 0, choices)
