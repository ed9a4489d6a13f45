"""The worker's end of a split: ggml's RPC servers registered as devices before the model
loads, as llama.cpp's own `--rpc` does (common/arg.cpp, add_rpc_devices).

    add_rpc_servers(["127.0.0.1:50052", "127.0.0.1:50053"])   # before llama_model_load
    rpc_devices()   # [RpcDevice(name="RPC0", endpoint=..., free=..., total=...), ...]

ggml aborts the whole process when an RPC server cannot be reached or speaks another
protocol (GGML_ABORT in its client), so each server is first greeted here, in Python,
with ggml's own HELLO message: a dead endpoint or a version mismatch is a WorkerError
naming it, never a crash. Works through ctypes on the wheel's libggml (the library
libllama is linked against, so the devices registered here are the ones the model sees).

Once the model is loaded, `PeerWatch` keeps an eye on the peers (docs/splitting.md, "When
a peer fails"): a peer that goes away mid-generation makes ggml abort in its RPC thread
(RPC_STATUS_ASSERT), and a frozen one leaves that thread waiting on its socket for ever.
Either way the watch names the peer in one sentence and hands it to the worker, which
fails its jobs with it and exits (a model half of whose layers are gone cannot serve).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import importlib.util
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
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
DEVICE_TYPE_CPU = 0  # enum ggml_backend_dev_type
GGUF_TYPE_UINT32, GGUF_TYPE_STRING = 4, 8  # enum gguf_type
OUTPUT_TENSORS = rb"^(output|output_norm|token_embd)\.weight$"  # the output layer's weights
WATCH_S = 0.25  # how often PeerWatch looks at the peers' connections
STALL_S = 6.0  # a peer silent this long while a step waits on it is frozen (the job must
# end within 10 s of a peer failing; a step on a live peer is a fraction of a second)
TCP_LAST_DATA_RECV = 52  # offset of tcpi_last_data_recv (ms) in Linux's struct tcp_info
TCP_INFO_SIZE = 104

_registered: set[str] = set()  # endpoints registered in this process (ggml keeps them)
_names: dict[str, str] = {}  # endpoint -> the hive lending it (the worker's --rpc-names)


class RpcUnavailable(WorkerError):
    """Raised when RPC is not built, or an RPC server cannot be reached or used."""


class PeerLost(RpcUnavailable):
    """Fails a split worker's jobs once one of its RPC peers failed (PeerWatch)."""


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
    path = _wheel_library("libggml")
    if path is None:
        return None
    lib = ctypes.CDLL(str(path))
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
        ("ggml_backend_dev_by_type", [ctypes.c_int], vp),
        ("ggml_backend_dev_buffer_type", [vp], vp),
    ):
        function = getattr(lib, name)
        function.argtypes, function.restype = args, res
    return lib


def _wheel_library(stem: str) -> Path | None:
    """The copy of the wheel's `stem` library that libllama loads, if installed.

    The wheel holds copies, not links: libggml.so, libggml.so.0, ... Only the one named by
    its soname (the shortest versioned name) is the instance libllama loads, whose device
    registry (and abort hook) the model sees."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "lib"
    found = sorted(folder.glob(f"{stem}.so.*"), key=lambda p: len(p.name))
    found += [p for p in (folder / f"{stem}{x}" for x in (".so", ".dylib")) if p.exists()]
    return found[0] if found else None


def name_peers(endpoints: Sequence[str], hives: Sequence[str]) -> None:
    """Remember the hive lending each endpoint (the worker's --rpc-names, in --rpc order;
    "" for none): every message about a peer then names its hive, not only the loopback
    port this worker reaches it at (an SSH forward's, for a peer on another machine)."""
    _names.update((e, h) for e, h in zip(endpoints, hives, strict=False) if h)


def peer_label(endpoint: str) -> str:
    """`endpoint`, with the hive lending it when known: "127.0.0.1:41234 (hive gpu2)"."""
    name = _names.get(endpoint)
    return f"{endpoint} (hive {name})" if name else endpoint


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
            f"the RPC server {peer_label(endpoint)} cannot be reached ({exc}); check that its hive "
            "lends it and that the link to it is up"
        ) from None
    (size,) = struct.unpack_from("<Q", reply)
    if size != HELLO_REPLY:
        raise RpcUnavailable(
            f"{peer_label(endpoint)} did not answer as a ggml RPC server of protocol "
            f"{rpc_protocol()} "
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
                f"the RPC server {peer_label(endpoint)} speaks protocol {theirs}, this worker "
                f"{ours}; "
                "install the same rbee (make install) on both hives"
            )
        server_reg = add_server(endpoint.encode())
        if not server_reg:
            raise RpcUnavailable(
                f"the RPC server {peer_label(endpoint)} offers no device to load onto"
            )
        lib.ggml_backend_register(server_reg)
        _registered.add(endpoint)
    return [d for d in rpc_devices() if d.endpoint in endpoints]


