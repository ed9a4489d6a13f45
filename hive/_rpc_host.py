"""The RPC server a hive lends to a split model, and what the hive knows of its RPC build.

    python -m hive._rpc_host --endpoint 127.0.0.1:PORT --cache DIR --parent PID [--threads N]

runs ggml's own RPC server (`ggml_backend_rpc_start_server`, what llama.cpp's `rpc-server`
program calls) from the llama-cpp-python wheel the workers load: both ends of a split are
one build, so they speak one RPC protocol. It serves this machine's GPUs, else its CPU,
and caches tensors it received by hash in DIR (a reload of the same model sends only
hashes). It only ever listens on 127.0.0.1: peers reach it through an SSH forward.

It dies with the hive: PR_SET_PDEATHSIG asks the kernel for a SIGKILL when the process
that started it exits (kill -9 included), and it exits at once if that process is
already gone. The library is found and loaded with ctypes, without importing llama_cpp
(numpy and all): `supports_rpc()` and friends are cheap enough for the capabilities.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import importlib.metadata
import importlib.util
import os
import signal
import sys
from pathlib import Path

from jobs import LLAMA_DISTRIBUTION

LOOPBACK = "127.0.0.1"  # the only address the server binds (jobs.LOOPBACK's value)
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)
DEVICE_TYPE_CPU, DEVICE_TYPE_GPU = 0, 1  # enum ggml_backend_dev_type
EXIT_FAILED, EXIT_USAGE = 1, 2
NO_RPC = "llama-cpp-python was built without GGML_RPC; run make install"
NO_WHEEL = "llama-cpp-python is not installed; run make install"

StartServer = ctypes.CFUNCTYPE(
    None,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_size_t,
    ctypes.POINTER(ctypes.c_void_p),
)


def wheel_lib_dir() -> Path | None:
    """The folder of llama-cpp-python's shared libraries, found without importing it."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


@functools.cache
def load_ggml() -> ctypes.CDLL | None:
    """libggml of the installed wheel with the few functions used here typed; None when
    llama-cpp-python is missing."""
    folder = wheel_lib_dir()
    if folder is None:
        return None
    # The wheel holds copies, not links: libggml.so, libggml.so.0, ... Only the one named
    # by its soname (the shortest versioned name) is the instance libllama loads, whose
    # device registry the model sees.
    found = sorted(folder.glob("libggml.so.*"), key=lambda p: len(p.name))
    found += [p for p in (folder / n for n in ("libggml.so", "libggml.dylib")) if p.exists()]
    if not found:
        return None
    lib = ctypes.CDLL(str(found[0]))
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    for name, args, res in (
        ("ggml_backend_reg_by_name", [cp], vp),
        ("ggml_backend_reg_get_proc_address", [vp, cp], vp),
        ("ggml_backend_reg_name", [vp], cp),
        ("ggml_backend_dev_count", [], ctypes.c_size_t),
        ("ggml_backend_dev_get", [ctypes.c_size_t], vp),
        ("ggml_backend_dev_type", [vp], ctypes.c_int),
        ("ggml_backend_dev_backend_reg", [vp], vp),
        ("ggml_backend_dev_by_type", [ctypes.c_int], vp),
    ):
        function = getattr(lib, name)
        function.argtypes, function.restype = args, res
    return lib


@functools.cache
def llama_cpp_version() -> str | None:
    """The installed llama-cpp-python's version, or None when it is not installed."""
    try:
        return importlib.metadata.version(LLAMA_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def rpc_unsupported_reason() -> str | None:
    """Why this hive cannot lend memory over RPC, in one sentence; None when it can."""
    lib = load_ggml()
    if lib is None:
        return NO_WHEEL
    return None if lib.ggml_backend_reg_by_name(b"RPC") else NO_RPC


def server_devices(lib: ctypes.CDLL) -> list[int]:
    """What the server lends: the machine's GPUs (not RPC devices), else its CPU, as
    llama.cpp's rpc-server picks them."""
    gpus = []
    for index in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(index)
        reg = lib.ggml_backend_dev_backend_reg(dev)
        if (
            lib.ggml_backend_dev_type(dev) == DEVICE_TYPE_GPU
            and lib.ggml_backend_reg_name(reg) != b"RPC"
        ):
            gpus.append(dev)
    cpu = lib.ggml_backend_dev_by_type(DEVICE_TYPE_CPU)
    return gpus or ([cpu] if cpu else [])


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when `parent` exits; exit now if it has."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0)
    if os.getppid() != parent:
        print(f"rpc-server: the hive (pid {parent}) is gone; not starting", file=sys.stderr)
        sys.exit(EXIT_FAILED)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rbee-rpc-server", description="ggml's RPC server, lent by rbee-hive."
    )
    parser.add_argument("--endpoint", required=True, help="127.0.0.1:PORT to listen on")
    parser.add_argument("--cache", required=True, help="folder of the tensor cache")
    parser.add_argument("--parent", type=int, required=True, help="the hive's pid")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    die_with_parent(args.parent)
    host, _, port = args.endpoint.rpartition(":")
    if host != LOOPBACK or not port.isdigit():
        print(f"rpc-server: {args.endpoint} is not {LOOPBACK}:PORT", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    reason = rpc_unsupported_reason()
    lib = load_ggml()
    if reason is not None or lib is None:
        print(f"rpc-server: {reason}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    reg = lib.ggml_backend_reg_by_name(b"RPC")
    start = StartServer(
        lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_rpc_start_server")
    )
    devices = server_devices(lib)
    cache = Path(args.cache)
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The C loop blocks in accept() without the GIL: no Python handler would ever run, so
    # SIGINT and SIGTERM keep their default action (end the process).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    array = (ctypes.c_void_p * len(devices))(*devices)
    start(args.endpoint.encode(), str(cache).encode(), max(args.threads, 1), len(devices), array)
    print("rpc-server: ggml's RPC server stopped (see the lines above)", file=sys.stderr)
    sys.exit(EXIT_FAILED)  # it returns only when it could not listen or serve


if __name__ == "__main__":
    main()
