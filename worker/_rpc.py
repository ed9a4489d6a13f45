"""The worker's end of a split: ggml's RPC servers registered as devices before the model
loads, as llama.cpp's own `--rpc` does (common/arg.cpp, add_rpc_devices).

    add_rpc_servers(["127.0.0.1:50052", "127.0.0.1:50053"])   # before llama_model_load
    rpc_devices()   # [RpcDevice(name="RPC0", endpoint=..., free=..., total=...), ...]

ggml aborts the whole process when an RPC server cannot be reached or speaks another
protocol (GGML_ABORT in its client), so each server is first greeted here, in Python,
with ggml's own HELLO message: a dead endpoint or a version mismatch is a WorkerError
naming it, never a crash. Works through ctypes on the wheel's libggml (the library
libllama is linked against, so the devices registered here are the ones the model sees).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import re
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jobs import LOOPBACK, rpc_protocol
from worker.errors import WorkerError

ENDPOINT = re.compile(r"^([A-Za-z0-9.\-]+):(\d{1,5})$")
RPC_CMD_HELLO = 14  # ggml-rpc.cpp: "RPC_CMD_HELLO must be always 14"
CONN_CAPS = 24  # RPC_CONN_CAPS_SIZE: the HELLO request's body, zeros for plain TCP
HELLO_REPLY = 4 + CONN_CAPS  # major, minor, patch, padding, caps
PROBE_TIMEOUT_S = 5.0  # a server busy with another client does not answer at all
NO_RPC = "llama-cpp-python was built without GGML_RPC; run make install"

_registered: set[str] = set()  # endpoints registered in this process (ggml keeps them)


class RpcUnavailable(WorkerError):
    """Raised when RPC is not built, or an RPC server cannot be reached or used."""


@dataclass(frozen=True, slots=True)
class RpcDevice:
    """A registered RPC device and the memory its server reports."""

    name: str  # "RPC0": llama.cpp's device name
    endpoint: str
    free: int
    total: int


@functools.cache
def _ggml() -> ctypes.CDLL | None:
    """libggml of the installed wheel with the functions used here typed; None when
    llama-cpp-python is not installed."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "lib"
    # The wheel holds copies, not links: libggml.so, libggml.so.0, ... Only the one named
    # by its soname (the shortest versioned name) is the instance libllama loads, whose
    # device registry the model sees.
    found = sorted(folder.glob("libggml.so.*"), key=lambda p: len(p.name))
    found += [p for p in (folder / n for n in ("libggml.so", "libggml.dylib")) if p.exists()]
    if not found:
        return None
    lib = ctypes.CDLL(str(found[0]))
    vp, cp, size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
    for name, args, res in (
        ("ggml_backend_reg_by_name", [cp], vp),
        ("ggml_backend_reg_get_proc_address", [vp, cp], vp),
        ("ggml_backend_reg_name", [vp], cp),
        ("ggml_backend_register", [vp], None),
        ("ggml_backend_dev_count", [], size),
        ("ggml_backend_dev_get", [size], vp),
        ("ggml_backend_dev_name", [vp], cp),
        ("ggml_backend_dev_description", [vp], cp),
        ("ggml_backend_dev_backend_reg", [vp], vp),
        ("ggml_backend_dev_memory", [vp, ctypes.POINTER(size), ctypes.POINTER(size)], None),
    ):
        function = getattr(lib, name)
        function.argtypes, function.restype = args, res
    return lib


def supports_rpc() -> bool:
    """Whether the installed llama.cpp has ggml's RPC backend (GGML_RPC=on)."""
    lib = _ggml()
    return lib is not None and bool(lib.ggml_backend_reg_by_name(b"RPC"))


def probe(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """The protocol version ("7.0.0") the RPC server at `endpoint` answers ggml's HELLO
    with; raises RpcUnavailable when it cannot be reached or does not answer as one."""
    host, port = _split(endpoint)
    hello = struct.pack("<BQ", RPC_CMD_HELLO, CONN_CAPS) + bytes(CONN_CAPS)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(hello)
            reply = _read(sock, 8 + HELLO_REPLY)
    except OSError as exc:
        raise RpcUnavailable(
            f"the RPC server {endpoint} cannot be reached ({exc}); check that its hive "
            "lends it and that the link to it is up"
        ) from None
    (size,) = struct.unpack_from("<Q", reply)
    if size != HELLO_REPLY:
        raise RpcUnavailable(
            f"{endpoint} did not answer as a ggml RPC server of protocol {rpc_protocol()} "
            "(another version or another program); install the same rbee on both hives"
        )
    major, minor, patch = reply[8:11]
    return f"{major}.{minor}.{patch}"


def add_rpc_servers(endpoints: Sequence[str]) -> list[RpcDevice]:
    """Register each `host:port` as llama.cpp devices (call before the model loads); the
    devices of these endpoints. Raises RpcUnavailable naming the endpoint at fault."""
    lib = _ggml()
    if lib is None or not lib.ggml_backend_reg_by_name(b"RPC"):
        raise RpcUnavailable(NO_RPC)
    ours = rpc_protocol()
    reg = lib.ggml_backend_reg_by_name(b"RPC")
    address = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_rpc_add_server")
    add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(address)
    for endpoint in endpoints:  # every one checked before any is registered
        _split(endpoint)
    for endpoint in endpoints:
        if endpoint in _registered:
            continue
        theirs = probe(endpoint)
        if ours is not None and not _compatible(ours, theirs):
            raise RpcUnavailable(
                f"the RPC server {endpoint} speaks protocol {theirs}, this worker {ours}; "
                "install the same rbee (make install) on both hives"
            )
        server_reg = add_server(endpoint.encode())
        if not server_reg:
            raise RpcUnavailable(f"the RPC server {endpoint} offers no device to load onto")
        lib.ggml_backend_register(server_reg)
        _registered.add(endpoint)
    return [d for d in rpc_devices() if d.endpoint in endpoints]


def rpc_devices() -> list[RpcDevice]:
    """Every RPC device registered in this process, in llama.cpp's device order, with the
    free and total memory its server reports now (one round trip each)."""
    lib = _ggml()
    if lib is None:
        return []
    devices = []
    for index in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(index)
        if lib.ggml_backend_reg_name(lib.ggml_backend_dev_backend_reg(dev)) != b"RPC":
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        name = lib.ggml_backend_dev_name(dev).decode()
        endpoint = lib.ggml_backend_dev_description(dev).decode()
        devices.append(RpcDevice(name, endpoint, free.value, total.value))
    return devices


def _compatible(ours: str, theirs: str) -> bool:
    """As ggml's client decides: the same major version, a minor no newer than ours."""
    (a_major, a_minor, _), (b_major, b_minor, _) = (
        tuple(int(p) for p in v.split(".")) for v in (ours, theirs)
    )
    return a_major == b_major and b_minor <= a_minor


def _split(endpoint: str) -> tuple[str, int]:
    """(host, port) of a loopback endpoint: RPC has no authentication, so rbee reaches a
    server only on this machine's 127.0.0.1 (a peer's through an SSH forward)."""
    match = ENDPOINT.match(endpoint)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise RpcUnavailable(f"{endpoint!r} is not an RPC server's 127.0.0.1:PORT")
    if match.group(1) != LOOPBACK:
        raise RpcUnavailable(
            f"RPC server {endpoint} is not on {LOOPBACK}: ggml's RPC has no authentication, "
            "so rbee reaches a peer's server only through an SSH forward on this machine"
        )
    return match.group(1), int(match.group(2))


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data.ljust(size, b"\0")
