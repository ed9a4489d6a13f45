"""The event log: numbering, thread-safe appends, JSONL persistence, replay from disk."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import pytest

from jobs.eventlog import EventStore, FileReader, LogReader, MemoryReader
from jobs.events import LogEntry, parse_jsonl


async def drain(reader: LogReader) -> list[LogEntry]:
    """Everything a reader yields until its log has ended."""
    out: list[LogEntry] = []
    with anyio.fail_after(10):
        while not reader.at_end():
            batch = await reader.take()
            out.extend(batch)
            if not batch:
                await reader.wait()
    return out


@pytest.mark.anyio
async def test_appends_from_threads_wake_an_async_reader(tmp_path: Path) -> None:
    """Appends from several threads reach a waiting reader with seqs 1..n, none lost or repeated."""
    store = EventStore(tmp_path)
    log = store.create("job-t")
    reader = MemoryReader(log, 0)
    seen: list[LogEntry] = []

    def writer(k: int) -> None:
        for i in range(2000):
            log.append("narration", {"w": k, "i": i})

    async with anyio.create_task_group() as tg:

        async def read() -> None:
            seen.extend(await drain(reader))

        tg.start_soon(read)
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        await anyio.to_thread.run_sync(lambda: [t.join() for t in threads])
        log.close("completed", {"state": "completed"})
    assert [e.seq for e in seen] == list(range(1, 8002))
    per_writer = [
        [e.to_event().data["i"] for e in seen[:-1] if e.to_event().data["w"] == k] for k in range(4)
    ]
    assert all(ids == list(range(2000)) for ids in per_writer)
    assert log.append("narration", {"late": True}) == 0  # closed logs drop stragglers


@pytest.mark.anyio
async def test_finished_log_replays_from_jsonl(tmp_path: Path) -> None:
    """A finished log, evicted from memory, is read back from its JSONL file identically."""
    store = EventStore(tmp_path, keep_finished=0)
    log = store.create("job-a")
    for i in range(5000):
        log.append("token", {"t": f"w{i}", "i": i})
    log.close("completed", {"state": "completed"})
    live = await drain(MemoryReader(log, 0))
    await store.finish(log)
    assert store.memory("job-a") is None
    reader = store.reader("job-a", 0, ("completed", None))
    assert isinstance(reader, FileReader)
    replayed = await drain(reader)
    assert [e.jsonl() for e in replayed] == [e.jsonl() for e in live]
    assert reader.terminator() == "[DONE]"
    tail = await drain(store.reader("job-a", 4990, ("completed", None)))
    assert [e.seq for e in tail] == list(range(4991, 5002))


@pytest.mark.anyio
async def test_torn_line_is_skipped_and_final_state_appended(tmp_path: Path) -> None:
    """After a kill mid-write the torn line is skipped; the recovery state gets the next seq."""
    store = EventStore(tmp_path)
    path = store.path("job-k")
    path.write_text(LogEntry.encode(1, "narration", {"a": 1}).jsonl() + '{"seq":2,"kind":"narr')
    await store.append_final("job-k", "failed", {"error": "crash"})
    entries = await drain(store.reader("job-k", 0, ("failed", "crash")))
    assert [(e.seq, e.kind) for e in entries] == [(1, "narration"), (2, "state")]
    assert entries[-1].to_event().data == {"error": "crash", "state": "failed"}


@pytest.mark.anyio
async def test_flusher_writes_running_log_in_batches(tmp_path: Path) -> None:
    """The flusher puts a running job's events on disk without the job ending."""
    store = EventStore(tmp_path, flush_interval_s=0.01)
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        log = store.create("job-f")
        for i in range(100):
            log.append("narration", {"i": i})
        with anyio.fail_after(5):
            while log.written < 100:  # noqa: ASYNC110 - the flusher owns the file
                await anyio.sleep(0.005)
        tg.cancel_scope.cancel()
    lines = store.path("job-f").read_text().splitlines()
    assert [parse_jsonl(line).seq for line in lines] == list(range(1, 101))  # type: ignore[union-attr]


def test_jsonl_round_trip_and_garbage() -> None:
    """parse_jsonl reads back what LogEntry writes and rejects torn or foreign lines."""
    entry = LogEntry.encode(7, "output", {"human": 'quote " and }'})
    back = parse_jsonl(entry.jsonl().rstrip("\n"))
    assert back is not None and (back.seq, back.kind, back.data_json) == (
        7,
        "output",
        entry.data_json,
    )
    for bad in ["", "{", '{"seq":x,"kind":"token","data":1}', '{"seq":1,"kind":"bogus","data":1}']:
        assert parse_jsonl(bad) is None
    assert entry.sse_frame().startswith(b"id: 7\nevent: output\ndata: {")
