"""Heartbeats: the queen learns hives and their workers from beats and marks silent ones stale."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from jobs import STALE_AFTER_BEATS, HiveBeat, WorkerInfo
from jobs.client import JobClient
from queen.hives import HiveRegistry
from tests.support import BeatAuth, hive_token, queen_settings, start_queen

DEADLINE_S = 10.0


def beat(hive_id: str = "gpu1", *, workers: int = 1, url: str = "http://10.0.0.5:7835") -> dict:
    return HiveBeat(
        hive_id=hive_id,
        url=url,
        version="1.2.3",
        workers=[
            WorkerInfo(
                worker_id=f"w-{i}",
                pid=1000 + i,
                port=9000 + i,
                url=f"http://127.0.0.1:{9000 + i}",
                model="tiny",
                state="ready",
                rss_bytes=1 << 20,
            )
            for i in range(workers)
        ],
        ts=time.time(),
    ).model_dump(mode="json")


async def status(url: str, *, token: str | None = None) -> dict[str, Any]:
    async with JobClient(url, token=token) as client:
        job_id = await client.submit({"operation": "queen_status"})
        async for event in client.stream(job_id):
            if event.is_final:
                return dict(event.data["result"])
    raise AssertionError("no final state")


@pytest.mark.anyio
async def test_a_beat_adds_the_hive_and_its_workers(rbee_home: Path) -> None:
    """POST /v1/heartbeats answers 204 and queen_status then shows the hive and its workers."""
    async with (
        start_queen(queen_settings(rbee_home)) as queen,
        httpx.AsyncClient(auth=BeatAuth(rbee_home)) as http,
    ):
        reply = await http.post(f"{queen.url}/v1/heartbeats", json=beat(workers=2))
        assert reply.status_code == 204
        snapshot = await status(queen.url)
    hive = next(h for h in snapshot["hives"] if h["hive_id"] == "gpu1")
    assert (hive["url"], hive["version"], hive["source"], hive["stale"]) == (
        "http://10.0.0.5:7835",
        "1.2.3",
        "heartbeat",
        False,
    )
    assert [w["worker_id"] for w in hive["workers"]] == ["w-0", "w-1"]
    flat = [(w["hive_id"], w["worker_id"], w["rss_bytes"]) for w in snapshot["workers"]]
    assert flat == [("gpu1", "w-0", 1 << 20), ("gpu1", "w-1", 1 << 20)]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"hive_id": "gpu1"}',
        b'{"hive_id": "gpu1", "url": "u", "version": "1", "ts": 1, "extra": 1}',
    ],
    ids=["malformed", "not-an-object", "missing-fields", "unknown-field"],
)
async def test_a_bad_beat_is_422_and_changes_nothing(rbee_home: Path, body: bytes) -> None:
    """Anything but a HiveBeat gets 422 `{error, detail}` and no hive is learned."""
    async with (
        start_queen(queen_settings(rbee_home)) as queen,
        httpx.AsyncClient(auth=BeatAuth(rbee_home)) as http,
    ):
        reply = await http.post(
            f"{queen.url}/v1/heartbeats", content=body, headers={"content-type": "application/json"}
        )
        snapshot = await status(queen.url)
    assert reply.status_code == 422
    assert reply.json()["error"].startswith("not a heartbeat")
    assert "detail" in reply.json()
    assert [h["hive_id"] for h in snapshot["hives"]] == ["localhost"]


@pytest.mark.anyio
async def test_a_beat_needs_its_own_hives_credential(rbee_home: Path) -> None:
    """Beats carry their hive's credential (derived from the queen's secret), whatever the
    user's RBEE_TOKEN: none, a wrong one, the queen's own token, or another hive's
    credential describing gpu1 are all refused (401) and teach the queen nothing."""
    settings = dataclasses.replace(queen_settings(rbee_home), token="q-token")
    async with start_queen(settings) as queen, httpx.AsyncClient() as http:
        url = f"{queen.url}/v1/heartbeats"
        forged = [
            await http.post(url, json=beat()),
            await http.post(url, json=beat(), headers={"Authorization": "Bearer x"}),
            await http.post(url, json=beat(), headers={"Authorization": "Bearer q-token"}),
            await http.post(url, json=beat(), headers=bearer(hive_token(rbee_home, "gpu2"))),
        ]
        seen = await status(queen.url, token="q-token")
        taken = await http.post(url, json=beat(), headers=bearer(hive_token(rbee_home, "gpu1")))
    assert [r.status_code for r in forged] == [401, 401, 401, 401]
    assert "credential" in forged[0].json()["error"]
    assert [h["hive_id"] for h in seen["hives"]] == ["localhost"]
    assert taken.status_code == 204


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_stale_after_missed_beats_of_the_hives_own_interval() -> None:
    """Staleness counts STALE_AFTER_BEATS of the interval the hive actually beats at."""
    hives = HiveRegistry({}, secret="test-secret")
    one = HiveBeat.model_validate(beat())
    assert hives.beat(one, now=100.0) == "new"
    assert hives.beat(one, now=100.5) == "ok"  # this hive beats every 0.5 s
    hive = hives.get("gpu1")
    assert not hive.is_stale(100.5 + STALE_AFTER_BEATS * 0.5 - 0.01)
    assert hive.is_stale(100.5 + STALE_AFTER_BEATS * 0.5 + 0.01)
    assert hives.beat(one, now=200.0) == "back"
    assert not hive.is_stale(200.0)
    assert hive.beat_interval_s == 0.5  # the long silence is not taken as the new interval
    assert [w.worker_id for w in hive.workers] == ["w-0"]  # kept while stale


def test_a_forward_between_two_beats_does_not_shorten_the_hives_interval() -> None:
    """Contact through a forward keeps a hive fresh but is not a beat: the interval stays
    the one between beats, so the hive is not called stale a moment after its next beat."""
    hives = HiveRegistry({}, secret="test-secret")
    one = HiveBeat.model_validate(beat())
    hives.beat(one, now=100.0)
    hives.beat(one, now=101.0)  # beats every second
    hive = hives.get("gpu1")
    hive.last_seen = 101.9  # a worker spawn forwarded to it just before the next beat
    assert hives.beat(one, now=102.0) == "ok"
    assert hive.beat_interval_s == 1.0
    assert not hive.is_stale(102.0 + 0.9)  # before the next beat is due


def test_a_configured_hive_is_never_stale_before_its_first_beat() -> None:
    """A hive from the config that never beat is not called stale; its first beat is news."""
    hives = HiveRegistry({"gpu2": "http://old:7835"}, secret="test-secret")
    assert not hives.get("gpu2").is_stale(1e12)
    assert hives.beat(HiveBeat.model_validate(beat("gpu2")), now=1.0) == "new"
    assert hives.get("gpu2").url == "http://10.0.0.5:7835"  # the hive's own report wins
    assert hives.get("gpu2").source == "config"


@pytest.mark.anyio
async def test_a_silent_hive_turns_stale_and_comes_back(rbee_home: Path) -> None:
    """Over HTTP: beats every 50 ms, then silence -> stale in queen_status; one beat -> fresh."""
    async with (
        start_queen(queen_settings(rbee_home)) as queen,
        httpx.AsyncClient(auth=BeatAuth(rbee_home)) as http,
    ):
        for _ in range(3):
            await http.post(f"{queen.url}/v1/heartbeats", json=beat())
            await anyio.sleep(0.05)  # the hive's beat interval in this test
        with anyio.fail_after(DEADLINE_S):
            while not (await status(queen.url))["hives"][0]["stale"]:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        await http.post(f"{queen.url}/v1/heartbeats", json=beat())
        snapshot = await status(queen.url)
    assert snapshot["hives"][0]["hive_id"] == "gpu1"
    assert snapshot["hives"][0]["stale"] is False
