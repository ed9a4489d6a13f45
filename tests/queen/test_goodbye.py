"""Goodbyes: a stopping hive leaves the queen's registry at once, with its workers; only
with the credential its beats carry."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs import HiveBeat, HiveGoodbye, WorkerInfo
from jobs.client import JobClient
from queen.hives import HiveRegistry
from queen.infer import WorkerPool
from tests.support import BeatAuth, hive_token, queen_settings, start_queen

QUEEN_TOKEN = "q-token"
HIVE_URL = "http://10.0.0.5:7835"  # where beat() says the hive is


def beat(hive_id: str = "gpu1", *, workers: int = 1) -> dict[str, Any]:
    """A HiveBeat's JSON: `hive_id` at HIVE_URL with `workers` ready workers."""
    listed = [
        WorkerInfo(
            worker_id=f"w-{i}",
            pid=1000 + i,
            port=9000 + i,
            url=f"http://127.0.0.1:{9000 + i}",
            model="tiny",
            state="ready",
        )
        for i in range(workers)
    ]
    return HiveBeat(
        hive_id=hive_id, url=HIVE_URL, version="1.2.3", workers=listed, ts=time.time()
    ).model_dump(mode="json")


def goodbye(hive_id: str = "gpu1", url: str = HIVE_URL) -> dict[str, Any]:
    return HiveGoodbye(hive_id=hive_id, url=url, ts=time.time()).model_dump(mode="json")


async def status(url: str, token: str | None = None) -> dict[str, Any]:
    async with JobClient(url, token=token) as client:
        job_id = await client.submit({"operation": "queen_status"})
        async for event in client.stream(job_id):
            if event.is_final:
                return dict(event.data["result"])
    raise AssertionError("no final state")


def hive_ids(snapshot: dict[str, Any]) -> list[str]:
    return [h["hive_id"] for h in snapshot["hives"]]


@pytest.mark.anyio
async def test_a_goodbye_drops_the_hive_and_its_workers_at_once(rbee_home: Path) -> None:
    """After POST /v1/heartbeats/goodbye (204), queen_status lists neither the hive nor its
    workers: no stale hive keeping dead workers."""
    async with (
        start_queen(queen_settings(rbee_home)) as queen,
        httpx.AsyncClient(auth=BeatAuth(rbee_home)) as http,
    ):
        assert (
            await http.post(f"{queen.url}/v1/heartbeats", json=beat(workers=2))
        ).status_code == 204
        assert "gpu1" in hive_ids(await status(queen.url))
        reply = await http.post(f"{queen.url}/v1/heartbeats/goodbye", json=goodbye())
        snapshot = await status(queen.url)
    assert reply.status_code == 204
    assert "gpu1" not in hive_ids(snapshot)
    assert snapshot["workers"] == []


