"""The frame pump behind the keeper's output: a live Rich view on a terminal, plain
lines, or JSON lines.

    with make_renderer(settings) as renderer:
        renderer.status("Starting queen")
        ...                                  # anything narrated lands on the screen

While active, the renderer is narration's stdout sink, so the keeper's own narration
and lines re-emitted from captured children take one path (emit -> sinks -> here).
Events from a queen job stream arrive through `job_event`.

Emitting never waits for the terminal: events are queued and a frame thread owned by
the renderer writes everything that arrived since the last frame in one call (Rich
costs ~80 µs per `print`, so per-line printing would cap the keeper a hundred times
below the pipe). Only when the queue passes MAX_PENDING does the emitter write the
batch itself, which is the back-pressure that keeps memory bounded.

Text from other processes is untrusted: it is printed with control sequences
neutralised (`strip_control`) and never parsed as Rich markup. JSON carries the same
sanitised text (a captured line's printed form is in `fields.raw`); the encoder escapes
control characters, C1 included.

The plain lines (`_plain`), the live view (`_live`), JSON encoding (`_jsonlines`) and
tables (`_tables`) live apart; Rich is imported only for the live view and tables, so
plain and JSON output start without it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from jobs import to_narration
from keeper.errors import OutputLost
from keeper.output._items import Drawn, Item, State, Token, Verbatim
from keeper.output._jsonlines import JsonLines
from keeper.output._plain import PlainLines
from keeper.settings import KeeperSettings, OutputMode
from narration_core import NarrationEvent, redact, set_stdout_sink, strip_control
from narration_core.sinks import Sink

if TYPE_CHECKING:
    from rich.console import Console

    from keeper.output._live import LiveView

FRAME_S = 0.125  # live view: seconds per frame (8 fps), lines coalesced per frame
CHUNK_FRAME_S = 0.01  # live view: seconds between frames while a child floods the terminal
FLUSH_DELAY_S = 0.02  # plain/json: seconds to gather a batch after the first queued event
MAX_PENDING = 20_000  # queued events beyond which the emitter writes the batch itself
BATCH_CHUNKS = 8  # plain: queued items (a flooding child's ~8 KiB reads) worth a write


class _BatchSink:
    """Narration's stdout sink: events, plus clean line batches."""

    __slots__ = ("enqueue", "event", "lines_as_is", "view")

    def __init__(self, renderer: Renderer) -> None:
        self.event = renderer.event
        self.enqueue = renderer._enqueue
        self.lines_as_is = renderer.mode == "plain"  # plain prints a batch as it stands
        self.view = renderer._view

    def __call__(self, ev: NarrationEvent) -> None:
        self.event(ev)

    def write_lines(self, text: str, lines: Sequence[str], stream: str, **route: Any) -> None:
        batch = Verbatim(text, lines, stream, **route)
        if self.view is not None:
            # Styled here, on the capture's thread, while the frame thread is blocked
            # writing the last frame to the terminal: the two overlap.
            self.enqueue(Drawn(self.view.prerendered(batch)))
        else:
            self.enqueue(batch)


