"""queen-rbee: the job server. `queen-rbee --port 7833 --bind 127.0.0.1 [--token T]`.

Narrates `start`, `listen` and `ready` on stdout (ready only once connections are
accepted). SIGTERM/SIGINT: cancel running jobs (recorded `cancelled`), flush logs, exit 0;
a second signal stops waiting for open connections.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from typing import TYPE_CHECKING

import anyio

from jobs.paths import LOOPBACK, QUEEN_PORT, TOKEN_ENV
from narration_core import Narrator
from queen.errors import QueenConfigError
from queen.settings import QueenSettings

if TYPE_CHECKING:
    from queen.server import QueenServer

NARRATE = Narrator("queen-rbee")
EXIT_USAGE = 2  # bad flags or unsafe settings
EXIT_BIND = 1  # the address could not be bound


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port; use 0 to 65535")
    return port


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="queen-rbee", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=_port, default=QUEEN_PORT, help="port (0: any free port)")
    parser.add_argument("--bind", default=LOOPBACK, help="address to listen on")
    parser.add_argument("--token", default=None, help=f"bearer token required (env {TOKEN_ENV})")
    parser.add_argument(
        "--hive", action="append", default=[], metavar="ID=URL", help="a hive the queen knows"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = QueenSettings.build(
            port=args.port, bind=args.bind, token=args.token, hives=args.hive
        )
    except QueenConfigError as exc:
        print(f"queen-rbee: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    from jobs.errors import StateFolderBusy
    from jobs.registry import lock_state_folder
    from queen.server import bind_socket  # uvicorn and the app load only past the checks

    try:
        state_lock = lock_state_folder(settings.paths.state)  # held until the process exits
    except StateFolderBusy as exc:
        print(f"queen-rbee: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)

    NARRATE.action("start").target(settings.port).human(
        f"Queen starting on {settings.bind}:{settings.port} (state in {settings.paths.state})"
    ).emit()
    try:
        sock = bind_socket(settings.bind, settings.port)
    except OSError as exc:
        print(
            f"queen-rbee: cannot listen on {settings.bind}:{settings.port} ({exc.strerror}); "
            "stop whatever holds the port or pass --port",
            file=sys.stderr,
        )
        sys.exit(EXIT_BIND)
    with state_lock:
        anyio.run(_serve, settings, sock)


async def _serve(settings: QueenSettings, sock: socket.socket) -> None:
    from queen.app import create_app
    from queen.server import QueenServer

    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    NARRATE.action("listen").target(port).human(f"Listening on {url}").emit()
    server = QueenServer(create_app(settings))
    async with anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, server)
        tg.start_soon(_announce_ready, server, url)
        await server.serve(sockets=[sock])
        tg.cancel_scope.cancel()
    NARRATE.action("stopped").human("Queen stopped").emit()


async def _announce_ready(server: QueenServer, url: str) -> None:
    await server.ready.wait()
    NARRATE.action("ready").target(url).human(f"Queen ready on {url}").emit()


async def _stop_on_signal(server: QueenServer) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            NARRATE.action("stop").human(
                f"{signal.Signals(signum).name}: cancelling running jobs and stopping"
            ).emit()
            await server.stop()


if __name__ == "__main__":
    main()
