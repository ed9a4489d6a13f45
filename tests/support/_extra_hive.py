"""Another real hive for a queen that already has one: its own RBEE_HOME (a hive locks its
state folder), the credential the queen's secret gives its id, and beats to that queen.

    async with extra_hive(queen, tmp_path / "gpu2", "gpu2") as hive: ...

The credential goes to the hive in its environment, as the keeper hands it over, so the
queen accepts its beats and it accepts the queen's calls.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from jobs import HIVE_CREDENTIAL_ENV, cluster_secret, hive_credential
from tests.support._chain import BEAT_S
from tests.support._door import HIVE_KNOWN_DEADLINE_S, queen_status
from tests.support._programs import RunningProgram, spawn_program, url_of
from tests.support._queen import RunningQueen
from tests.support._waiting import await_until


@asynccontextmanager
async def extra_hive(
    queen: RunningQueen, home: Path, hive_id: str
) -> AsyncIterator[RunningProgram]:
    """A real rbee-hive `hive_id` under RBEE_HOME `home`, beating to `queen` every BEAT_S;
    yields once the queen lists it; SIGTERM on exit."""
    credential = hive_credential(cluster_secret(queen.settings.paths), hive_id)
    argv = [sys.executable, "-m", "hive", "--port", "0", "--queen-url", queen.url]
    argv += ["--hive-id", hive_id, "--beat-interval", f"{BEAT_S:g}"]
    async with contextlib.AsyncExitStack() as stack:
        with _environment(HIVE_CREDENTIAL_ENV, credential):  # read when the child starts
            hive = await stack.enter_async_context(
                spawn_program(argv, home=home, ready=url_of("ready"))
            )

        async def known() -> bool:
            hives = (await queen_status(queen.url))["hives"]
            return any(h["hive_id"] == hive_id and h["url"] == hive.url for h in hives)

        await await_until(known, deadline_s=HIVE_KNOWN_DEADLINE_S)
        yield hive


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before
