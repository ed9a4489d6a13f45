"""Starting real hives for tests, and a loopback queen stand-in that records heartbeats.

- `spawn_hive(home, *args)`: the real program (`python -m hive --port 0`), awaited via its
  `ready` narration line, stopped with SIGTERM on exit; yields a `tests.support.RunningProgram`.
- `beat_recorder(tmp)`: a real HTTP server on loopback answering POST /v1/heartbeats with
  204 and keeping every beat; can be stopped and started again on the same port.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobs import HiveBeat, RbeePaths, cluster_secret, hive_credential
from jobs.server import ServerConfig, bind_socket, create_app, open_job_server
from tests.support._programs import RunningProgram, spawn_program, url_of


@asynccontextmanager
async def spawn_hive(home: Path, *args: str) -> AsyncIterator[RunningProgram]:
    """Run the real rbee-hive with RBEE_HOME=home until its `ready` line; SIGTERM on exit.

    Its `token` is the hive's credential, derived from the queen secret of `home` as the
    hive derives it itself (a queen on the same home calls it with the same)."""
    argv = [sys.executable, "-m", "hive", "--port", "0", *args]
    async with spawn_program(argv, home=home, ready=url_of("ready")) as hive:
        hive.token = hive_token(home, _hive_id(args))
        yield hive


def hive_token(home: Path, hive_id: str = "localhost") -> str:
    """The credential of hive `hive_id` under the queen secret of RBEE_HOME `home`."""
    return hive_credential(cluster_secret(RbeePaths.resolve(home).ensure()), hive_id)


class BeatAuth(httpx.Auth):
    """httpx auth for heartbeats and goodbyes sent by hand: signs each with the credential
    of the hive its JSON body names, under the queen secret of RBEE_HOME `home`."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        try:
            hive_id = json.loads(request.content)["hive_id"]
        except (ValueError, KeyError, TypeError):
            hive_id = None  # not a beat: sent as it is (the queen refuses it)
        if isinstance(hive_id, str) and "authorization" not in request.headers:
            request.headers["Authorization"] = f"Bearer {hive_token(self.home, hive_id)}"
        yield request


def _hive_id(args: tuple[str, ...]) -> str:
    flags = list(args)
    return flags[flags.index("--hive-id") + 1] if "--hive-id" in flags else "localhost"


@dataclass
class BeatRecorder:
    """A queen stand-in: keeps every heartbeat POSTed to it."""

    state_dir: Path
    port: int = 0
    beats: list[HiveBeat] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_beats(self, count: int, *, deadline_s: float = 20.0) -> list[HiveBeat]:
        with anyio.fail_after(deadline_s):
            while len(self.beats) < count:
                await self.arrived.wait()
        return self.beats

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[BeatRecorder]:
        """Serve on `port` (a free one the first time, the same one after)."""

        async def heartbeats(request: Request) -> Response:
            self.beats.append(HiveBeat.model_validate_json(await request.body()))
            self.arrived.set()
            self.arrived = anyio.Event()
            return Response(status_code=204)

        job_app = create_app(
            ServerConfig("queen-stand-in", "test", self.state_dir),
            {},
            routes=[Route("/v1/heartbeats", heartbeats, methods=["POST"])],
        )
        sock = bind_socket("127.0.0.1", self.port)
        self.port = sock.getsockname()[1]
        async with open_job_server(job_app, sock):
            yield self
