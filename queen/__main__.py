"""queen-rbee: the job server. `queen-rbee --port 7833 --bind 127.0.0.1 [--token T]`.

Narrates `start`, `listen` and `ready` on stdout (ready only once connections are
accepted). SIGTERM/SIGINT: cancel running jobs (recorded `cancelled`), flush logs, exit 0;
a second signal exits at once (128 + signal).
"""

from __future__ import annotations

import argparse
import socket
import sys

from jobs import LOOPBACK, QUEEN_PORT, TOKEN_ENV, tcp_port
from narration_core import Narrator
from queen.errors import QueenConfigError
from queen.settings import QueenSettings

NARRATE = Narrator("queen-rbee")
EXIT_USAGE = 2  # bad flags, unsafe settings or a busy state folder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="queen-rbee", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=tcp_port, default=QUEEN_PORT, help="port (0: any free port)")
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
    from jobs.server import run_daemon  # uvicorn and the app load past the checks

    NARRATE.action("start").target(settings.port).human(
        f"Queen starting on {settings.bind}:{settings.port} (state in {settings.paths.state})"
    ).emit()
    run_daemon(
        "queen-rbee",
        settings.paths.state,
        settings.bind,
        settings.port,
        lambda sock: _serve(settings, sock),
    )


async def _serve(settings: QueenSettings, sock: socket.socket) -> None:
    from jobs.server import serve, socket_url
    from queen.app import create_app

    url = socket_url(sock)
    NARRATE.action("listen").target(url.rsplit(":", 1)[-1]).human(f"Listening on {url}").emit()

    async def announce_ready(url: str) -> None:
        NARRATE.action("ready").target(url).human(f"Queen ready on {url}").emit()

    await serve(create_app(settings), sock, on_ready=announce_ready)
    NARRATE.action("stopped").human("Queen stopped").emit()


if __name__ == "__main__":
    main()
