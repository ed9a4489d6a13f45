"""Heartbeats against a real loopback HTTP server: beats, backoff while away, one line each way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from hive.heartbeat import Heartbeat
from jobs.beats import WorkerInfo
from narration_core import capture_narration
from tests.hive.conftest import BeatRecorder

pytestmark = pytest.mark.anyio


async def wait_until(predicate: Callable[[], bool], *, deadline_s: float = 10.0) -> None:
    with anyio.fail_after(deadline_s):
        while not predicate():  # noqa: ASYNC110 - polling a counter another task moves
            await anyio.sleep(0.005)


async def test_beats_carry_the_hive_and_its_workers(tmp_path: Path) -> None:
    """Each beat names the hive, its URL and version, and the workers the supervisor reports."""
    worker = WorkerInfo(
        worker_id="w-1", pid=4242, port=9001, url="http://127.0.0.1:9001", model="tiny"
    )
    recorder = BeatRecorder(tmp_path)
    async with recorder.serving(), anyio.create_task_group() as tg:
        beat = Heartbeat(
            recorder.url,
            hive_id="gpu1",
            url="http://127.0.0.1:7835",
            version="9.9",
            workers=lambda: [worker],
            interval_s=0.05,
        )
        tg.start_soon(beat.run)
        beats = await recorder.wait_beats(2)
        tg.cancel_scope.cancel()
    assert {(b.hive_id, b.url, b.version) for b in beats} == {
        ("gpu1", "http://127.0.0.1:7835", "9.9")
    }
    assert beats[0].workers == [worker]
    assert beats[1].ts >= beats[0].ts


async def test_queen_away_backs_off_and_says_so_once_each_way(tmp_path: Path) -> None:
    """While the queen is down the hive narrates one warning (not one per beat), backs off,
    and says once that the queen is back when beats are accepted again."""
    recorder = BeatRecorder(tmp_path / "queen")
    with capture_narration() as seen:
        async with anyio.create_task_group() as tg:
            async with recorder.serving():
                beat = Heartbeat(
                    recorder.url,
                    hive_id="h",
                    url="http://127.0.0.1:1",
                    version="1",
                    workers=list,
                    interval_s=0.02,
                    backoff_max_s=0.08,
                )
                tg.start_soon(beat.run)
                await recorder.wait_beats(1)
            accepted, tried = beat.sent, beat.attempts
            await wait_until(lambda: beat.attempts >= tried + 4)  # 4 failures, backing off
            assert beat.sent == accepted and beat.reachable is False
            async with recorder.serving():
                await recorder.wait_beats(len(recorder.beats) + 2)
                tg.cancel_scope.cancel()
    lines = [e.human for e in seen.events if e.action == "heartbeat"]
    assert len(lines) == 3, lines
    assert "reachable;" in lines[0]
    assert "unreachable" in lines[1] and "backoff up to 0.08 s" in lines[1]
    assert "reachable again" in lines[2]
