"""The worker supervisor: the hive's workers, each a child under narration capture.

Workers outlive the job that spawned them, so the supervisor, not the job, owns them: each
runs as a task in the supervisor's own task group (entered with `async with
supervisor.running()`, from the hive's lifespan), and leaving that block stops them all.

Spawning happens in the spawn job's context: the capture re-emits the worker's lines into
that job under the worker's own actor, so its `startup` and `model_load` narration reaches
the keeper through the queen. Every line also goes to the worker's log file
(logs/workers/<id>.log), which is all that carries it once the spawn job has ended.

A split worker (`rpc_servers`) that exits unasked is narrated naming its RPC peers: the
worker's own last error when it gave one (it names the peer that failed, see
docs/splitting.md), else which peer no longer answers a connection.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import anyio
import anyio.abc
import httpx
import psutil

from hive._exits import signal_name, unreachable
from hive.errors import WorkerNotFound, WorkerStartError
from jobs import (
    FILE_MODE,
    HIVE_CREDENTIAL_ENV,
    LOOPBACK,
    TOKEN_ENV,
    WORKER_CREDENTIAL_ENV,
    WorkerInfo,
    WorkerState,
    private_folder,
    worker_credential,
)
from jobs.client import tls_for
from narration_core import (
    CapturedProcess,
    NarrationEvent,
    Narrator,
    ProcessNarrationCapture,
    format_line,
    register_job_sink,
)
from narration_core.proctree import STOP_GRACE_S

NARRATE = Narrator("rbee-hive")
WORKER_ACTOR = "llm-worker-rbee"
WORKER_PROGRAM = "llm-worker-rbee"  # console script next to the hive's Python
HEALTH_POLL_S = 0.05  # between /health probes while a worker starts
HEALTH_TIMEOUT_S = 2.0  # one probe
# Never inherited by a worker: it gets only its own credential (WORKER_CREDENTIAL_ENV).
SECRET_ENV = frozenset({TOKEN_ENV, HIVE_CREDENTIAL_ENV, WORKER_CREDENTIAL_ENV})
REFRESH_S = 1.0  # how often ready workers are asked whether they are generating (busy)


@dataclass(eq=False)
class Worker:
    """One worker process and what the hive knows about it."""

    id: str
    model_id: str
    model_path: Path
    device: str
    port: int
    log_path: Path
    process: CapturedProcess | None = None
    pid: int = 0
    create_time: float | None = None  # psutil's start time: pid + this guard against reuse
    started_at: float = field(default_factory=time.time)
    state: WorkerState = "starting"
    returncode: int | None = None
    exited: anyio.Event = field(default_factory=anyio.Event)
    last_line: str | None = None  # what it printed last: quoted if it fails to start
    failure: str | None = None  # its last error narration (`failed`): quoted before last_line
    # Its slots and context as its /health reports them (see `Supervisor._refresh`).
    slots: int = 1
    slots_busy: int = 0
    threads: int | None = None
    ctx_size: int | None = None
    kv_bytes: int | None = None
    rpc_servers: tuple[str, ...] = ()  # a split's peers, as this hive reaches them
    rpc_names: tuple[str, ...] = ()  # the hives lending them, in order ("": unnamed)

    def peer_label(self, endpoint: str) -> str:
        """`endpoint` with the hive lending it, as messages name a peer."""
        names = dict(zip(self.rpc_servers, self.rpc_names, strict=False))
        return f"{endpoint} (hive {names[endpoint]})" if names.get(endpoint) else endpoint

    host: str = LOOPBACK  # where the queen reaches it: the hive's own address

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            worker_id=self.id,
            pid=max(self.pid, 1),
            port=self.port,
            url=self.url,
            model=self.model_id,
            device=self.device,
            state=self.state,
            rss_bytes=_rss(self.pid),
            started_at=self.started_at,
            slots=self.slots,
            slots_busy=min(self.slots_busy, self.slots),
            threads=self.threads,
            ctx_size=self.ctx_size,
            kv_bytes=self.kv_bytes,
        )

    def to_dict(self) -> dict[str, object]:
        return {**self.info().model_dump(), "log": str(self.log_path)}


class Supervisor:
    """Spawns, lists and stops workers; see the module docstring for who owns what."""

    def __init__(
        self,
        *,
        logs_dir: Path,
        state_dir: Path,
        hive_url: str | None = None,
        credential: str | None = None,
        ready_timeout_s: float = 120.0,
        grace_s: float = STOP_GRACE_S,
        bind: str = LOOPBACK,
    ) -> None:
        self.logs_dir = logs_dir
        # Workers listen where the hive does, so a queen on another machine reaches them
        # (each with a credential of its own); at the address the hive advertises.
        self.bind = bind
        wildcard = bind in ("0.0.0.0", "::")
        advertised = urlsplit(hive_url).hostname if hive_url else None
        self.worker_host = (advertised or LOOPBACK) if wildcard else bind
        # The hive's credential, from which each worker gets its own (never this one).
        self.credential = credential
        self.state_dir = state_dir  # one job registry folder per worker, removed when it exits
        self.hive_url = hive_url
        self.ready_timeout_s = ready_timeout_s
        self.grace_s = grace_s
        self._workers: dict[str, Worker] = {}
        self._tg: anyio.abc.TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Supervisor]:
        """Own the workers while the block runs; leaving it stops every worker.

        First it removes what workers of an earlier run left: a hive killed with -9
        cannot clean up, and its workers died with it (they exit with their parent), so
        each leftover folder holds a dead worker's prompts and jobs `running` for ever."""
        self._remove_leftovers()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            tg.start_soon(self._refresh_forever, name="worker health")
            try:
                yield self
            finally:
                self._tg = None
                with anyio.CancelScope(shield=True):
                    await self.stop_all()
                tg.cancel_scope.cancel()

    def workers(self) -> list[Worker]:
        return sorted(self._workers.values(), key=lambda w: w.started_at)

    def infos(self) -> list[WorkerInfo]:
        """The workers as heartbeats report them."""
        return [w.info() for w in self.workers()]

    def using(self, model_id: str) -> list[str]:
        """Ids of the live workers that have `model_id` loaded."""
        return [w.id for w in self.workers() if w.model_id == model_id]

    async def spawn(
        self,
        model_id: str,
        model_path: Path,
        device: str,
        *,
        job_id: str,
        parallel: int | None = None,
        threads: int | None = None,
        ctx_size: int | None = None,
        rpc_servers: Sequence[str] = (),
        rpc_names: Sequence[str] = (),
        tensor_split: Sequence[float] = (),
    ) -> Worker:
        """Start a worker and return once its /health says ready.

        `parallel`, `threads`, `ctx_size`: the worker's flags (None: its defaults). A split's
        `rpc_servers` (127.0.0.1:P each) take the shares `tensor_split` gives (splitting.md);
        `rpc_names`, the hives lending them in the same order ("" for none), name them in
        the worker's messages and in this hive's.

        Its output is relayed into `job_id` (and its log file). Raises WorkerStartError
        quoting the worker's failure line if it exits first or is not ready in time; the
        worker is stopped then. Cancelling the spawn stops the worker too.
        """
        if self._tg is None:
            raise RuntimeError("the supervisor is not running; enter `supervisor.running()`")
        worker_id = f"w-{secrets.token_hex(4)}"
        private_folder(self.logs_dir)
        private_folder(self.state_dir)  # the worker makes its own folder inside
        port = free_port(self.bind)
        worker = Worker(
            worker_id,
            model_id,
            model_path,
            device,
            port,
            self.logs_dir / f"{worker_id}.log",
            rpc_servers=tuple(rpc_servers),
            rpc_names=tuple(rpc_names),
            host=self.worker_host,
        )
        flags: dict[str, object] = {"--hive-url": self.hive_url, "--parallel": parallel}
        flags.update({"--threads": threads, "--ctx-size": ctx_size})
        if self.bind != LOOPBACK:
            flags["--bind"] = self.bind
        if tensor_split:
            flags["--tensor-split"] = ",".join(f"{share:g}" for share in tensor_split)
        if any(rpc_names):
            flags["--rpc-names"] = ",".join(rpc_names)
        argv = worker_argv(worker, self.state_dir / worker_id, flags)
        NARRATE.action("worker_spawn").target(worker_id).human(
            f"Spawning worker {worker_id} for {model_id} on {device}, port {port}"
        ).emit()
        fd = os.open(worker.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        log = os.fdopen(fd, "a", buffering=1, encoding="utf-8")  # _run closes it
        unregister = register_job_sink(job_id, _Tee(worker, log))
        capture = ProcessNarrationCapture(
            job_id, actor=WORKER_ACTOR, origin=f"worker:{worker_id}", grace=self.grace_s
        )
        try:
            worker.process = await capture.spawn(argv, env=self._worker_env(worker_id))
        except OSError as exc:
            unregister()
            log.close()
            raise WorkerStartError(worker_id, f"cannot run {argv[0]} ({exc})") from exc
        worker.pid = worker.process.pid
        worker.create_time = _create_time(worker.pid)
        self._workers[worker_id] = worker
        # Started from the job's task, the worker's task copies the job's context; the tee
        # is registered for the job's id, so it keeps the log going after the job ends.
        self._tg.start_soon(self._run, worker, unregister, log, name=f"worker {worker_id}")
        try:
            await self._wait_ready(worker)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stop(worker)
            raise
        worker.state = "ready"
        NARRATE.action("worker_ready").target(worker_id).human(
            f"Worker {worker_id} ready at {worker.url} (pid {worker.pid})"
        ).emit()
        return worker

    def _remove_leftovers(self) -> None:
        try:
            leftovers = [p for p in self.state_dir.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return
        for folder in leftovers:
            shutil.rmtree(folder, ignore_errors=True)
        if leftovers:
            NARRATE.action("worker_cleanup").human(
                f"Removed the state of {len(leftovers)} worker"
                f"{'s' * (len(leftovers) != 1)} of an earlier run that ended without cleaning "
                "up (their prompts and jobs)"
            ).emit()

    def _worker_env(self, worker_id: str) -> dict[str, str]:
        """The hive's environment without its secrets, plus the worker's own credential."""
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        if self.credential:
            env[WORKER_CREDENTIAL_ENV] = worker_credential(self.credential, worker_id)
        return env

    async def _run(self, worker: Worker, unregister: Callable[[], None], log: IO[str]) -> None:
        assert worker.process is not None
        try:
            worker.returncode = await worker.process.wait()
            await _narrate_split_exit(worker)
        finally:
            worker.state = "failed" if worker.state != "stopping" else worker.state
            worker.exited.set()
            self._workers.pop(worker.id, None)
            unregister()
            log.close()
            # Its jobs died with it and ids are never reused: nothing there is needed again.
            shutil.rmtree(self.state_dir / worker.id, ignore_errors=True)

    async def _wait_ready(self, worker: Worker) -> None:
        async with httpx.AsyncClient(
            timeout=HEALTH_TIMEOUT_S, trust_env=False, verify=tls_for(worker.url)
        ) as client:
            with anyio.move_on_after(self.ready_timeout_s):
                while not worker.exited.is_set():
                    status = await _health(client, worker.url)
                    if status == "ready":
                        return
                    if status == "loading":
                        worker.state = "loading"
                    with anyio.move_on_after(HEALTH_POLL_S):
                        await worker.exited.wait()
                code = worker.returncode
                reason = (
                    f"it exited with code {code}"
                    if code is None or code >= 0
                    else f"it was killed by {signal_name(-code)}"
                )
                raise WorkerStartError(worker.id, reason, worker.failure or worker.last_line)
        raise WorkerStartError(
            worker.id,
            f"it was not ready within {self.ready_timeout_s:g} s",
            worker.failure or worker.last_line,
        )

    async def _refresh_forever(self) -> None:
        """Keep each started worker's state `ready` or `busy` as its /health says, so the
        heartbeats tell the queen which workers are free."""
        # Workers listen on plain http on loopback (see `Worker.url`): no CA bundle to load.
        async with httpx.AsyncClient(
            timeout=HEALTH_TIMEOUT_S, trust_env=False, verify=tls_for(f"http://{LOOPBACK}")
        ) as client:
            while True:
                for worker in self.workers():
                    if worker.state in ("ready", "busy"):
                        await self._refresh(client, worker)
                await anyio.sleep(REFRESH_S)

    async def _refresh(self, client: httpx.AsyncClient, worker: Worker) -> None:
        try:
            health = (await client.get(f"{worker.url}/health")).json()
            slots = max(int(health.get("slots", 1)), 1)
            slots_busy = int(health.get("slots_busy", 0))
            shape = {k: health.get(k) for k in ("threads", "ctx_size", "kv_bytes")}
        except (httpx.HTTPError, ValueError, AttributeError, TypeError):
            return  # exiting or wedged: its process task reports the exit
        worker.slots, worker.slots_busy = slots, slots_busy
        worker.threads, worker.ctx_size, worker.kv_bytes = (
            v if isinstance(v, int) and v >= 0 else None for v in shape.values()
        )
        if worker.state in ("ready", "busy"):  # not stopped meanwhile
            # Busy when no slot is free: the queen sends it nothing more until one is.
            worker.state = "busy" if slots_busy >= slots else "ready"

    async def stop(self, worker_id: str) -> Worker:
        """Stop a worker's process group (SIGTERM, grace, SIGKILL); raises WorkerNotFound."""
        worker = self._workers.get(worker_id)
        if worker is None:
            raise WorkerNotFound(worker_id, sorted(self._workers))
        await self._stop(worker)
        return worker

    async def _stop(self, worker: Worker) -> None:
        if worker.exited.is_set():
            return
        worker.state = "stopping"
        process = worker.process
        if process is not None and _create_time(worker.pid) == worker.create_time:
            await process.aclose()  # the pid is still our child, not a reused one
        await worker.exited.wait()

    async def stop_all(self) -> None:
        async with anyio.create_task_group() as tg:
            for worker in self.workers():
                tg.start_soon(self._stop, worker)


class _Tee:
    """A job sink that writes the worker's lines to its log and keeps what a start-up
    failure quotes: its last line, and its last error narration."""

    def __init__(self, worker: Worker, log: IO[str]) -> None:
        self.worker = worker
        self.log = log

    def __call__(self, event: NarrationEvent) -> None:
        if event.origin != f"worker:{self.worker.id}":
            return  # the job's own narration (the hive's), not the worker's
        line = event.human if event.stream is not None else format_line(event)
        if event.human.strip():
            self.worker.last_line = event.human
        if event.stream is None and event.level == "error":
            self.worker.failure = event.human
        if not self.log.closed:
            self.log.write(line + "\n")


async def _narrate_split_exit(worker: Worker) -> None:
    """Say why a split worker ended unasked: its own reason, else the peers now gone."""
    if not worker.rpc_servers or worker.state not in ("ready", "busy"):
        return  # not a split, stopped by the hive, or a start-up failure spawn() reports
    code = worker.returncode
    how = (
        f"exited with code {code}"
        if code is None or code >= 0
        else f"was killed by {signal_name(-code)}"
    )
    peers = ", ".join(map(worker.peer_label, worker.rpc_servers))
    if worker.failure:
        why = worker.failure
    else:
        gone = await anyio.to_thread.run_sync(unreachable, worker.rpc_servers)
        why = (
            f"its RPC peer{'s' * (len(gone) != 1)} {', '.join(map(worker.peer_label, gone))} "
            "went away"
            if gone
            else (worker.last_line or "it gave no reason")
        )
    NARRATE.action("worker_exit").target(worker.id).level("error").human(
        f"Worker {worker.id} of a split across {peers} {how}: {why}"
    ).emit()


def worker_argv(worker: Worker, state_dir: Path, flags: dict[str, object]) -> list[str]:
    """The command line that starts `worker`: its model, port, device, id and state
    folder, each of `flags` that is set, and `--rpc` for each peer of a split."""
    argv = [*worker_command(), "--model", str(worker.model_path), "--port", str(worker.port)]
    argv += ["--device", worker.device, "--worker-id", worker.id, "--state-dir", str(state_dir)]
    for flag, value in flags.items():
        if value is not None:
            argv += [flag, str(value)]
    for endpoint in worker.rpc_servers:
        argv += ["--rpc", endpoint]
    return argv


def worker_command() -> list[str]:
    """How to start a worker: the console script beside our Python, else `python -m worker`."""
    script = shutil.which(WORKER_PROGRAM, path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "worker"]


def free_port(host: str = LOOPBACK) -> int:
    """A port the kernel says is free now (bind port 0, read it, close): no random ranges."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def _health(client: httpx.AsyncClient, url: str) -> str | None:
    try:
        response = await client.get(f"{url}/health")
        return str(response.json().get("status")) if response.is_success else None
    except (httpx.HTTPError, ValueError):
        return None  # not listening yet


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _rss(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None
