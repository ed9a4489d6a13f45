"""Run a child process and turn everything it prints into narration (docs/narration.md).

    capture = ProcessNarrationCapture(job_id)
    proc = await capture.spawn(["rbee-hive", "--port", "7835"])
    code = await proc.wait()        # relays every line until exit and drained pipes

Each line of stdout and stderr is parsed: narration keeps its actor, action and message,
gains `origin` ("pid 1234") and lands in the capture's job (else the context's job);
anything else becomes an `output` event with its stream name. Nothing is dropped: a
last line without a newline is delivered at EOF, a line of megabytes arrives in pieces
of at most `MAX_LINE` characters, invalid UTF-8 is replaced.

Terminal control sequences are neutralised here, where lines are parsed, so no sink
(a daemon's stdout, a job log, a renderer) ever receives a live escape sequence; the
printed text survives in `fields["raw"]` whenever sanitising changed it, which JSON
output keeps (escaped). Renderers of remote events still sanitise, since those may not
have passed through a capture.

The child runs in its own session, hence its own process group: stopping it signals
the whole group (SIGTERM, `grace` seconds, then SIGKILL), plus any descendant psutil
finds outside the group. Cancelling `wait()` stops the tree in a shielded scope, keeps
relaying what the tree prints while it stops, reaps the child and re-raises; `kill()`
cuts a stop's grace short (a second Ctrl-C).

On Linux the child also gets a parent-death signal (SIGKILL), so a parent killed with
SIGKILL does not leave it running. Two limits, both the kernel's: the signal fires when
the *thread* that spawned the child exits (spawn from the event loop's thread, never from
a worker thread that ends), and it reaches only the child itself, not grandchildren it
started (they are re-parented and keep running unless the child's death stops them).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
from anyio.abc import ByteReceiveStream, Process

from narration_core._early import EarlyChild, popen_captured
from narration_core._lines import MAX_LINE, LineSplitter, program_actor, relay_lines
from narration_core.event import NarrationEvent
from narration_core.narrator import emit_event
from narration_core.proctree import (
    KILL_WAIT_S,
    POLL_S,
    STOP_GRACE_S,
    any_alive,
    signal_tree,
    tree_members,
)

if TYPE_CHECKING:  # psutil loads when a tree is stopped (proctree), not with every capture
    import psutil

# Called with (stream name, what a `\r` progress bar shows now, or None once its line ends).
ProgressHook = Callable[[str, str | None], None]

READ_SIZE = 64 * 1024  # bytes per pipe read: one split and decode per chunk, not per line
DRAIN_AFTER_STOP_S = 0.5  # seconds to keep reading pipes a stray process still holds open


class ProcessNarrationCapture:
    r"""Spawns children whose output is re-emitted as narration.

    Args:
        job_id: job the re-emitted events belong to; None uses the caller's context.
        actor: actor for plain output lines; default the program's file name.
        origin: recorded on every event; default "pid N".
        grace: seconds between SIGTERM and SIGKILL when the tree is stopped.
        on_progress: called with (stream name, text) whenever the unfinished line of a
            `\r` progress bar shows something new, and with (name, None) once it ends;
            the finished line itself is relayed as usual (its last `\r` segment).
        stdout_gone: asked after each chunk of the child's stdout; True once nobody
            reads what it prints any more (`keeper run -- yes | head -1`). The child's
            stdout is then closed, so its next write fails (SIGPIPE) as in a shell
            pipeline, instead of it running on unread for ever.
    """

    def __init__(
        self,
        job_id: str | None = None,
        *,
        actor: str | None = None,
        origin: str | None = None,
        grace: float = STOP_GRACE_S,
        max_line: int = MAX_LINE,
        on_progress: ProgressHook | None = None,
        stdout_gone: Callable[[], bool] | None = None,
    ) -> None:
        self.job_id = job_id
        self.actor = actor
        self.origin = origin
        self.grace = grace
        self.max_line = max_line
        self.on_progress = on_progress
        self.stdout_gone = stdout_gone

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
    ) -> CapturedProcess:
        """Start `argv` with piped stdout/stderr; stdin from /dev/null unless given.

        Pass `stdin=None` to hand the child this process's stdin (`keeper run`, as a
        shell does); a daemon's children get /dev/null so they never wait on a terminal.
        Output is read while `wait()` runs. Raises FileNotFoundError/PermissionError
        (OSError) directly when the program cannot be started. Cancel-safe: either the
        caller gets the process (and owns it: `async with proc`), or the cancel is raised
        with the child's tree already stopped.
        """
        if not argv:
            raise ValueError("spawn needs a program to run; argv is empty")
        # anyio.open_process takes no preexec_fn; its backend passes extra keywords on to
        # the event loop's subprocess_exec (subprocess.Popen), which does.
        from anyio._core._eventloop import get_async_backend

        options = popen_captured(argv, env=env, cwd=cwd, stdin=stdin)
        # Shielded: a cancel landing inside asyncio's spawn would kill the child alone and
        # then wait on its pipes, which grandchildren it already forked still hold.
        with anyio.CancelScope(shield=True):
            process = await get_async_backend().open_process(list(argv), **options)
        captured = CapturedProcess(
            process,
            job_id=self.job_id,
            actor=self.actor or program_actor(argv[0]),
            origin=self.origin or f"pid {process.pid}",
            grace=self.grace,
            max_line=self.max_line,
            on_progress=self.on_progress,
            stdout_gone=self.stdout_gone,
        )
        try:  # a cancel that came during the spawn: stop the tree here, nobody owns it yet
            await anyio.lowlevel.checkpoint_if_cancelled()
        except BaseException:
            await captured.aclose()
            raise
        return captured

    def adopt(self, early: EarlyChild) -> CapturedProcess:
        """Take over a child `EarlyChild.start` started before the event loop ran (see
        narration_core._early): the output it held comes first, then the pipes; from
        here on it is captured, stopped and reaped like a child `spawn` started."""
        from narration_core._adopted import AdoptedProcess

        process = AdoptedProcess(early)
        return CapturedProcess(
            process,
            job_id=self.job_id,
            actor=self.actor or program_actor(early.argv[0]),
            origin=self.origin or f"pid {process.pid}",
            grace=self.grace,
            max_line=self.max_line,
            on_progress=self.on_progress,
            stdout_gone=self.stdout_gone,
        )


class CapturedProcess:
    """A running child whose output is relayed while `wait()` runs.

    Use `async with` (or call `aclose()`) so the tree is stopped if the block exits early.
    """

    def __init__(
        self,
        process: Process,
        *,
        job_id: str | None,
        actor: str,
        origin: str,
        grace: float,
        max_line: int,
        on_progress: ProgressHook | None = None,
        stdout_gone: Callable[[], bool] | None = None,
    ) -> None:
        self._process = process
        self._on_progress = on_progress
        self._stdout_gone = stdout_gone if stdout_gone is not None else _never
        self.pid: int = process.pid
        self.job_id = job_id
        self.actor = actor
        self.origin = origin
        self.grace = grace
        self._splitters = {
            "stdout": LineSplitter(max_line=max_line),
            "stderr": LineSplitter(max_line=max_line),
        }
        self._eof: dict[str, anyio.Event] = {"stdout": anyio.Event(), "stderr": anyio.Event()}
        self._done = anyio.Event()
        self._driving = False
        self._stopping: list[psutil.Process] | None = None  # the tree a stop is waiting on

    @property
    def returncode(self) -> int | None:
        """The exit code once `wait()` has returned (negative: killed by that signal)."""
        return self._process.returncode if self._done.is_set() else None

    async def wait(self) -> int:
        """Relay output until the child has exited and both pipes are drained.

        Returns the exit code. If cancelled, stops the whole tree first (shielded),
        then re-raises. A second concurrent caller just waits for the first.
        """
        if self._driving or self._done.is_set():
            await self._done.wait()
            return self._returncode()
        self._driving = True
        try:
            async with anyio.create_task_group() as tg:
                self._start_pumps(tg)
                await self._process.wait()
            await self._process.aclose()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._stop_and_drain()
            raise
        finally:
            self._done.set()
        return self._returncode()

    def terminate(self) -> None:
        """Ask the whole tree to stop (SIGTERM to the group); `wait()` reports the exit."""
        signal_tree(self.pid, tree_members(self.pid), signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the whole tree now, also in the middle of a stop's grace period.

        A stop in progress (a cancelled `wait()`) sees the tree gone and finishes at
        once; `wait()` reports the exit.
        """
        members = self._stopping if self._stopping is not None else tree_members(self.pid)
        signal_tree(self.pid, members, signal.SIGKILL)

    async def aclose(self) -> None:
        """Stop the tree (SIGTERM, grace, SIGKILL), relay its last words and reap it."""
        if self._done.is_set():
            return
        if self._driving:
            self.terminate()
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(self.grace):
                    await self._done.wait()
                if not self._done.is_set():
                    _warn_kill(self.pid, self.grace)
                    signal_tree(self.pid, tree_members(self.pid), signal.SIGKILL)
                    await self._done.wait()
            return
        self._driving = True
        try:
            with anyio.CancelScope(shield=True):
                await self._stop_and_drain()
        finally:
            self._done.set()

    async def __aenter__(self) -> CapturedProcess:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _returncode(self) -> int:
        code = self._process.returncode
        if code is None:  # pragma: no cover - wait() only returns after the child exited
            raise RuntimeError(f"process {self.pid} has no exit code yet")
        return code

    def _start_pumps(self, tg: anyio.abc.TaskGroup) -> None:
        process = self._process
        for name, stream in (("stdout", process.stdout), ("stderr", process.stderr)):
            if stream is not None and not self._eof[name].is_set():
                tg.start_soon(self._pump, stream, name, name=f"capture {self.pid} {name}")

    async def _pump(self, stream: ByteReceiveStream, name: str) -> None:
        splitter = self._splitters[name]
        args = (self.actor, self.origin, self.job_id)
        progress: str | None = None
        while True:
            try:
                data = await stream.receive(READ_SIZE)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                break
            lines = splitter.feed(data)
            if lines:
                relay_lines(lines, name, actor=args[0], origin=args[1], job_id=args[2])
            if self._on_progress is not None and splitter.progress != progress:
                progress = splitter.progress
                self._on_progress(name, progress)
            if name == "stdout" and self._stdout_gone():
                await stream.aclose()
                self._close_stdout_pipe()  # its next write fails, as in a shell pipeline
                break
        relay_lines(splitter.flush(), name, actor=args[0], origin=args[1], job_id=args[2])
        if self._on_progress is not None and progress is not None:
            self._on_progress(name, None)
        # Only a real end of stream counts: a pump cancelled mid-read is restarted by
        # _stop_and_drain, so what the tree prints while it stops is still relayed.
        self._eof[name].set()

    def _close_stdout_pipe(self) -> None:
        """Close this end of the child's stdout pipe. Closing anyio's stream only marks it
        closed (its Process.aclose closes the pipe the same way, through its transport)."""
        transport = getattr(self._process, "_transport", None)
        pipe = transport.get_pipe_transport(1) if transport is not None else None
        if pipe is not None:
            pipe.close()

    async def _stop_and_drain(self) -> None:
        """Stop the tree while still relaying its output, then reap the child.

        Must run shielded. Pipes still held open by a process outside the tree are read
        for at most DRAIN_AFTER_STOP_S after the tree is gone, then abandoned.
        """
        async with anyio.create_task_group() as tg:
            self._start_pumps(tg)
            await self._stop_tree()
            with anyio.move_on_after(DRAIN_AFTER_STOP_S):
                for eof in self._eof.values():
                    await eof.wait()
            tg.cancel_scope.cancel()
        for name in ("stdout", "stderr"):
            if not self._eof[name].is_set():
                relay_lines(
                    self._splitters[name].flush(),
                    name,
                    actor=self.actor,
                    origin=self.origin,
                    job_id=self.job_id,
                )
        await self._process.aclose()

    async def _stop_tree(self) -> None:
        # Snapshot descendants before signalling: once the child dies they are
        # re-parented and psutil can no longer tell they were ours.
        members = self._stopping = tree_members(self.pid)
        if self._process.returncode is None or any_alive(members):
            signal_tree(self.pid, members, signal.SIGTERM)
            with anyio.move_on_after(self.grace):
                await self._wait_gone(members)
        if self._process.returncode is None or any_alive(members):
            _warn_kill(self.pid, self.grace)
            signal_tree(self.pid, members, signal.SIGKILL)
            with anyio.move_on_after(KILL_WAIT_S):
                await self._wait_gone(members)

    async def _wait_gone(self, members: list[psutil.Process]) -> None:
        await self._process.wait()
        # Polled: psutil has no event to await, and this runs only while a tree stops.
        while any_alive(members):  # noqa: ASYNC110
            await anyio.sleep(POLL_S)


def _warn_kill(pid: int, grace: float) -> None:
    emit_event(
        NarrationEvent(
            "narration",
            "kill",
            f"pid {pid} did not stop within {grace:g} s of SIGTERM; sending SIGKILL to its tree",
            level="warn",
        )
    )


def _never() -> bool:
    return False
