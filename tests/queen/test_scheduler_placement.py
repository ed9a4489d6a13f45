"""Placement and the worker view, without processes: which worker a request gets, when a
worker has room, and where a worker is started."""

from __future__ import annotations

import time

import pytest

from jobs import HiveBeat, Infer, InvalidRequest, WorkerInfo
from queen._placement import best, hive_to_start_on, named
from queen._workers import Pick, WorkerView
from queen.hives import HiveRegistry
from queen.infer import WorkerPool


def info(
    worker_id: str, *, state: str = "ready", model: str = "tiny", slots: int = 1
) -> WorkerInfo:
    port = 9000 + int(worker_id.rsplit("-", 1)[1])
    return WorkerInfo.model_validate(
        {
            "worker_id": worker_id,
            "pid": port,
            "port": port,
            "url": f"http://127.0.0.1:{port}",
            "model": model,
            "state": state,
            "slots": slots,
        }
    )


def registry(**workers: list[WorkerInfo]) -> HiveRegistry:
    """Hives that have each beaten once, with these workers."""
    hives = HiveRegistry({}, secret="test-secret")
    for hive_id, listed in workers.items():
        beat = HiveBeat(hive_id=hive_id, url=f"http://{hive_id}", version="1", workers=listed, ts=0)
        hives.beat(beat, now=time.time())
    return hives


def test_ready_workers_with_fewer_requests_in_flight_come_first() -> None:
    """Fresh before stale, ready before loading, then the fewest in flight."""
    ready, loading, other = (
        Pick("a", info("w-1")),
        Pick("a", info("w-2", state="loading")),
        Pick("b", info("w-3")),
    )
    counts = {"w-1": 2, "w-2": 0, "w-3": 1}
    chosen = best(
        [ready, loading, other], stale=set(), in_flight=lambda p: counts[p.worker.worker_id]
    )
    assert chosen == other
    assert (
        best([ready, loading, other], stale={"b"}, in_flight=lambda p: counts[p.worker.worker_id])
        == ready
    )
    assert best([], stale=set(), in_flight=lambda p: 0) is None


def test_a_named_worker_the_queen_does_not_know_is_a_404_listing_the_known() -> None:
    """Naming a worker that is not there answers 404 with the ids the queen knows."""
    picks = [Pick("a", info("w-1"))]
    assert named(picks, "w-1") is picks[0]
    with pytest.raises(InvalidRequest) as missing:
        named(picks, "w-9")
    assert missing.value.status == 404 and "w-1" in str(missing.value)


def test_a_worker_has_room_while_fewer_requests_than_slots_are_in_flight() -> None:
    """With 2 slots a worker takes two requests; the third waits until one ends; a worker
    that just answered 503 is offered nothing until it cools down."""
    view = WorkerView(registry(a=[info("w-1", slots=2)]))
    worker = view.known()[0].worker
    view.claim(worker)
    assert view.has_room(worker)
    view.claim(worker)
    assert not view.has_room(worker) and view.in_flight(worker) == 2
    view.release(worker)
    assert view.has_room(worker)
    view.cool(worker, 60)
    assert not view.has_room(worker)
    assert view.has_room(worker, now=time.monotonic() + 61)


def test_workers_a_hive_listed_before_its_first_beat_serve_until_a_beat_speaks() -> None:
    """A restarted queen that read a hive's worker_list offers those workers before that
    hive's first beat; after a beat, the beat alone says what runs there."""
    hives = HiveRegistry({"a": "http://a"}, secret="test-secret")
    view = WorkerView(hives)
    view.note_listed("a", [info("w-1")])
    assert [p.worker.worker_id for p in view.loaded()] == ["w-1"]
    later = time.time() + 10
    hives.beat(HiveBeat(hive_id="a", url="http://a", version="1", workers=[], ts=later), now=later)
    assert view.loaded() == []


def test_the_pool_offers_only_workers_with_a_free_slot() -> None:
    """`find` gives a worker of the model, `free` only one with room for another request."""
    pool = WorkerPool(registry(a=[info("w-1")]))
    prompt = Infer(prompt="hi", model="tiny")
    pick = pool.free(prompt)
    assert pick is not None
    pool.view.claim(pick.worker)
    assert pool.free(prompt) is None and pool.find(prompt) == pick
    assert pool.find(Infer(prompt="hi", model="smollm2")) is None


def test_a_hive_is_chosen_only_when_the_choice_is_clear() -> None:
    """The only fresh hive starts the worker; none answers 503, several 400 naming them."""
    one = registry(a=[]).all()
    assert hive_to_start_on(one, "tiny").id == "a"
    with pytest.raises(InvalidRequest) as several:
        hive_to_start_on(registry(a=[], b=[]).all(), "tiny")
    assert several.value.status == 400 and "a, b" in str(several.value)
    with pytest.raises(InvalidRequest) as none:
        hive_to_start_on([], "tiny")
    assert none.value.status == 503


def test_a_configured_hive_that_never_beat_does_not_block_the_one_that_did() -> None:
    """The queen's config names `localhost`, which never started; hive `home` beats: a
    worker goes to `home` (it was a 400 "several hives could start one"). With none heard
    from, the configured one is still the only choice."""
    hives = HiveRegistry({"localhost": "http://127.0.0.1:7835"}, secret="test-secret")
    assert hive_to_start_on(hives.all(), "tiny").id == "localhost"
    hives.beat(HiveBeat(hive_id="home", url="http://home", version="1", workers=[], ts=0))
    assert hive_to_start_on(hives.all(), "tiny").id == "home"