class Renderer:
    """Renders narration and job events in one of three modes; a context manager.

    Args:
        settings: decides the mode with `output_mode` (json, live on a terminal, plain).
        console: the Rich console for the live view (tests pass one on StringIO).
        file: where plain and JSON lines go; default the console's file, else stdout.
        mode: force a mode instead of asking `settings`.
        err_file: plain mode only: where a child's stderr lines and the keeper's own
            narration go (`keeper run`, so `> out.txt` holds just the command's stdout);
            None keeps everything on `file`.

    Entering installs `event` as narration's stdout sink and starts the frame thread;
    leaving writes everything still queued, stops the thread and restores the old sink.
    """

    def __init__(
        self,
        settings: KeeperSettings,
        *,
        console: Console | None = None,
        file: IO[str] | None = None,
        mode: OutputMode | None = None,
        err_file: IO[str] | None = None,
    ) -> None:
        self._file: IO[str] = file or (console.file if console is not None else sys.stdout)
        self._err_file = err_file
        if mode is None:
            is_terminal = console.is_terminal if console is not None else _isatty(self._file)
            mode = settings.output_mode(is_terminal=is_terminal)
        self.mode: OutputMode = mode
        self._lines_as_is = mode == "plain"  # a chunk of lines is printed as it stands
        self._view: LiveView | None = None
        if mode == "live":
            from rich.console import Console

            from keeper.output._live import LiveView

            self._view = LiveView(console or Console(file=self._file))
        self._pending: deque[Item] = deque()
        self._write_lock = threading.Lock()  # one batch at a time, in queue order
        self._wake = threading.Event()  # something was queued
        self._full = threading.Event()  # ... and it is worth writing at once
        self._stop = threading.Event()
        self._idle = True
        self._thread: threading.Thread | None = None
        self._previous_sink: Sink | None = None
        self._plain = PlainLines()
        self._json = JsonLines()
        self._broken = False  # output stopped: its reader left, or it cannot be written
        self._lost: OSError | None = None  # why, when that was not the reader's choice
        self._reader_left = False  # stdout's reader closed the pipe (`| head -1`)

    # -- the public surface -------------------------------------------------------

    def event(self, ev: NarrationEvent) -> None:
        """Queue one narration or output event; the narration stdout sink. Never raises."""
        self._enqueue(ev)

    def job_event(self, kind: str, data: dict[str, Any]) -> None:
        """Render one event off a queen job stream (`narration`, `output`, `token`, `state`).

        Malformed events are shown as output rather than dropped.
        """
        item: Item
        if kind == "token":
            item = Token(data)
        elif kind == "state":
            item = State(data)
        else:
            item = to_narration(kind, data)
        self._enqueue(item)

    def status(self, text: str | None) -> None:
        """What the keeper waits for, shown by the live view's spinner with the time
        since it was set; None clears it (call that when the wait ends).

        Plain and JSON output print nothing for it: the narration already says it.
        """
        view = self._view
        if view is None:
            return
        if text is None:
            view.status = None
            return
        text = strip_control(redact(text))  # it may quote a command line, as narration does
        if view.status is None or view.status[0] != text:
            view.status = (text, time.monotonic())  # one assignment: the frame thread reads it

    def progress(self, stream: str, text: str | None) -> None:
        r"""What a child's `\r` progress bar shows now (None: its line ended); a capture's
        `on_progress`. The live view draws it in place; plain and JSON output print only
        the finished line, which the capture relays as its final state."""
        if self._view is not None:
            self._view.progress = None if text is None else strip_control(text)

    def reader_left(self) -> bool:
        """True once the reader of stdout has closed the pipe (`keeper run ... | head`);
        a capture's `stdout_gone`."""
        return self._reader_left

    def flush(self) -> None:
        """Write everything queued so far, in order, in one call."""
        with self._write_lock:
            # Only the holder of the write lock pops, so `len` items are surely there.
            pop = self._pending.popleft
            items = [pop() for _ in range(len(self._pending))]
            if items and not self._broken:
                try:
                    self._write(items)
                except _Unwritable as failed:
                    self._stop_writing(failed.file, failed.error)
                except OSError as error:  # the live view's console
                    self._stop_writing(self._file, error)
            elif self._view is not None:
                self._view.refresh()

    def __enter__(self) -> Renderer:
        if self._view is not None:
            self._view.start()
        self._previous_sink = set_stdout_sink(_BatchSink(self))
        self._thread = threading.Thread(target=self._frames, name="keeper-render")
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        set_stdout_sink(self._previous_sink)
        self._stop.set()
        self._wake.set()
        self._full.set()
        if self._thread is not None:
            self._thread.join()
        view = self._view
        if self._plain.in_tokens or (view is not None and view.partial):
            self._enqueue(State({}))  # ends an unterminated token line
        if view is not None:
            view.status = None
        self.flush()
        if view is not None:
            with contextlib.suppress(OSError):  # a terminal gone: nothing left to draw on
                view.stop()
        if self._lost is not None and exc_type is None:
            raise OutputLost.because(self._lost)

    # -- queueing and frames --------------------------------------------------------

    def _enqueue(self, item: Item) -> None:
        pending = self._pending
        pending.append(item)  # deque.append is atomic: emitters take no lock
        backlog = len(pending)
        kind = type(item)
        # The live view draws a chunk of lines soon (see _frames); a token is what the
        # reader waits for (its time to first token): neither waits for company, nor
        # does a JSON chunk (its text is ~4x the lines: a batch of them costs memory and
        # saves nothing). A plain chunk waits, up to FLUSH_DELAY_S or until BATCH_CHUNKS
        # items are queued: a child that floods then costs one write and one wake-up of
        # the frame thread per batch, not per pipe read (bench/bench_run.py: ~15% of
        # `keeper run`'s time on 300k lines). `_full` is set before `_wake`, so the
        # frame thread wakes once for it, not twice, and only when not set already:
        # each set() hands the frame thread a wake-up.
        if kind is Verbatim:
            soon = not self._lines_as_is or backlog >= BATCH_CHUNKS
        else:
            soon = kind is Drawn or kind is Token
        if soon and not self._full.is_set():
            self._full.set()
        if self._idle:
            self._idle = False
            self._wake.set()
        if backlog > MAX_PENDING:
            self.flush()

    def _frames(self) -> None:
        live = self._view is not None
        drawn = -FRAME_S  # when the last frame began (monotonic s)
        while not self._stop.is_set():
            if live:
                # A frame every FRAME_S (the spinner's clock), which coalesces single
                # events; a chunk of a child's lines is drawn sooner, so the terminal is
                # never left idle while lines wait, but no sooner than CHUNK_FRAME_S after
                # the last frame: a frame then carries several chunks, and Rich's redraw of
                # the live area under them (~0.3 ms) is paid once.
                pause = drawn + FRAME_S - time.monotonic()
                if pause > 0 and self._full.wait(pause):
                    rest = drawn + CHUNK_FRAME_S - time.monotonic()
                    if rest > 0:
                        self._stop.wait(rest)
                self._full.clear()
                drawn = time.monotonic()
            else:
                self._wake.wait()
                self._full.wait(FLUSH_DELAY_S)
                self._wake.clear()
                self._full.clear()
                self._idle = True
            if self._stop.is_set():
                return
            self.flush()

    def _stop_writing(self, file: IO[str], error: OSError) -> None:
        """The reader went away (`keeper run ... | head`), or the output cannot be written
        (a full disk): stop writing, and point that stream at /dev/null so Python's
        exit-time flush does not fail on it too. A closed pipe is the reader's choice;
        anything else is reported when the renderer closes (OutputLost)."""
        self._broken = True
        if not isinstance(error, BrokenPipeError):
            self._lost = error
        elif file is self._file:
            self._reader_left = True
        for stream in (sys.stdout, sys.stderr):
            if file is stream:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)

    def _write(self, items: list[Item]) -> None:
        if self._view is not None:
            self._view.draw(items)
        elif self.mode == "json":
            _write_text(self._file, self._json.batch(items))
        elif self._err_file is not None:
            # Consecutive runs per file keep each file's lines in order.
            for to_err, run in itertools.groupby(items, key=_for_stderr):
                _write_text(self._err_file if to_err else self._file, self._plain.batch(list(run)))
        else:
            _write_text(self._file, self._plain.batch(items))


