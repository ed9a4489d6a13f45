"""Heartbeats: the hive tells the queen who it is and what its workers do, every interval.

While the queen is unreachable (or refuses the beat) the hive backs off, doubling the pause
up to BEAT_BACKOFF_MAX_S, and narrates once when the queen goes away and once when it is
back, so a queen that is down for an hour costs a few log lines, not thousands.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import httpx

from jobs.beats import BEAT_BACKOFF_MAX_S, BEAT_INTERVAL_S, HiveBeat, WorkerInfo
from narration_core import Narrator

NARRATE = Narrator("rbee-hive")
BEAT_TIMEOUT_S = 5.0  # one beat's whole request; a slow queen is treated as away
HEARTBEAT_PATH = "/v1/heartbeats"


class Heartbeat:
    """Sends HiveBeats to `queen_url` until cancelled (run it in a task group).

    Args:
        workers: called before each beat for the current workers.
        url: the base URL the queen should use to reach this hive.
    """

    def __init__(
        self,
        queen_url: str,
        *,
        hive_id: str,
        url: str,
        version: str,
        workers: Callable[[], list[WorkerInfo]],
        token: str | None = None,
        interval_s: float = BEAT_INTERVAL_S,
        backoff_max_s: float = BEAT_BACKOFF_MAX_S,
    ) -> None:
        self.endpoint = queen_url.rstrip("/") + HEARTBEAT_PATH
        self.queen_url = queen_url
        self.hive_id = hive_id
        self.url = url
        self.version = version
        self.workers = workers
        self.token = token
        self.interval_s = interval_s
        self.backoff_max_s = max(backoff_max_s, interval_s)
        self.sent = 0  # beats the queen accepted
        self.attempts = 0  # beats tried, accepted or not
        self.reachable: bool | None = None  # None until the first beat

    def beat(self) -> HiveBeat:
        return HiveBeat(
            hive_id=self.hive_id,
            url=self.url,
            version=self.version,
            workers=self.workers(),
            ts=time.time(),
        )

    async def run(self) -> None:
        """Beat forever; never raises for a missing queen (that is what the backoff is for)."""
        headers = {"content-type": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        pause = self.interval_s
        async with httpx.AsyncClient(timeout=BEAT_TIMEOUT_S, trust_env=False) as client:
            while True:
                problem = await self._send(client, headers)
                if problem is None:
                    self._went_well()
                    pause = self.interval_s
                else:
                    self._went_wrong(problem, pause)
                    pause = min(pause * 2, self.backoff_max_s)
                await anyio.sleep(pause)

    async def _send(self, client: httpx.AsyncClient, headers: dict[str, str]) -> str | None:
        """None when the queen accepted the beat, else why not (one short phrase)."""
        body = self.beat().model_dump_json()
        self.attempts += 1
        try:
            response = await client.post(self.endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return str(exc) or type(exc).__name__
        if response.is_success:
            return None
        return f"HTTP {response.status_code}"

    def _went_well(self) -> None:
        self.sent += 1
        if self.reachable is not True:
            again = " again" if self.reachable is False else ""
            NARRATE.action("heartbeat").target(self.queen_url).human(
                f"Queen at {self.queen_url} reachable{again}; beating every {self.interval_s:g} s"
            ).emit()
        self.reachable = True

    def _went_wrong(self, problem: str, pause: float) -> None:
        if self.reachable is not False:
            NARRATE.action("heartbeat").target(self.queen_url).level("warn").human(
                f"Queen at {self.queen_url} unreachable ({problem}); retrying with backoff "
                f"up to {self.backoff_max_s:g} s"
            ).emit()
        self.reachable = False
