"""The worker's app on the job-server shell: /health (`loading`, `ready` or `failed`, and
the slots: `slots`, `slots_busy`, `slot_info`, `threads`, `ctx_size`, `kv_bytes`) and
POST /v1/inference (worker/inference.py), its one door for generations, and
POST /v1/embeddings (worker/_embeddings.py), vectors from the same model. Its jobs are kept
in memory only (`durable=False`): the queen's log records what it relays, and the hive
removes the worker's state folder when it exits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jobs import rbee_version
from jobs.server import BodyLimit, JobApp, ServerConfig
from jobs.server import create_app as create_job_app
from worker._embeddings import Embeddings
from worker._openapi import openapi_paths
from worker.engine import Engine
from worker.inference import Inference

ACTOR = "llm-worker-rbee"  # the worker's narration actor
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

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        """The engine thread (inference) while serving; the embedding context freed after."""
        try:
            async with inference.running():
                yield
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

    return create_job_app(
        ServerConfig(ACTOR, version, state_dir, token=token, durable=False, bind=bind),
        inference.handlers(),
        routes=lambda service: [
            Route("/health", health, methods=["GET"]),
            *inference.routes(service),
            *embeddings.routes(),
        ],
        middleware=[Middleware(BodyLimit)],  # 1 MiB bodies, read within a deadline
        lifespan=running,  # the engine thread lives as long as the server
        openapi_paths=openapi_paths(),
    )
