"""What the installed llama.cpp build is, read from its package's metadata alone (no
llama_cpp import, no library loaded): both ends of a split (the hive's RPC server, the
worker's RPC client) must speak the same RPC protocol."""

from __future__ import annotations

import functools
import importlib.metadata
import re
from pathlib import Path

LLAMA_DISTRIBUTION = "llama-cpp-python"
_HEADER = "ggml-rpc.h"  # in the wheel's include/: the protocol version the build speaks
_PROTO = re.compile(r"#define\s+RPC_PROTO_(MAJOR|MINOR|PATCH)_VERSION\s+(\d+)")


@functools.cache
def rpc_protocol() -> str | None:
    """The RPC protocol version the installed build speaks ("7.0.0"), read from the
    ggml-rpc.h its wheel ships; None when there is no such header (or no build)."""
    try:
        files = importlib.metadata.files(LLAMA_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == _HEADER:
            parts = dict(_PROTO.findall(Path(str(file.locate())).read_text(errors="replace")))
            if len(parts) == 3:
                return f"{parts['MAJOR']}.{parts['MINOR']}.{parts['PATCH']}"
    return None