@pytest.mark.anyio
async def test_an_unauthenticated_goodbye_is_refused_and_removes_nothing(
    rbee_home: Path,
) -> None:
    """A goodbye without its hive's credential, with another one or with the queen's own
    token is refused (401), as such beats are, and the hive and its workers stay; with the
    hive's credential it is taken."""
    settings = dataclasses.replace(queen_settings(rbee_home), token=QUEEN_TOKEN)
    good = {"Authorization": f"Bearer {hive_token(rbee_home, 'gpu1')}"}
    async with start_queen(settings) as queen, httpx.AsyncClient() as http:
        url = f"{queen.url}/v1/heartbeats"
        assert (await http.post(url, json=beat(), headers=good)).status_code == 204
        forged = [
            await http.post(f"{url}/goodbye", json=goodbye()),
            await http.post(
                f"{url}/goodbye", json=goodbye(), headers={"Authorization": "Bearer x"}
            ),
            await http.post(
                f"{url}/goodbye",
                json=goodbye(),
                headers={"Authorization": f"Bearer {QUEEN_TOKEN}"},
            ),
        ]
        kept = await status(queen.url, QUEEN_TOKEN)
        taken = await http.post(f"{url}/goodbye", json=goodbye(), headers=good)
        after = await status(queen.url, QUEEN_TOKEN)
    assert [r.status_code for r in forged] == [401, 401, 401]
    assert "gpu1" in hive_ids(kept)
    assert [w["worker_id"] for w in kept["workers"]] == ["w-0"]
    assert taken.status_code == 204
    assert "gpu1" not in hive_ids(after) and after["workers"] == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"hive_id": "gpu1"}', b'{"hive_id": "gpu1", "url": "u", "ts": 1, "x": 1}'],
    ids=["malformed", "missing-fields", "unknown-field"],
)
async def test_a_bad_goodbye_is_422_and_changes_nothing(rbee_home: Path, body: bytes) -> None:
    """Anything but a HiveGoodbye gets 422 `{error, detail}` and the hive stays."""
    async with (
        start_queen(queen_settings(rbee_home)) as queen,
        httpx.AsyncClient(auth=BeatAuth(rbee_home)) as http,
    ):
        await http.post(f"{queen.url}/v1/heartbeats", json=beat())
        reply = await http.post(
            f"{queen.url}/v1/heartbeats/goodbye",
            content=body,
            headers={"content-type": "application/json"},
        )
        snapshot = await status(queen.url)
    assert reply.status_code == 422
    assert reply.json()["error"].startswith("not a goodbye")
    assert "gpu1" in hive_ids(snapshot)


def test_a_goodbye_from_another_url_or_an_unknown_hive_changes_nothing() -> None:
    """Only the hive listed at that URL leaves: a goodbye from an older hive of the same
    id elsewhere, or from a hive the queen never heard of, is ignored."""
    hives = HiveRegistry({}, secret="test-secret")
    hives.beat(HiveBeat.model_validate(beat()), now=100.0)
    assert hives.goodbye(HiveGoodbye.model_validate(goodbye(url="http://10.0.0.9:7835"))) is None
    assert hives.goodbye(HiveGoodbye.model_validate(goodbye("gpu9"))) is None
    assert [h.id for h in hives.all()] == ["gpu1"]
    gone = hives.goodbye(HiveGoodbye.model_validate(goodbye(url=HIVE_URL + "/")))
    assert gone is not None and [w.worker_id for w in gone.workers] == ["w-0"]
    assert hives.all() == []


def test_a_configured_hive_that_left_is_off_the_list_but_keeps_its_id_and_token() -> None:
    """A hive from the config leaves the list with its workers (not stale, not listed),
    jobs naming it still find its URL and token, and its next beat lists it again."""
    hives = HiveRegistry({"gpu1": "http://old:7835"}, tokens={"gpu1": "t1"}, secret="test-secret")
    one = HiveBeat.model_validate(beat())
    hives.beat(one, now=100.0)
    assert hives.goodbye(HiveGoodbye.model_validate(goodbye())) is not None
    assert hives.all() == []
    left = hives.get("gpu1")
    assert (left.url, left.workers, left.is_stale(1e12)) == (HIVE_URL, [], False)
    assert hives.token_for("gpu1") == "t1"
    assert hives.beat(one, now=200.0) == "new"
    assert [(h.id, h.source, len(h.workers)) for h in hives.all()] == [("gpu1", "config", 1)]


def test_workers_spawned_through_the_queen_leave_with_their_hive() -> None:
    """A worker the queen spawned, which no beat has listed yet, is not offered once its
    (configured) hive said goodbye."""
    hives = HiveRegistry({"localhost": HIVE_URL}, secret="test-secret")
    hives.beat(HiveBeat.model_validate(beat("localhost", workers=0)), now=time.time())
    pool = WorkerPool(hives)
    spawned = beat("localhost")["workers"][0]
    pool.note_spawned("localhost", spawned)
    assert [p.worker.worker_id for p in pool.known()] == ["w-0"]
    hives.goodbye(HiveGoodbye.model_validate(goodbye("localhost")))
    assert pool.known() == []