def make_renderer(
    settings: KeeperSettings,
    *,
    console: Console | None = None,
    file: IO[str] | None = None,
    err_file: IO[str] | None = None,
) -> Renderer:
    """The renderer `settings` asks for; use it as `with make_renderer(settings) as r:`."""
    return Renderer(settings, console=console, file=file, err_file=err_file)


def _for_stderr(item: Item) -> bool:
    """Plain mode with an err_file: a line a child printed on stderr (narration or not),
    or the keeper's own narration (not relayed from a child: no source, no origin)."""
    if type(item) is Verbatim:
        return item.stream == "stderr"
    return type(item) is NarrationEvent and (
        "stderr" in (item.source, item.stream) or (item.source is None and item.origin is None)
    )


class _Unwritable(Exception):
    """Writing to `file` failed with `error`."""

    def __init__(self, file: IO[str], error: OSError) -> None:
        super().__init__(str(error))
        self.file = file
        self.error = error


def _write_text(file: IO[str], text: str) -> None:
    if not text:
        return
    try:
        try:
            file.write(text)
        except UnicodeEncodeError:  # a non-UTF-8 terminal: show what it can
            encoding = getattr(file, "encoding", None) or "ascii"
            file.write(text.encode(encoding, "replace").decode(encoding))
        file.flush()
    except OSError as error:
        raise _Unwritable(file, error) from error


def _isatty(file: IO[str]) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
