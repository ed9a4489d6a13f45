"""Waiting on a condition under a deadline, not on a clock: `wait_until` blocks a thread,
`await_until` waits in a task (its condition may itself be async)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import pytest

DEADLINE_S = 30.0  # a process starting or stopping on a busy 2-core machine
POLL_S = 0.01  # between looks at a condition a thread cannot be told about
APOLL_S = 0.005  # between looks in a task: a counter another task moves


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Poll `condition` until it holds; fail naming `what` after `deadline_s` seconds."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(POLL_S)


async def await_until(
    predicate: Callable[[], Awaitable[bool] | bool], *, deadline_s: float = 10.0
) -> None:
    """Poll `predicate` (sync or async) until true; TimeoutError after `deadline_s`."""
    with anyio.fail_after(deadline_s):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(APOLL_S)