class _BufferOverride(ctypes.Structure):
    """llama.h's llama_model_tensor_buft_override: tensors whose name matches `pattern`
    (a regex) go in buffers of type `buft`."""

    _fields_ = (("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p))


def output_kept_here() -> ctypes.Array[_BufferOverride]:
    """Tensor overrides (llama.cpp's `-ot`) keeping the output layer in this process's CPU
    memory: for `llama_model_params.tensor_buft_overrides` (its address), kept alive
    through the load.

    Why: llama.cpp offloads layers from the last, the output first, so a split that
    leaves this CPU the first layers would put the output on the last RPC server, and
    every token's logits (n_vocab floats: 196 KB for SmolLM2, 512 KB for Llama 3) would
    cross the link back instead of its hidden state (n_embd floats: 2.3 KB). A model that
    ties its output to the embedding loads `token_embd.weight` as its output."""
    lib = _ggml()
    if lib is None:
        raise RpcUnavailable(NO_RPC)
    buft = lib.ggml_backend_dev_buffer_type(lib.ggml_backend_dev_by_type(DEVICE_TYPE_CPU))
    return (_BufferOverride * 2)(_BufferOverride(OUTPUT_TENSORS, buft), _BufferOverride())


class _GgufInitParams(ctypes.Structure):
    """gguf.h's gguf_init_params: the header only, no tensor data."""

    _fields_ = (("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p))


def block_count(path: Path) -> int | None:
    """The model's repeating layers (`{arch}.block_count`), read with ggml's own GGUF
    reader (C, the header alone: ~5 ms for SmolLM2, where a vocab-only llama.cpp load
    builds the tokenizer first, ~100 ms of a split's load); None when the header cannot
    be read or lacks it, or the wheel has no libggml-base."""
    found = _wheel_library("libggml-base")
    if found is None:
        return None
    lib = ctypes.CDLL(str(found))
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    for name, args, res in (
        ("gguf_init_from_file", [cp, _GgufInitParams], vp),
        ("gguf_find_key", [vp, cp], ctypes.c_int64),
        ("gguf_get_kv_type", [vp, ctypes.c_int64], ctypes.c_int),
        ("gguf_get_val_str", [vp, ctypes.c_int64], cp),
        ("gguf_get_val_u32", [vp, ctypes.c_int64], ctypes.c_uint32),
        ("gguf_free", [vp], None),
    ):
        function = getattr(lib, name)
        function.argtypes, function.restype = args, res
    ctx = lib.gguf_init_from_file(str(path).encode(), _GgufInitParams(True, None))
    if not ctx:
        return None
    try:
        at = lib.gguf_find_key(ctx, b"general.architecture")
        if at < 0 or lib.gguf_get_kv_type(ctx, at) != GGUF_TYPE_STRING:
            return None
        key = lib.gguf_get_val_str(ctx, at) + b".block_count"
        at = lib.gguf_find_key(ctx, key)
        if at < 0 or lib.gguf_get_kv_type(ctx, at) != GGUF_TYPE_UINT32:
            return None
        return int(lib.gguf_get_val_u32(ctx, at))
    finally:
        lib.gguf_free(ctx)


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


class PeerWatch:
    """Watches a loaded split's RPC peers and calls `lost(sentence)` once, from its own
    thread or ggml's, when one fails:

    - gone: ggml's connection to it was closed by the other end (its server or the SSH
      link died), whether ggml noticed yet (it aborts: the abort hook below) or not;
    - frozen: `busy()` (a step is generating) and the peer has sent nothing for `stall_s`
      (Linux: the socket's tcpi_last_data_recv); ggml would wait on it for ever.

    After `lost`, the worker is expected to exit: ggml's thread that aborted is parked (so
    the worker can say why before it goes) and the model cannot be used again."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        lost: Callable[[str], None],
        busy: Callable[[], bool],
        stall_s: float = STALL_S,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.lost = lost
        self.busy = busy
        self.stall_s = stall_s
        self.reason: str | None = None
        self._busy_since: float | None = None  # monotonic time `busy()` was first seen true
        self._once = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> PeerWatch:
        """Install the abort hook and start watching (once the model is loaded)."""
        global _watch
        _watch = self
        _install_abort_hook()
        threading.Thread(target=self._run, name="rpc peer watch", daemon=True).start()
        return self

    def close(self) -> None:
        self._stop.set()

    def check(self) -> str | None:
        """Why a peer has failed, or None while all are well."""
        found = _connections(self.endpoints)
        for endpoint in self.endpoints:
            states = [status for _, status in found[endpoint]]
            if "ESTABLISHED" not in states:
                how = "closed the connection" if states else "dropped the connection"
                return f"its RPC peer {peer_label(endpoint)} went away (the server {how})"
        now = time.monotonic()
        if not self.busy():
            self._busy_since = None
            return None
        if self._busy_since is None:
            self._busy_since = now  # a peer silent while the worker idled is no stall
        for endpoint in self.endpoints:
            silent = [_silent_s(fd) for fd, status in found[endpoint] if status == "ESTABLISHED"]
            known = [s for s in silent if s is not None]
            waited = min([*known, now - self._busy_since]) if known else 0.0
            if waited >= self.stall_s:
                return (
                    f"its RPC peer {peer_label(endpoint)} stopped answering (nothing for "
                    f"{waited:.0f} s "
                    "while generating: its server or its link is frozen)"
                )
        return None

    def fail(self, reason: str) -> None:
        """Report `reason` once (any thread)."""
        if not self._once.acquire(blocking=False):
            return
        self.reason = reason
        self._stop.set()
        self.lost(reason)

    def _run(self) -> None:
        while not self._stop.wait(WATCH_S):
            try:
                reason = self.check()
            except Exception as exc:  # psutil refused: nothing to watch with, say so once
                print(f"llm-worker-rbee: cannot watch the RPC peers: {exc}", file=sys.stderr)
                return
            if reason is not None:
                self.fail(reason)


_watch: PeerWatch | None = None  # the loaded split's watch: ggml's abort hook reports to it
_ABORT_HOOK = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
_hook: object | None = None  # the ctypes callback, kept alive while ggml holds it


def _on_ggml_abort(message: bytes | None) -> None:
    """ggml's abort hook (ggml_set_abort_callback): runs in the thread about to abort().
    For a split, it reports the peer at fault and parks that thread instead, so the worker
    fails its jobs with a sentence and exits on its own terms."""
    text = (message or b"").decode(errors="replace").strip()
    print(text, file=sys.stderr)  # what ggml prints (its backtrace aside) without a hook
    watch = _watch
    if watch is None:
        return
    reason = None
    deadline = time.monotonic() + 1.0  # the peer's close may take a moment to be seen
    while reason is None and time.monotonic() < deadline:
        reason = watch.check()
        if reason is None:
            time.sleep(WATCH_S / 5)
    watch.fail(reason or f"llama.cpp stopped it: {text}")
    threading.Event().wait()  # never returns: abort() would end the worker unheard


def _install_abort_hook() -> None:
    global _hook
    path = _wheel_library("libggml-base")  # where ggml_abort lives
    if path is None or _hook is not None:
        return
    setter = getattr(ctypes.CDLL(str(path)), "ggml_set_abort_callback", None)
    if setter is None:
        return  # an older ggml: it aborts, and the hive reports the exit
    setter.argtypes, setter.restype = [_ABORT_HOOK], ctypes.c_void_p
    _hook = _ABORT_HOOK(_on_ggml_abort)
    setter(_hook)


def _connections(endpoints: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
    """endpoint -> (fd, TCP state) of each of this process's connections to it."""
    import psutil

    found: dict[str, list[tuple[int, str]]] = {e: [] for e in endpoints}
    for conn in psutil.Process().net_connections(kind="tcp"):
        if conn.raddr:
            key = f"{conn.raddr.ip}:{conn.raddr.port}"
            if key in found:
                found[key].append((conn.fd, conn.status))
    return found


def _silent_s(fd: int) -> float | None:
    """Seconds since the socket `fd` last received data (Linux's TCP_INFO); None elsewhere."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None or fd < 0:
        return None
    try:
        with socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM) as sock:  # a dup
            info = sock.getsockopt(socket.IPPROTO_TCP, option, TCP_INFO_SIZE)
    except OSError:
        return None
    if len(info) < TCP_LAST_DATA_RECV + 4:
        return None
    (ms,) = struct.unpack_from("<I", info, TCP_LAST_DATA_RECV)
    return float(ms) / 1000


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
