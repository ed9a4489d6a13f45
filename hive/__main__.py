"""rbee-hive: the per-machine daemon (worker lifecycle, model catalog).

Only its command line and startup narration exist so far; the daemon lands with the
hive issue.
"""

from __future__ import annotations

import argparse

from jobs.paths import HIVE_PORT, LOOPBACK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rbee-hive",
        description="Per-machine rbee daemon: spawns and stops workers, downloads models.",
    )
    parser.add_argument(
        "--port", type=int, default=HIVE_PORT, help="HTTP port (default %(default)s)"
    )
    parser.add_argument("--bind", default=LOOPBACK, help="address to bind (default %(default)s)")
    args = parser.parse_args(argv)

    from narration_core import Narrator

    narrate = Narrator("rbee-hive")
    narrate.action("start").target(args.port).human(
        f"Hive would listen on {args.bind}:{args.port}"
    ).emit()
    narrate.action("not_ready").level("warn").human(
        "The hive daemon is not built yet; nothing was started"
    ).emit()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
