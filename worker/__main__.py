"""llm-worker-rbee: one GGUF model loaded through llama.cpp, streaming tokens over HTTP.

Only its command line and startup narration exist so far; the worker lands with the
inference issue.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="llm-worker-rbee",
        description="rbee inference worker: loads one GGUF model and streams tokens over HTTP.",
    )
    parser.add_argument("--model", required=True, help="path to a .gguf file")
    parser.add_argument("--port", type=int, required=True, help="HTTP port the hive assigned")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default %(default)s)")
    args = parser.parse_args(argv)

    from narration_core import Narrator

    narrate = Narrator("llm-worker-rbee")
    narrate.action("start").target(args.model).human(
        f"Worker would load {args.model} on {args.device}, port {args.port}"
    ).emit()
    narrate.action("not_ready").level("warn").human(
        "The inference worker is not built yet; nothing was loaded"
    ).emit()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
