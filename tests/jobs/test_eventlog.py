"""The event log: numbering, thread-safe appends, JSONL persistence, replay from disk."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from jobs import LogEntry, iter_jsonl, parse_jsonl
from jobs.server import EventStore, FileReader, LogReader


async def drain(reader: LogReader) -> list[LogEntry]:
    """Everything a reader yields until its log has ended."""
    out: list[LogEntry] = []
    try:
        with anyio.fail_after(10):
            while not reader.at_end():
                batch = await reader.take()
                out.extend(batch)
                if not batch:
                    await reader.wait()
    finally:
        reader.close()
    return out


@pytest.mark.anyio
async def test_appends_from_threads_wake_an_async_reader(tmp_path: Path) -> None:
    """Appends from several threads reach a waiting reader with seqs 1..n, none lost or repeated."""
    store = EventStore(tmp_path)
    log = store.create("job-t")
    reader = store.reader(log.job_id, 0, None)
    seen: list[LogEntry] = []

    def writer(k: int) -> None:
        for i in range(2000):
            log.append("narration", {"w": k, "i": i})

    async with anyio.create_task_group() as tg:
        await tg.start(store.run)

        async def read() -> None:
            seen.extend(await drain(reader))

        tg.start_soon(read)
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        await anyio.to_thread.run_sync(lambda: [t.join() for t in threads])
        log.close("completed", {"state": "completed"})
        with anyio.fail_after(10):
            while len(seen) < 8001:  # noqa: ASYNC110 - the reader task fills it
                await anyio.sleep(0.005)
        tg.cancel_scope.cancel()
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
    await store.flush(log)
    live = await drain(store.reader(log.job_id, 0, None))
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
async def test_torn_line_is_dropped_and_final_state_appended(tmp_path: Path) -> None:
    """After a kill mid-write the torn line is cut off; the recovery state gets the next seq."""
    store = EventStore(tmp_path)
    path = store.path("job-k")
    whole = LogEntry.encode(1, "narration", {"a": 1}).jsonl()
    path.write_text(whole + '{"seq":2,"kind":"narr')
    assert await store.recover("job-k", {"error": "crash"}) == ("failed", "crash")
    entries = await drain(store.reader("job-k", 0, ("failed", "crash")))
    assert [(e.seq, e.kind) for e in entries] == [(1, "narration"), (2, "state")]
    assert entries[-1].to_event().data == {"error": "crash", "state": "failed"}
    assert path.read_text().startswith(whole + '{"seq":2,"kind":"state"')


@pytest.mark.anyio
async def test_recovery_keeps_the_final_state_a_log_already_has(tmp_path: Path) -> None:
    """A log that already ends in a final state gets no second one when a crash is recovered."""
    store = EventStore(tmp_path)
    path = store.path("job-d")
    lines = [
        LogEntry.encode(1, "state", {"state": "running"}).jsonl(),
        LogEntry.encode(2, "state", {"state": "failed", "error": "the disk is full"}).jsonl(),
    ]
    path.write_text("".join(lines))
    assert await store.recover("job-d", {"error": "crash"}) == ("failed", "the disk is full")
    assert path.read_text() == "".join(lines)


@pytest.mark.anyio
async def test_readers_see_only_events_that_are_in_the_file(tmp_path: Path) -> None:
    """An appended event reaches no reader until the flusher has written it to the file."""
    store = EventStore(tmp_path)
    log = store.create("job-w")
    reader = store.reader(log.job_id, 0, None)
    log.append("narration", {"i": 1})
    assert await reader.take() == [] and not store.path("job-w").exists()
    await store.flush(log)
    assert [e.seq for e in await reader.take()] == [1]
    assert store.path("job-w").read_text().count("\n") == 1


@pytest.mark.anyio
async def test_running_log_keeps_a_bounded_tail_and_late_readers_read_the_file(
    tmp_path: Path,
) -> None:
    """A long running log holds at most ~2x its tail in memory; readers that start late or fall
    behind read the file, then memory, and get every seq exactly once."""
    tail = 50
    store = EventStore(tmp_path, memory_tail=tail)
    log = store.create("job-m")
    most_in_memory = 0
    late: list[LogEntry] = []
    slow: list[LogEntry] = []

    async def read_slowly() -> None:
        reader = store.reader(log.job_id, 0, None)
        try:
            while not reader.at_end():
                batch = await reader.take()
                slow.extend(batch)
                await anyio.sleep(0.001 if batch else 0)  # falls behind the tail, catches up
                if not batch:
                    await reader.wait()
        finally:
            reader.close()

    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        tg.start_soon(read_slowly)
        for i in range(6000):
            log.append("narration", {"i": i})
            if i % 97 == 0:
                await anyio.lowlevel.checkpoint()  # let the flusher write a batch
                most_in_memory = max(most_in_memory, log.in_memory - (len(log) - log.written))
            if i == 3000:

                async def read_late() -> None:
                    late.extend(await drain(store.reader(log.job_id, 10, None)))

                tg.start_soon(read_late)
        log.close("completed", {"state": "completed"})
        with anyio.fail_after(20):
            while len(slow) < 6001 or len(late) < 5991:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert most_in_memory <= 2 * tail
    assert [e.seq for e in slow] == list(range(1, 6002))
    assert [e.seq for e in late] == list(range(11, 6002))


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


@pytest.mark.anyio
async def test_small_writes_stay_on_the_loop_big_or_slow_ones_go_to_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small batch is written on the event loop's thread (no worker-thread hop before its
    readers see it); a batch over INLINE_WRITE_BYTES, and the write after a slow inline one,
    go to a worker thread."""
    import os
    import time

    from jobs.server import _eventlog as eventlog  # its write path's internals

    real_write = os.write
    on_loop: list[bool] = []  # per write: did it run on the loop's thread?
    slow = threading.Event()

    def write(fd: int, data: bytes) -> int:
        on_loop.append(threading.get_ident() == loop_thread)
        if slow.is_set():
            time.sleep(2 * eventlog.SLOW_WRITE_S)
        return real_write(fd, data)

    loop_thread = threading.get_ident()
    monkeypatch.setattr(os, "write", write)
    store = EventStore(tmp_path)
    log = store.create("job-w")
    for big, is_slow in [(False, False), (True, False), (False, True), (False, False)]:
        slow.set() if is_slow else slow.clear()
        log.append("output", {"human": "x" * (eventlog.INLINE_WRITE_BYTES if big else 10)})
        await store.flush(log)
    await store.flush(log, close=True)
    assert on_loop == [True, False, True, False]
    lines = store.path("job-w").read_text().splitlines()
    assert [parse_jsonl(line).seq for line in lines] == [1, 2, 3, 4]  # type: ignore[union-attr]


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


