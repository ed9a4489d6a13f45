"""`keeper hive install ALIAS`: put rbee in a venv on a remote machine, over SSH only.

The remote needs no package index. Once the SSH connection is up (host key verified,
logged in: a refusal ends the command at once, before anything is built), the keeper
builds this project's wheel and a wheelhouse of its dependencies here (`pip wheel`, from
pip's cache or the index this machine uses), copies them over SFTP, creates the venv with
the remote's python and runs `pip install --no-index --find-links WHEELHOUSE rbee[worker]`
there. Each step narrates, and what pip prints (here and there) streams through the line
splitter like any child's output (actor `pip`, origin `local` or `ssh:<alias>`). The
wheels are built for this machine's Python and CPU: the remote needs the same Python minor
version (or `--with-index`, which lets the remote's pip fetch what is missing).
llama-cpp-python is built as the Makefile's install rule builds it (`llama_build_env`):
with ggml's RPC backend, so the remote can take part in a split model, from a pip cache of
rbee's own whose wheel is always such a build.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from jobs import how_it_ended
from keeper.errors import JobFailed, UsageError
from keeper.hosts import HiveHost
from keeper.output import make_renderer
from keeper.settings import KeeperSettings
from narration_core import LineSplitter, Narrator, relay_lines

if TYPE_CHECKING:
    from anyio.abc import ByteReceiveStream

    from keeper.remote import SshHost

NARRATE = Narrator("keeper")
READ_CHUNK = 64 * 1024  # bytes of a child's output relayed at a time
DEFAULT_PYTHON = "python3"  # the remote interpreter that creates the venv
PROJECT = "rbee[worker]"  # what the remote venv gets: the hive needs the worker's llama.cpp

# $1 python, $2 venv: create the venv unless it exists; stderr joins stdout.
VENV_SCRIPT = """exec 2>&1
if [ -x "$2/bin/python" ]; then echo "venv $2 exists; reusing it"; exit 0; fi
command -v "$1" >/dev/null || { echo "rbee-install: no $1 on this machine"; exit 127; }
"$1" -m venv "$2"
"""
PIP_SCRIPT = 'exec 2>&1; "$@"'


def llama_build_env() -> dict[str, str]:
    """This environment plus the Makefile's llama-cpp-python build (its install rule):
    CMAKE_ARGS with GGML_RPC, and GGML_CUDA where nvcc and a driver (nvidia-smi) are
    found or GGML_CUDA=on says so; PIP_CACHE_DIR the cache of rbee's own for that variant
    (pip's wheel cache keys on the sdist, not on CMAKE_ARGS)."""
    asked = os.environ.get("GGML_CUDA")
    cuda = (
        asked == "on"
        if asked in ("on", "off")
        else bool(shutil.which("nvcc") and shutil.which("nvidia-smi"))
    )
    cache = Path.home() / ".cache" / "rbee" / ("pip-rpc-cuda" if cuda else "pip-rpc")
    cmake = "-DGGML_RPC=on" + (" -DGGML_CUDA=on" if cuda else "")
    return {**os.environ, "CMAKE_ARGS": cmake, "PIP_CACHE_DIR": str(cache)}


def project_root() -> Path:
    """The source tree this keeper runs from (its pyproject.toml), to build the wheel."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise UsageError(
            f"this keeper is not running from rbee's source tree ({root} has no "
            "pyproject.toml), so it cannot build the wheel to install; run it from a checkout"
        )
    return root


def install(
    settings: KeeperSettings,
    target: HiveHost,
    *,
    venv: str | None,
    with_index: bool,
    accept_new_host_key: bool,
) -> None:
    """Connect, build, copy, create the venv, install; narrate each step. SshError (exit 3)
    or JobFailed (exit 1) with the failing step's last lines above."""
    root = project_root()
    with make_renderer(settings) as out:
        out.status(f"Installing rbee on {target.alias}")
        anyio.run(_install, target, root, venv, with_index, accept_new_host_key)


async def _install(
    target: HiveHost,
    root: Path,
    venv_asked: str | None,
    with_index: bool,
    accept_new_host_key: bool,
) -> None:
    from keeper import remote

    # Connect first: an unknown or changed host key, a refused login or a dead host fails
    # the command at once, not after a minute of building wheels for nothing. The idle
    # connection survives the build (keepalives every ssh.KEEPALIVE_S).
    async with remote.open_host(target, accept_new_host_key=accept_new_host_key) as host:
        with tempfile.TemporaryDirectory(prefix="rbee-wh-") as tmp:
            wheelhouse = Path(tmp)
            what = f"{root}[worker]"
            build = [sys.executable, "-m", "pip", "wheel", "--wheel-dir", str(wheelhouse), what]
            if with_index:
                build.insert(4, "--no-deps")
            NARRATE.action("build").human(
                f"Building the rbee wheel{'' if with_index else ' and its dependencies'} "
                f"in {wheelhouse}"
            ).emit()
            await _run_local(build, step="building the wheelhouse", env=llama_build_env())
            wheels, size = await anyio.to_thread.run_sync(_wheels, wheelhouse)
            await _put_in_place(host, target, wheels, size, venv_asked, with_index)


async def _put_in_place(
    host: SshHost,
    target: HiveHost,
    wheels: list[Path],
    size: float,
    venv_asked: str | None,
    with_index: bool,
) -> None:
    """Copy the wheels, create the venv and pip install into it on the remote."""
    import asyncssh

    from keeper import ssh

    venv = host.absolute(venv_asked) if venv_asked else host.venv()
    remote_wh = host.home / "wheelhouse"
    NARRATE.action("copy").human(
        f"Copying {len(wheels)} wheels ({size:.1f} MiB) to {target.alias}:{remote_wh} over SFTP"
    ).emit()
    await ssh.run(host.conn, ssh.sh('rm -rf "$1" && mkdir -p "$1"', str(remote_wh)))
    try:
        async with host.conn.start_sftp_client() as sftp:
            await sftp.put([str(w) for w in wheels], str(remote_wh))
    except (OSError, asyncssh.Error) as exc:
        raise ssh.SshError(
            f"copying the wheels to {target.alias} over SFTP failed ({exc}); check "
            "that its sshd offers SFTP (Subsystem sftp) and its disk has room"
        ) from None
    python = target.python or DEFAULT_PYTHON
    NARRATE.action("venv").human(f"Creating the venv {venv} with {python}").emit()
    await _run_remote(host, ssh.sh(VENV_SCRIPT, python, venv), step="creating the venv")
    pip = [f"{venv}/bin/python", "-m", "pip", "install", "--find-links", str(remote_wh)]
    pip += [] if with_index else ["--no-index"]
    NARRATE.action("pip_install").human(
        f"Installing {PROJECT} into {venv} from the copied wheels"
    ).emit()
    await _run_remote(host, ssh.sh(PIP_SCRIPT, *pip, PROJECT), step="pip install")
    # pip keeps an installed rbee of the same version: put this build in place over it.
    ours = [str(remote_wh / w.name) for w in wheels if w.name.startswith("rbee-")]
    again = [*pip[:4], "--no-deps", "--force-reinstall", "--no-index", *ours]
    await _run_remote(host, ssh.sh(PIP_SCRIPT, *again), step="pip install")
    moved = venv != host.venv()  # --venv elsewhere than `hive start` will look
    hint = f'; set venv = "{venv_asked}" in its hives config entry' if moved else ""
    NARRATE.action("installed").human(
        f"rbee is installed on {target.alias} in {venv}; start it with "
        f"`keeper hive start {target.alias}`{hint}"
    ).emit()


def _wheels(wheelhouse: Path) -> tuple[list[Path], float]:
    """The built wheels and their total size in MiB."""
    wheels = sorted(wheelhouse.glob("*.whl"))
    return wheels, sum(w.stat().st_size for w in wheels) / 2**20


async def _relay(stream: ByteReceiveStream | None, origin: str) -> None:
    if stream is None:
        return
    splitter = LineSplitter()
    async for chunk in stream:
        relay_lines(splitter.feed(chunk), "stdout", actor="pip", origin=origin)
    relay_lines(splitter.flush(), "stdout", actor="pip", origin=origin)


async def _run_local(argv: list[str], *, step: str, env: dict[str, str] | None = None) -> None:
    import subprocess

    async with await anyio.open_process(
        argv, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env
    ) as process:
        await _relay(process.stdout, "local")
        code = await process.wait()
    if code != 0:
        raise JobFailed(f"{step} {how_it_ended(code)}; its last lines are above")


async def _run_remote(host: SshHost, cmd: str, *, step: str) -> None:
    import asyncssh

    from keeper import ssh

    splitter = LineSplitter()
    origin = f"ssh:{host.name}"
    try:
        async with host.conn.create_process(cmd, stdin=asyncssh.DEVNULL, encoding=None) as process:
            while chunk := await process.stdout.read(READ_CHUNK):
                relay_lines(splitter.feed(chunk), "stdout", actor="pip", origin=origin)
            relay_lines(splitter.flush(), "stdout", actor="pip", origin=origin)
            result = await process.wait()
    except (asyncssh.Error, OSError) as exc:
        raise ssh.SshError(f"the SSH connection dropped during {step} ({exc})") from None
    if result.exit_status == 127:
        raise ssh.SshError(
            f"{step} on {host.name} failed: the program is missing there (see above); "
            'install Python 3 with venv support or set python = "…" in its hives config entry'
        )
    if result.exit_status != 0:
        raise ssh.SshError(
            f"{step} on {host.name} exited with code {result.exit_status}; its last lines are "
            "above (a wheel for another Python version? retry with --with-index)"
        )
