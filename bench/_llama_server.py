"""llama.cpp's own server (`llama-server`) as a peer for the benches, built once.

    server = LlamaServer.start(binary(), model, threads=2, parallel=8, ctx_per_slot=4096, log=...)

The peer must be the llama.cpp rbee runs, not whatever release is on the PATH: it is built
from the sources vendored in the llama-cpp-python sdist of the installed version (uv's
cache holds it unpacked after `uv sync`; otherwise `pip download` fetches the sdist), with
`cmake -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DGGML_NATIVE=ON`, static libraries, and
only the `llama-server` target. The binary is kept in the user's cache folder
(platformdirs: ~/.cache/rbee/llama-server/<version>/ on Linux), so the minutes of compiling
are paid once per version. Where it cannot be built (no cmake or compiler, no network for
the sdist, a failed compile), `binary()` raises `Unavailable` saying why, and the bench
skips the peer with that reason.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import platformdirs

PACKAGE = "llama-cpp-python"
BUILD_FLAGS = (
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_CURL=OFF",
    "-DGGML_NATIVE=ON",  # this CPU's instructions, as the installed wheel was built here
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary, copied out of the build tree
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
)
BUILD_JOBS = 2  # compile jobs: the machine is shared
DOWNLOAD_TIMEOUT_S = 600.0


class Unavailable(Exception):
    """llama-server cannot be had here; the message says why (one sentence)."""


def version() -> str:
    """The installed llama-cpp-python's version: the sources the peer is built from."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise Unavailable(f"{PACKAGE} is not installed in this environment") from exc


def cache_dir() -> Path:
    """Where this version's build and binary live."""
    return Path(platformdirs.user_cache_dir("rbee", appauthor=False)) / "llama-server" / version()


def binary() -> Path:
    """The cached llama-server, built first if it is not there yet (minutes, once)."""
    built = cache_dir() / "llama-server"
    if built.exists():
        return built
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} is not installed, so llama-server cannot be built")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    print(f"building llama-server {version()} into {folder} (once; several minutes)...")
    _build(_previous_sources(folder / "build") or _sources(folder), folder)
    return built


def _previous_sources(build: Path) -> Path | None:
    """The sources an interrupted build in `build` was configured from, if still there
    (cmake refuses another source folder for a build folder; resuming saves minutes).
    A build folder whose sources are gone is removed."""
    cache = build / "CMakeCache.txt"
    if not cache.exists():
        return None
    for line in cache.read_text(errors="replace").splitlines():
        if line.startswith("CMAKE_HOME_DIRECTORY:INTERNAL="):
            tree = Path(line.split("=", 1)[1])
            if (tree / "CMakeLists.txt").exists():
                return tree
    shutil.rmtree(build)
    return None


def _sources(folder: Path) -> Path:
    """vendor/llama.cpp of the sdist: from uv's cache, else unpacked from `pip download`."""
    for found in sorted(glob.glob(str(_uv_cache() / "sdists-v*" / "pypi" / PACKAGE / version()))):
        for tree in sorted(Path(found).glob("*/src/vendor/llama.cpp")):
            if (tree / "CMakeLists.txt").exists():
                return tree
    unpacked = folder / "src"
    tree = unpacked / "vendor" / "llama.cpp"
    if (tree / "CMakeLists.txt").exists():
        return tree
    with tempfile.TemporaryDirectory(prefix="rbee-sdist-") as tmp:
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        argv += ["--dest", tmp, f"{PACKAGE}=={version()}"]
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=DOWNLOAD_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            raise Unavailable(f"the {PACKAGE} {version()} sdist could not be downloaded") from exc
        archives = list(Path(tmp).glob("*.tar.gz"))
        if not archives:
            raise Unavailable(f"pip downloaded no {PACKAGE} {version()} sdist")
        with tarfile.open(archives[0]) as tar:
            members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
            for member in members:  # strip the sdist's top folder
                member.name = member.name.split("/", 1)[1]
            tar.extractall(unpacked, members=members, filter="data")
    return tree


def _uv_cache() -> Path:
    if env := os.environ.get("UV_CACHE_DIR"):
        return Path(env)
    return Path(platformdirs.user_cache_dir("uv", appauthor=False))


def _build(tree: Path, folder: Path) -> None:
    """cmake configure and build in `folder`/build; the binary copied to `folder`."""
    build, log = folder / "build", folder / "build.log"
    steps = [
        ["cmake", "-B", str(build), "-S", str(tree), *BUILD_FLAGS],
        ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(BUILD_JOBS)],
    ]
    with log.open("w") as out:
        for argv in steps:
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise Unavailable(f"building llama-server failed; see {log}")
    made = build / "bin" / "llama-server"
    if not made.exists():
        raise Unavailable(f"the build made no {made}; see {log}")
    partial = folder / "llama-server.partial"  # renamed into place: a binary there is whole
    shutil.copy2(made, partial)
    partial.rename(folder / "llama-server")


class LlamaServer:
    """A llama-server process on loopback serving one GGUF; `close()` stops it."""

    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    def start(
        cls,
        exe: Path,
        model: Path,
        *,
        port: int,
        threads: int,
        parallel: int,
        ctx_per_slot: int,
        log: Path,
    ) -> LlamaServer:
        """Start it with the worker's context shape: `parallel` slots of `ctx_per_slot`
        cells each (not one shared pool), flash attention off, the same threads for
        prompts and generation; continuous batching is llama-server's default."""
        argv = [str(exe), "--model", str(model), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--threads", str(threads), "--threads-batch", str(threads)]
        argv += ["--parallel", str(parallel), "--ctx-size", str(ctx_per_slot * parallel)]
        argv += ["--no-kv-unified", "--flash-attn", "off", "--no-webui", "--jinja"]
        with log.open("ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        return cls(process, f"http://127.0.0.1:{port}")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(10)


RPC_TARGETS = {"rpc-server": "ggml-rpc-server", "llama-bench": "llama-bench"}  # name: target


def rpc_binaries() -> dict[str, Path]:
    """llama.cpp's own `rpc-server` and `llama-bench`, built with `-DGGML_RPC=ON` from the
    same vendored sources (one build folder of their own, `build-rpc`, so llama-server's
    build is untouched), cached beside llama-server; `Unavailable` says why not."""
    folder = cache_dir()
    made = {name: folder / name for name in RPC_TARGETS}
    if all(path.exists() for path in made.values()):
        return made
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} is not installed, so rpc-server cannot be built")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"building rpc-server and llama-bench {version()} into {folder} (once; minutes)...")
    build = folder / "build-rpc"
    tree = _previous_sources(build) or _previous_sources(folder / "build") or _sources(folder)
    log = folder / "build-rpc.log"
    steps = [
        ["cmake", "-B", str(build), "-S", str(tree), *BUILD_FLAGS, "-DGGML_RPC=ON"],
        ["cmake", "--build", str(build), "-j", str(BUILD_JOBS), "--target", *RPC_TARGETS.values()],
    ]
    with log.open("w") as out:
        for argv in steps:
            if subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                raise Unavailable(f"building rpc-server failed; see {log}")
    for name, path in made.items():
        binary_made = build / "bin" / RPC_TARGETS[name]
        if not binary_made.exists():
            raise Unavailable(f"the build made no {binary_made}; see {log}")
        partial = folder / f"{name}.partial"
        shutil.copy2(binary_made, partial)
        partial.rename(path)
    return made
