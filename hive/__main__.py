"""rbee-hive: the per-machine daemon. `rbee-hive --port 7835 --queen-url URL --hive-id ID`.

Spawns and stops workers, keeps the model catalog, reports the machine's capabilities and
beats to the queen. Narrates `startup`, `catalog_init`, `listen` and `ready` on stdout
(ready only once connections are accepted). SIGTERM/SIGINT: cancel running jobs, stop the
workers, exit 0; a second signal exits at once (128 + signal).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

import anyio

from hive.errors import HiveConfigError
from hive.settings import DEFAULT_HIVE_ID, HiveSettings
from jobs import (
    BEAT_INTERVAL_S,
    HIVE_CREDENTIAL_ENV,
    HIVE_PORT,
    LEND_MEMORY_ENV,
    LOOPBACK,
    TOKEN_ENV,
    tcp_port,
)
from narration_core import Narrator

NARRATE = Narrator("rbee-hive")
EXIT_USAGE = 2  # bad flags, unsafe settings or a busy state folder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rbee-hive",
        description="Per-machine rbee daemon: spawns and stops workers, downloads models.",
    )
    parser.add_argument("--port", type=tcp_port, default=HIVE_PORT, help="port (0: any free port)")
    parser.add_argument("--bind", default=LOOPBACK, help="address to listen on")
    parser.add_argument("--token", default=None, help=f"bearer token required (env {TOKEN_ENV})")
    parser.add_argument("--queen-url", default=None, help="queen to send heartbeats to")
    parser.add_argument("--hive-id", default=DEFAULT_HIVE_ID, help="this hive's id (alias)")
    parser.add_argument(
        "--beat-interval", type=float, default=BEAT_INTERVAL_S, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--lend-memory",
        default=None,
        metavar="SIZE",
        help=f"most memory the queen may place here, e.g. 2G or 1.5GiB (env {LEND_MEMORY_ENV})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = HiveSettings.build(
            hive_id=args.hive_id,
            port=args.port,
            bind=args.bind,
            token=args.token,
            queen_url=args.queen_url,
            beat_interval_s=args.beat_interval,
            lend_memory=args.lend_memory,
        )
    except HiveConfigError as exc:
        print(f"rbee-hive: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    # Read into the settings: no child (a worker, pip) inherits the hive's secrets.
    for name in (TOKEN_ENV, HIVE_CREDENTIAL_ENV):
        os.environ.pop(name, None)
    from jobs.server import run_daemon  # uvicorn and the app load past the checks

    NARRATE.action("startup").target(settings.hive_id).human(
        f"Hive {settings.hive_id} starting on {settings.bind}:{settings.port} "
        f"(state in {settings.state_dir})"
    ).emit()
    run_daemon(
        "rbee-hive",
        settings.state_dir,
        settings.bind,
        settings.port,
        lambda sock: _serve(settings, sock),
    )


def advertised_url(sock: socket.socket) -> str:
    """The URL the queen should use: the bound address, or this host's name for a wildcard."""
    from jobs.server import socket_url

    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        return f"http://{socket.gethostname()}:{port}"
    return socket_url(sock)


async def _serve(settings: HiveSettings, sock: socket.socket) -> None:
    from hive.app import create_app
    from hive.catalog import Catalog
    from jobs.server import serve, socket_url

    catalog = Catalog(settings.models_dir, hive_id=settings.hive_id)
    catalog = await anyio.to_thread.run_sync(catalog.load)
    ready_models = [e.id for e in catalog.entries() if e.status == "available"]
    NARRATE.action("catalog_init").target(str(settings.models_dir)).human(
        f"Model catalog in {settings.models_dir}: {len(ready_models)} model(s) available"
        + (f" ({', '.join(ready_models)})" if ready_models else "")
    ).emit()
    url = advertised_url(sock)
    job_app = create_app(settings, catalog, url=url)
    listening = socket_url(sock)
    NARRATE.action("listen").target(listening.rsplit(":", 1)[-1]).human(
        f"Listening on {listening}"
    ).emit()

    async def announce_ready(_: str) -> None:
        beats = f"; heartbeats to {settings.queen_url}" if settings.queen_url else ""
        NARRATE.action("ready").target(url).human(f"Hive ready on {url}{beats}").emit()

    await serve(job_app, sock, on_ready=announce_ready)
    NARRATE.action("stopped").human(f"Hive {settings.hive_id} stopped").emit()


if __name__ == "__main__":
    main()
