"""The hives the queen knows: id -> base URL, from configuration and heartbeats, and the
credential to call each (its own token from the hives config, else the hive credential
derived from the queen's secret, jobs._credentials; the queen's inbound token never goes
upstream).

Heartbeats (`POST /v1/heartbeats`, see queen.beats) add the hives that announce
themselves and keep each hive's URL, version and workers current; a restarted queen
re-learns them from the next beats. A hive that stops says goodbye and leaves the list at
once with its workers (a configured one is kept aside: jobs that name it still find its
URL and token, and its next beat lists it again). A hive that stops beating without a
word is marked stale after STALE_AFTER_BEATS of its own intervals, computed from
`last_seen` when asked (no timer), and kept with what it last said, since nothing else
could tell the queen about it.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import httpx

from jobs import (
    BEAT_BACKOFF_MAX_S,
    BEAT_INTERVAL_S,
    BEAT_NOW_PATH,
    STALE_AFTER_BEATS,
    HiveBeat,
    HiveGoodbye,
    WorkerInfo,
    hive_credential,
    worker_credential,
)
from jobs.client import tls_for
from queen.errors import HiveNotHeard, UnknownHive

# How long a job waits for the first beat of this machine's hive before failing: a hive
# the keeper has just started beats within moments of being ready.
FIRST_BEAT_WAIT_S = 5.0
BEAT_NOW_TIMEOUT_S = 1.0
MIN_BEAT_INTERVAL_S = 0.05  # floor for a measured interval: two beats sent back to back


@dataclass(slots=True)
class Hive:
    id: str
    url: str
    source: Literal["config", "heartbeat"] = "config"
    last_seen: float | None = None  # wall time of the last heartbeat or successful contact
    last_beat: float | None = None  # wall time of the last heartbeat alone
    version: str | None = None
    workers: list[WorkerInfo] = field(default_factory=list)  # as of the last beat
    memory_total_bytes: int | None = None  # the machine's RAM, as of the last beat
    memory_free_bytes: int | None = None
    gpu_free_bytes: dict[str, int] = field(default_factory=dict)  # "cuda:N" -> free VRAM
    lend_bytes: int | None = None  # what it lends placement (--lend-memory); None: no cap
    supports_rpc: bool | None = None  # can its llama.cpp serve a split; None: not said yet
    rpc_reason: str | None = None  # why not
    beats: int = 0  # heartbeats received since this queen started
    # The gap between the last two beats (not between a forward and a beat, which can be
    # any length): a hive started with a short interval (tests) goes stale as quickly as
    # one beating every 2 s goes stale in 6.
    beat_interval_s: float = BEAT_INTERVAL_S

    def is_stale(self, now: float | None = None) -> bool:
        """True when a hive that was beating has missed STALE_AFTER_BEATS beats."""
        if not self.beats or self.last_seen is None:
            return False
        elapsed = (time.time() if now is None else now) - self.last_seen
        return elapsed > STALE_AFTER_BEATS * self.beat_interval_s

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        return {
            "hive_id": self.id,
            "url": self.url,
            "source": self.source,
            "last_seen": self.last_seen,
            "version": self.version,
            "stale": self.is_stale(now),
            "memory_free_bytes": self.memory_free_bytes,
            "lend_bytes": self.lend_bytes,
            "supports_rpc": self.supports_rpc,
            "rpc_reason": self.rpc_reason,
            "workers": [w.model_dump(mode="json") for w in self.workers],
        }


class HiveRegistry:
    """Known hives by id. Only the event loop touches it, so it takes no lock."""

    def __init__(
        self,
        hives: Mapping[str, str],
        *,
        secret: str,
        tokens: Mapping[str, str] | None = None,
        implicit: Collection[str] = (),
    ) -> None:
        self._hives = {hive_id: Hive(hive_id, url) for hive_id, url in hives.items()}
        self._secret = secret  # the queen's: every hop's credential derives from it
        self._tokens = dict(tokens or {})  # by id, so a hive learned from beats gets its own
        # Configured hives that said goodbye: the URL they last gave, no beats, no workers.
        # Invariant: an id is in `_hives` or `_left`, never both.
        self._left: dict[str, Hive] = {}
        self._configured = frozenset(hives)
        # Hives known only by default (this machine's `localhost` at its usual port): no
        # call goes to one until it has beaten, which proves it holds its credential.
        self._implicit = frozenset(implicit)
        self._beaten = anyio.Event()  # set (and replaced) on every beat

    def get(self, hive_id: str) -> Hive:
        """The hive called `hive_id` (listed, or configured and stopped); raises UnknownHive."""
        hive = self._hives.get(hive_id) or self._left.get(hive_id)
        if hive is None:
            raise UnknownHive(hive_id, sorted([*self._hives, *self._left]))
        return hive

    def token_for(self, hive_id: str) -> str:
        """The bearer token to send to `hive_id`: the token its config gives, else its
        hive credential (which a hive started by the keeper accepts). Raises HiveNotHeard
        for this machine's default hive before its first beat (see `reachable`): nothing
        proves yet that what listens at its URL is it."""
        hive = self.get(hive_id)
        if self._unproven(hive):
            raise HiveNotHeard(hive_id, hive.url, 0)
        return self._tokens.get(hive_id) or self.credential(hive_id)

    async def reachable(self, hive_id: str, *, wait_s: float = FIRST_BEAT_WAIT_S) -> Hive:
        """The hive to send a call to: configured, or heard from. This machine's default
        hive that has not beaten yet gets `wait_s` to do so; raises UnknownHive or
        HiveNotHeard."""
        hive = self.get(hive_id)
        if not self._unproven(hive):
            return hive
        with anyio.move_on_after(wait_s):
            await _ask_for_a_beat(hive.url)
            while self._unproven(self.get(hive_id)):
                await self._beaten.wait()
        hive = self.get(hive_id)
        if self._unproven(hive):
            raise HiveNotHeard(hive_id, hive.url, wait_s)
        return hive

    def _unproven(self, hive: Hive) -> bool:
        """A hive known by default only that has not beaten: what listens at its URL is
        not known to be it."""
        return hive.id in self._implicit and not hive.beats

    def has_configured_token(self, hive_id: str) -> bool:
        """True when the hives config gives `hive_id` a token of its own."""
        return hive_id in self._tokens

    def credential(self, hive_id: str) -> str:
        """The credential hive `hive_id` signs its beats with and accepts calls with."""
        return hive_credential(self._secret, hive_id)

    def worker_token(self, hive_id: str, worker_id: str) -> str:
        """The bearer token worker `worker_id` of hive `hive_id` accepts (its own alone);
        the worker is one a signed beat listed, or one this queen had its hive spawn."""
        return worker_credential(self.credential(hive_id), worker_id)

    def all(self) -> list[Hive]:
        """The hives to show and to place work on: every one but those that said goodbye."""
        return sorted(self._hives.values(), key=lambda h: h.id)

    def seen(self, hive_id: str) -> None:
        self.get(hive_id).last_seen = time.time()

    def beat(self, beat: HiveBeat, now: float | None = None) -> Literal["new", "back", "ok"]:
        """Record a heartbeat; says whether the hive is new to this queen, back from
        being stale, or simply still there. The URL follows the hive's own report."""
        now = time.time() if now is None else now
        hive = self._hives.get(beat.hive_id)
        if hive is None and (left := self._left.pop(beat.hive_id, None)) is not None:
            hive = self._hives[beat.hive_id] = left  # a configured hive, started again
        if hive is None:
            hive = self._hives[beat.hive_id] = Hive(beat.hive_id, beat.url, "heartbeat")
            news: Literal["new", "back", "ok"] = "new"
        else:
            news = "new" if not hive.beats else "back" if hive.is_stale(now) else "ok"
            if news == "ok" and hive.last_beat is not None:
                gap = now - hive.last_beat
                hive.beat_interval_s = min(max(gap, MIN_BEAT_INTERVAL_S), BEAT_BACKOFF_MAX_S)
        hive.url = beat.url.rstrip("/")
        hive.version = beat.version
        hive.workers = list(beat.workers)
        hive.memory_total_bytes = beat.memory_total_bytes
        hive.memory_free_bytes = beat.memory_free_bytes
        hive.gpu_free_bytes = dict(beat.gpu_free_bytes)
        hive.lend_bytes = beat.lend_bytes
        if beat.supports_rpc is not None:
            hive.supports_rpc, hive.rpc_reason = beat.supports_rpc, beat.rpc_reason
        hive.last_seen = hive.last_beat = now
        hive.beats += 1
        self._beaten.set()
        self._beaten = anyio.Event()
        return news

    def goodbye(self, goodbye: HiveGoodbye) -> Hive | None:
        """Forget a hive that stopped, and its workers; returns it as it was, or None (and
        changes nothing) when no hive of that id is listed at that URL. A configured hive
        stays reachable by its id."""
        hive = self._hives.get(goodbye.hive_id)
        if hive is None or hive.url != goodbye.url.rstrip("/"):
            return None
        del self._hives[hive.id]
        if hive.id in self._configured:
            self._left[hive.id] = Hive(hive.id, hive.url, "config")
        return hive


async def _ask_for_a_beat(url: str) -> None:
    """Ask whatever listens at `url` to beat now (a hive backing off from a queen that was
    down would otherwise take up to 30 s). Nothing secret is sent, and only a signed beat
    counts, so asking an impostor costs nothing."""
    try:
        async with httpx.AsyncClient(
            timeout=BEAT_NOW_TIMEOUT_S, trust_env=False, verify=tls_for(url)
        ) as client:
            await client.post(f"{url}{BEAT_NOW_PATH}")
    except httpx.HTTPError:
        pass  # not there (yet): the wait for its beat says so
