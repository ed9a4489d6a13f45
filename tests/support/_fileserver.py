"""A model file server on loopback: blobs served by name, with Range, as a hub serves them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobs.server import ServerConfig, bind_socket, create_app, open_job_server
from tests.support._ranged import ranged_response

SEND_BYTES = 64 * 1024  # the server's write size


@asynccontextmanager
async def serve_models(blobs: Mapping[str, bytes], state: Path) -> AsyncIterator[str]:
    """Serve each blob at `/<name>` (e.g. `big.gguf`) until the block ends; yields the base
    URL. `state` is the server's own folder: keep it off a disk a test fills."""

    async def model(request: Request) -> Response:
        blob = blobs.get(request.path_params["name"])
        if blob is None:
            return Response(status_code=404)
        header = request.headers.get("range")
        return ranged_response(blob, header, cut=False, send_bytes=SEND_BYTES)

    app = create_app(
        ServerConfig("file-server", "test", state),
        {},
        routes=[Route("/{name}", model, methods=["GET"])],
    )
    sock = bind_socket("127.0.0.1", 0)
    async with open_job_server(app, sock):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
