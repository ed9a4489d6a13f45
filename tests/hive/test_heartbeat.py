"""Heartbeats against a real loopback HTTP server: beats, backoff while away, one line each way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import anyio.abc
import pytest

from hive.heartbeat import LEAVE_S, Heartbeat
from jobs import WorkerInfo
from jobs.client import JobClient
from narration_core import capture_narration
from tests.support import (
    BeatRecorder,
    await_until,
    closed_hive_url,
    hive_token,
    queen_settings,
    start_queen,
)

pytestmark = pytest.mark.anyio
QUEEN_TOKEN = "q-token"


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


async def test_beats_after_the_first_say_whether_the_hive_can_serve_a_split(
    tmp_path: Path,
) -> None:
    """The first beat does not wait for libggml to be read (`supports_rpc` None: not said
    yet); the next ones say this build serves splits (GGML_RPC on), with no reason."""
    recorder = BeatRecorder(tmp_path)
    async with recorder.serving(), anyio.create_task_group() as tg:
        beat = Heartbeat(
            recorder.url, hive_id="gpu1", url="http://127.0.0.1:7835", version="9.9",
            workers=list, interval_s=0.05,
        )  # fmt: skip
        tg.start_soon(beat.run)
        beats = await recorder.wait_beats(3)
        tg.cancel_scope.cancel()
    assert beats[0].supports_rpc is None
    assert (beats[-1].supports_rpc, beats[-1].rpc_reason) == (True, None)


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
            await await_until(lambda: beat.attempts >= tried + 4)  # 4 failures, backing off
            assert beat.sent == accepted and beat.reachable is False
            async with recorder.serving():
                await recorder.wait_beats(len(recorder.beats) + 2)
                tg.cancel_scope.cancel()
    lines = [e.human for e in seen.events if e.action == "heartbeat"]
    assert len(lines) == 3, lines
    assert "reachable;" in lines[0]
    assert "unreachable" in lines[1] and "backoff up to 0.08 s" in lines[1]
    assert "reachable again" in lines[2]


async def test_leaving_says_goodbye_with_the_beats_credential(rbee_home: Path) -> None:
    """`leave()` ends the beats and sends a goodbye carrying the hive's credential: a real
    queen (with a token of its own, which beats do not use) drops the hive at once, and
    `run` returns."""
    settings = dataclasses.replace(queen_settings(rbee_home), token=QUEEN_TOKEN)
    async with start_queen(settings) as queen:
        beat = Heartbeat(
            queen.url,
            hive_id="gpu1",
            url="http://127.0.0.1:7835",
            version="9.9",
            workers=list,
            token=hive_token(rbee_home, "gpu1"),
            interval_s=0.05,
        )
        with capture_narration() as seen:
            async with anyio.create_task_group() as tg:
                tg.start_soon(beat.run)
                await await_until(lambda: beat.sent >= 1)  # the queen took a beat
                assert "gpu1" in await listed(queen.url)
                beat.leave()
        assert beat.said_goodbye
        assert "gpu1" not in await listed(queen.url)
    lines = [e.human for e in seen.events if e.action == "goodbye"]
    assert len(lines) == 1 and "Told the queen" in lines[0], lines


async def test_a_queen_that_is_away_gets_one_warning_and_the_hive_stops_anyway() -> None:
    """With the queen gone, the goodbye fails with one warning and `run` still returns at
    once (the hive's stop does not wait for the queen)."""
    queen_url = closed_hive_url()  # refuses connections, as a stopped queen's port does
    beat = Heartbeat(queen_url, hive_id="h", url="http://127.0.0.1:1", version="1", workers=list)
    beat.leave()  # before the first beat: run sends none and says goodbye at once
    with capture_narration() as seen, anyio.fail_after(5):
        await beat.run()
    assert not beat.said_goodbye and beat.attempts == 0
    lines = [(e.level, e.human) for e in seen.events if e.action == "goodbye"]
    assert len(lines) == 1 and lines[0][0] == "warn" and "Could not tell" in lines[0][1]


async def test_a_queen_that_hangs_cannot_hold_the_stop_up() -> None:
    """A queen that accepts connections and never answers: after `leave()` the beat in
    flight and the goodbye are given up within LEAVE_S, with one warning."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def never_answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await anyio.sleep_forever()

    with capture_narration() as seen:
        async with listener, anyio.create_task_group() as server:
            server.start_soon(listener.serve, never_answer)
            beat = Heartbeat(
                f"http://127.0.0.1:{port}",
                hive_id="h",
                url="http://127.0.0.1:1",
                version="1",
                workers=list,
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(beat.run)
                await await_until(lambda: beat.attempts == 1)  # a beat in flight, unanswered
                began = anyio.current_time()
                beat.leave()
            took = anyio.current_time() - began
            server.cancel_scope.cancel()
    assert took < LEAVE_S + 0.5, took
    assert beat.sent == 0 and not beat.said_goodbye
    lines = [e.human for e in seen.events if e.action == "goodbye"]
    assert len(lines) == 1 and "no answer within" in lines[0], lines


async def listed(url: str) -> list[str]:
    """The ids of the hives the queen at `url` lists in its status."""
    async with JobClient(url, token=QUEEN_TOKEN) as client:
        job_id = await client.submit({"operation": "queen_status"})
        async for event in client.stream(job_id):
            if event.is_final:
                return [h["hive_id"] for h in event.data["result"]["hives"]]
    raise AssertionError("no final state")
