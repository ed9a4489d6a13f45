"""Heartbeats: the hive tells the queen who it is and what its workers do, every interval.

While the queen is unreachable (or refuses the beat) the hive backs off, doubling the pause
up to BEAT_BACKOFF_MAX_S, and narrates once when the queen goes away and once when it is
back, so a queen that is down for an hour costs a few log lines, not thousands.

When the hive stops, `leave()` ends the beats and the hive says goodbye (`POST
/v1/heartbeats/goodbye`, with the same token as its beats), so the queen drops it and its
workers at once instead of calling it stale three beats later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx

from hive.capabilities import gpu_free_memory, gpu_offload, machine_memory, rpc_support
from jobs import (
    BEAT_BACKOFF_MAX_S,
    BEAT_INTERVAL_S,
    GOODBYE_PATH,
    HEARTBEAT_PATH,
    HiveBeat,
    HiveGoodbye,
    WorkerInfo,
)
from jobs.client import tls_for
from narration_core import Narrator

NARRATE = Narrator("rbee-hive")
BEAT_TIMEOUT_S = 5.0  # one beat's whole request; a slow queen is treated as away
# A stopping hive waits this long for a beat in flight, then this long for the goodbye:
# together well inside the grace `keeper hive stop` gives it before SIGKILL (5 s), which
# its workers need too.
LAST_BEAT_WAIT_S = 1.0
GOODBYE_TIMEOUT_S = 1.5
LEAVE_S = LAST_BEAT_WAIT_S + GOODBYE_TIMEOUT_S  # the most `run` takes after `leave()`
GPU_READ_S = 10.0  # free VRAM is read this often at most (nvidia-smi), not every beat
GPU_READ_WAIT_S = 1.0  # a beat waits this long for it at most; a slow read keeps the last


class Heartbeat:
    """Sends HiveBeats to `queen_url` until `leave()` (then a goodbye) or cancelled (no
    goodbye); run it in a task group.

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
        lend_bytes: int | None = None,
    ) -> None:
        self.endpoint = queen_url.rstrip("/") + HEARTBEAT_PATH
        self.goodbye_endpoint = queen_url.rstrip("/") + GOODBYE_PATH
        self.queen_url = queen_url
        self.hive_id = hive_id
        self.url = url
        self.version = version
        self.workers = workers
        self.token = token
        self.interval_s = interval_s
        self.backoff_max_s = max(backoff_max_s, interval_s)
        self.lend_bytes = lend_bytes  # --lend-memory: the most placement may use here
        self.sent = 0  # beats the queen accepted
        self.attempts = 0  # beats tried, accepted or not
        self.reachable: bool | None = None  # None until the first beat
        self.said_goodbye = False  # the queen accepted the goodbye
        self._leaving = anyio.Event()
        self._nudge = anyio.Event()  # ends the pause between beats: leave() or wake()
        self._woken_at = -float("inf")
        self._in_flight: anyio.CancelScope | None = None  # the beat being sent, if any
        self._gpu_free: dict[str, int] = {}  # "cuda:N" -> free VRAM bytes, from nvidia-smi
        self._gpu_read_at = -float("inf")
        self._rpc: dict[str, Any] | None = None  # rpc_support(), read after the first beat

    def beat(self) -> HiveBeat:
        total, free = machine_memory()
        return HiveBeat(
            hive_id=self.hive_id,
            url=self.url,
            version=self.version,
            workers=self.workers(),
            ts=time.time(),
            memory_total_bytes=total,
            memory_free_bytes=free,
            gpu_free_bytes=self._gpu_free,
            lend_bytes=self.lend_bytes,
            supports_rpc=None if self._rpc is None else self._rpc["supports_rpc"],
            rpc_reason=None if self._rpc is None else self._rpc.get("rpc_reason"),
        )

    async def read_gpus(self) -> None:
        """Refresh the free VRAM the beats report, at most every GPU_READ_S (nvidia-smi
        takes tens of ms, and a wedged driver up to its timeout: in a thread)."""
        now = anyio.current_time()
        if now - self._gpu_read_at < GPU_READ_S:
            return
        self._gpu_read_at = now
        with anyio.move_on_after(GPU_READ_WAIT_S):
            self._gpu_free = await anyio.to_thread.run_sync(gpu_free_memory, abandon_on_cancel=True)

    def leave(self) -> None:
        """Stop beating: `run` lets the beat in flight land (LAST_BEAT_WAIT_S at most), says
        goodbye and returns, within LEAVE_S."""
        self._leaving.set()
        self._nudge.set()
        if self._in_flight is not None:
            self._in_flight.deadline = min(
                self._in_flight.deadline, anyio.current_time() + LAST_BEAT_WAIT_S
            )

    def wake(self) -> bool:
        """Beat now rather than after the pause (a queen that has just started and wants
        to hear from its machine's hive asks for it); at most once per interval, so
        nobody can make the hive beat faster than it would. True when it will."""
        now = anyio.current_time()
        if now - self._woken_at < self.interval_s:
            return False
        self._woken_at = now
        self._nudge.set()
        return True

    async def run(self) -> None:
        """Beat until `leave()`, then say goodbye; never raises for a missing queen (that
        is what the backoff is for).

        A beat in flight is given a moment to land before the goodbye rather than cancelled
        at once: a beat the queen read after the goodbye would list the hive again.
        """
        headers = {"content-type": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        pause = self.interval_s
        async with httpx.AsyncClient(
            timeout=BEAT_TIMEOUT_S, trust_env=False, verify=tls_for(self.queen_url)
        ) as client:
            while not self._leaving.is_set():
                await self.read_gpus()  # first: `leave()` cuts short only the beat in flight
                if self._leaving.is_set():
                    break
                self.attempts += 1
                with anyio.CancelScope() as self._in_flight:
                    problem = await self._send(client, self.endpoint, self.beat(), headers)
                self._in_flight = None
                if self._leaving.is_set():
                    break  # stopping: no news about the queen's reachability to tell
                if self._rpc is None:  # after the first beat: it need not wait for libggml
                    self._rpc = await anyio.to_thread.run_sync(rpc_support)
                if problem is None:
                    self._went_well()
                    pause = self.interval_s
                else:
                    self._went_wrong(problem, pause)
                    pause = min(pause * 2, self.backoff_max_s)
                with anyio.move_on_after(pause):
                    await self._nudge.wait()
                if self._nudge.is_set() and not self._leaving.is_set():
                    self._nudge = anyio.Event()  # woken: beat now, and at the usual pace
                    pause = self.interval_s
            await self._goodbye(client, headers)

    async def _goodbye(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        goodbye = HiveGoodbye(hive_id=self.hive_id, url=self.url, ts=time.time())
        problem: str | None = f"no answer within {GOODBYE_TIMEOUT_S:g} s"
        with anyio.move_on_after(GOODBYE_TIMEOUT_S):  # the whole request, not each step
            problem = await self._send(client, self.goodbye_endpoint, goodbye, headers)
        if problem is None:
            self.said_goodbye = True
            NARRATE.action("goodbye").target(self.queen_url).human(
                f"Told the queen at {self.queen_url} that hive {self.hive_id} is stopping"
            ).emit()
            return
        NARRATE.action("goodbye").target(self.queen_url).level("warn").human(
            f"Could not tell the queen at {self.queen_url} that hive {self.hive_id} is "
            f"stopping ({problem}); it will call this hive stale once its beats are missed"
        ).emit()

    async def _send(
        self,
        client: httpx.AsyncClient,
        endpoint: str,
        message: HiveBeat | HiveGoodbye,
        headers: dict[str, str],
    ) -> str | None:
        """None when the queen accepted `message`, else why not (one short phrase)."""
        body = message.model_dump_json()
        try:
            response = await client.post(endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return str(exc) or type(exc).__name__
        if response.is_success:
            return None
        if response.status_code == 401:
            return (
                f"HTTP 401: the queen refused hive {self.hive_id}'s credential; start this "
                f"hive with `keeper hive start {self.hive_id}` on the queen's machine"
            )
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


def usable_gpu_memory() -> dict[str, int]:
    """Free VRAM per GPU a worker here could use: none when the workers' llama.cpp
    build cannot offload (the queen then places on the CPU)."""
    free = gpu_free_memory()
    return free if free and gpu_offload() else {}
