"""The worker's app on the job-server shell: /health (`loading`, `ready` or `failed`, and
the slots: `slots`, `slots_busy`, `slot_info`, `threads`, `ctx_size`, `kv_bytes`) and
POST /v1/inference (worker/inference.py), its one door for generations, and
POST /v1/embeddings (worker/_embeddings.py), vectors from the same model. Its jobs are kept
in memory only (`durable=False`): the queen's log records what it relays, and the hive
removes the worker's state folder when it exits.

A split worker whose RPC peer fails (worker/_rpc.py, PeerWatch) says so in one sentence
naming the peer: /health turns `failed`, its jobs fail with that sentence, it narrates it
as its `failed` line, and once those jobs' streams have ended (EXIT_WAIT_S at most) it
exits with EXIT_PEER_LOST at once: llama.cpp may be stuck on the peer's socket, so no
orderly shutdown can be waited for."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobs import rbee_version
from jobs.server import BodyLimit, JobApp, JobService, ServerConfig
from jobs.server import create_app as create_job_app
from narration_core import Narrator
from worker._embeddings import Embeddings
from worker._openapi import openapi_paths
from worker.engine import Engine
from worker.inference import Inference

ACTOR = "llm-worker-rbee"  # the worker's narration actor
NARRATE = Narrator(ACTOR)
EXIT_PEER_LOST = 3  # a split's RPC peer failed: this worker cannot serve its model any more
EXIT_WAIT_S = 2.0  # longest the failed jobs' streams get to carry the reason out
EXIT_POLL_S = 0.02
Status = Literal["loading", "ready", "failed"]


@dataclass(slots=True)
class WorkerState:
    """What /health reports; the entry point moves `status` along as the model loads."""

    worker_id: str
    model: Path
    device: str
    status: Status = "loading"


def create_app(
    state: WorkerState,
    engine: Engine,
    *,
    state_dir: Path,
    token: str | None = None,
    bind: str | None = None,
) -> JobApp:
    version = rbee_version()
    inference = Inference(engine, model_name=state.model.stem)
    embeddings = Embeddings(engine)
    services: list[JobService] = []

    def peer_lost(reason: str) -> None:  # PeerWatch's thread, or ggml's
        state.status = "failed"
        inference.peer_lost(
            f"worker {state.worker_id} of a split can serve no more: {reason}; retry, and "
            "the model is placed afresh"
        )

    engine.on_peer_lost = peer_lost
    engine.busy = lambda: inference.slots.statistics()["slots_busy"] > 0

    async def exit_when_lost() -> None:
        await inference.gave_up.wait()
        assert inference.fault is not None
        NARRATE.action("failed").level("error").human(inference.fault).emit()
        with anyio.move_on_after(EXIT_WAIT_S):
            while inference.admitted or any(s.open_streams for s in services):  # noqa: ASYNC110 - no event for a stream's end
                await anyio.sleep(EXIT_POLL_S)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_PEER_LOST)

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        """The engine thread (inference) while serving; the embedding context freed after."""
        try:
            async with inference.running(), anyio.create_task_group() as tg:
                tg.start_soon(exit_when_lost)
                yield
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):  # an embed in progress ends first
                await anyio.to_thread.run_sync(embeddings.close)

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": state.status,
                "worker_id": state.worker_id,
                "model": str(state.model),
                "device": state.device,
                "version": version,
                "chat_template": engine.chat_template,
                **inference.statistics(),
            }
        )

    def routes(service: JobService) -> list[BaseRoute]:
        services.append(service)  # its open streams: what exit_when_lost waits out
        return [
            Route("/health", health, methods=["GET"]),
            *inference.routes(service),
            *embeddings.routes(),
        ]

    return create_job_app(
        ServerConfig(ACTOR, version, state_dir, token=token, durable=False, bind=bind),
        inference.handlers(),
        routes=routes,
        middleware=[Middleware(BodyLimit)],  # 1 MiB bodies, read within a deadline
        lifespan=running,  # the engine thread lives as long as the server
        openapi_paths=openapi_paths(),
    )