def test_chunk_scan_reads_exactly_the_lines_parse_jsonl_reads() -> None:
    """iter_jsonl over a chunk yields what parse_jsonl yields line by line: whole entries only,
    torn and foreign lines skipped, data holding braces, quotes and newlines escaped intact."""
    lines = [
        LogEntry.encode(1, "narration", {"human": 'a } b " c \n d'}).jsonl(),
        "garbage\n",
        '{"seq":2,"kind":"bogus","data":1}\n',
        LogEntry.encode(3, "token", {"t": "x", "i": 0}).jsonl(),
        "\n",
        '{"seq":4,"kind":"state","data":{"state":"fai',  # torn by a kill
    ]
    text = "".join(lines)
    by_line = [e for line in text.splitlines() if (e := parse_jsonl(line)) is not None]
    scanned = list(iter_jsonl(text))
    assert [(e.seq, e.kind, e.data_json) for e in scanned] == [
        (e.seq, e.kind, e.data_json) for e in by_line
    ]
    assert [e.seq for e in scanned] == [1, 3]


@pytest.mark.anyio
async def test_an_io_error_ends_only_the_log_that_hit_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO on one log's file (injected at os.write, for that file only) ends that log `failed`
    with the reason, without a gap in its seqs; its final event reaches readers once a write
    works again; another log keeps writing throughout."""
    import errno
    import os

    from jobs import StorageError

    aborted: list[tuple[str, StorageError]] = []
    store = EventStore(
        tmp_path, flush_interval_s=0.01, on_abort=lambda log, err: aborted.append((log.job_id, err))
    )
    real_write = os.write
    broken: set[int] = set()

    def write(fd: int, data: bytes) -> int:
        if fd in broken:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    async with anyio.create_task_group() as tg:
        await tg.start(store.run)
        bad, good = store.create("job-bad"), store.create("job-good")
        bad.append("narration", {"i": 1})
        good.append("narration", {"i": 1})
        with anyio.fail_after(5):
            while bad.written < 1 or good.written < 1:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        bad_file = store.file(bad)
        assert bad_file is not None and bad_file.fd is not None
        broken.add(bad_file.fd)
        bad.append("narration", {"i": 2})  # refused: dropped, never seen by a reader
        good.append("narration", {"i": 2})
        with anyio.fail_after(5):
            while not aborted or good.written < 2:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        assert aborted[0][0] == "job-bad" and "Input/output error" in str(aborted[0][1])
        assert bad.final == ("failed", str(aborted[0][1])) and not bad.is_ended
        assert bad.append("narration", {"late": 1}) == 0
        broken.clear()  # the disk works again: the retry writes the final event
        seen = await drain(store.reader(bad.job_id, 0, None))
        good.close("completed", {"state": "completed"})
        await store.finish(good)
        tg.cancel_scope.cancel()
    assert [(e.seq, e.kind) for e in seen] == [(1, "narration"), (2, "state")]
    assert seen[-1].to_event().data["error"] == str(aborted[0][1])
    assert [e.seq for e in await drain(store.reader("job-good", 0, None))] == [1, 2, 3]
