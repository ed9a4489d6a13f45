"""A long `queen_status` watch keeps a bounded tail of its log in memory (issue 7 item 7)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest

from jobs.client import JobClient
from tests.support import queen_settings, start_queen

if TYPE_CHECKING:
    from tests.support import JobsKit

TAIL = 20  # a small tail, so a few hundred events pass it many times over
EVENTS = 400
WATCH = {"operation": "queen_status", "watch": True, "interval_s": 0.01}


@pytest.mark.anyio
async def test_watch_holds_a_bounded_tail_and_a_late_reader_gets_every_event(
    rbee_home: Path, kit: JobsKit
) -> None:
    """While a watch job logs hundreds of events, at most 2x the tail of written events stays in
    memory; a reader starting at seq 0 mid-job gets every seq once, from file then memory."""
    async with start_queen(queen_settings(rbee_home)) as queen, JobClient(queen.url) as client:
        store = queen.server.job_app.service.store
        store.memory_tail = TAIL
        job_id = await client.submit(WATCH)
        log = store.memory(job_id)
        assert log is not None
        most = 0

        async def watch_memory() -> None:
            nonlocal most
            while True:
                most = max(most, log.in_memory - (len(log) - log.written))
                await anyio.sleep(0.002)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_memory)
            await kit.wait_until(lambda: log.written >= EVENTS // 2, deadline_s=30)
            seqs: list[int] = []
            with anyio.fail_after(30):
                async for event in client.stream(job_id):
                    seqs.append(event.seq)
                    if event.seq >= EVENTS:
                        break
            tg.cancel_scope.cancel()
        assert await client.cancel(job_id) == "cancelled"
    assert seqs == list(range(1, EVENTS + 1))
    assert 0 < most <= 2 * TAIL
