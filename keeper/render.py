"""The keeper's output: a live Rich view on a terminal, plain lines, or JSON lines.

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
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import IO, Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.segment import Segment
from rich.spinner import Spinner
from rich.style import Style
from rich.text import Text

from jobs.relay import to_narration
from keeper.settings import KeeperSettings, OutputMode
from narration_core import NarrationEvent, format_line, set_stdout_sink, strip_control
from narration_core.format import split_line
from narration_core.sinks import Sink

FRAME_S = 0.125  # live view: seconds per frame (8 fps), lines coalesced per frame
FLUSH_DELAY_S = 0.02  # plain/json: seconds to gather a batch after the first queued event
MAX_PENDING = 20_000  # queued events beyond which the emitter writes the batch itself

ACTOR_STYLES = {  # fixed colours for rbee's own components
    "keeper": "bold cyan",
    "queen-rbee": "bold magenta",
    "rbee-hive": "bold yellow",
    "llm-worker-rbee": "bold green",
}
_PALETTE = ("blue", "cyan", "magenta", "green", "yellow", "bright_blue", "bright_magenta")
_LEVEL_STYLES = {"error": Style(color="red", bold=True), "warn": Style(color="yellow")}
_ACTION_STYLE = Style(dim=True)
_STDERR_STYLE = Style(dim=True)
# Control characters other than tab and LF: a batch without any skips per-line sanitising.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# JSON allows C1 controls raw, but a terminal may act on them: escape those too.
_C1 = re.compile(r"[\x7f-\x9f]")


class _Token:
    __slots__ = ("data", "text")

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.text = str(data.get("t", ""))


class _State:
    __slots__ = ("data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data


class _Verbatim:
    """A clean batch of a child's lines (narration's `LineBatchSink.write_lines`)."""

    __slots__ = ("actor", "correlation_id", "job_id", "lines", "origin", "stream", "text", "ts")

    def __init__(
        self,
        text: str,
        lines: Sequence[str],
        stream: str,
        *,
        actor: str,
        origin: str | None,
        job_id: str | None,
        correlation_id: str | None,
        ts: float,
    ) -> None:
        self.text = text  # the lines, each with its newline; plain mode prints it as is
        self.lines = lines
        self.stream = stream
        self.actor = actor
        self.origin = origin
        self.job_id = job_id
        self.correlation_id = correlation_id
        self.ts = ts


class _BatchSink:
    """Narration's stdout sink in plain and JSON mode: events, plus clean line batches."""

    __slots__ = ("enqueue", "event", "lines_as_is")

    def __init__(self, renderer: Renderer) -> None:
        self.event = renderer.event
        self.enqueue = renderer._enqueue
        self.lines_as_is = renderer.mode == "plain"  # plain prints a batch as it stands

    def __call__(self, ev: NarrationEvent) -> None:
        self.event(ev)

    def write_lines(self, text: str, lines: Sequence[str], stream: str, **route: Any) -> None:
        self.enqueue(_Verbatim(text, lines, stream, **route))


_Item = NarrationEvent | _Token | _State | _Verbatim


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
        self._console = console
        self._pending: deque[_Item] = deque()
        self._write_lock = threading.Lock()  # one batch at a time, in queue order
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = True
        self._thread: threading.Thread | None = None
        self._previous_sink: Sink | None = None
        self._live: Live | None = None
        # What the live view says the keeper waits for, and since when (monotonic s).
        self._status: tuple[str, float] | None = None
        # One spinner for the whole run: Rich picks its frame from the time since its
        # first render, so a spinner built per frame would show its first frame forever.
        self._spinner = Spinner("dots", style="cyan")
        self._partial = ""  # tokens since the last newline (live: shown in the live area)
        self._progress: str | None = None  # a child's unfinished `\r` line (live area)
        self._in_tokens = False  # plain: the cursor sits after inline tokens
        self._broken = False
        self._styles: dict[str, Style] = {}
        self._ansi_codes: dict[Style, tuple[str, str]] = {}

    # -- the public surface -------------------------------------------------------

    def event(self, ev: NarrationEvent) -> None:
        """Queue one narration or output event; the narration stdout sink. Never raises."""
        self._enqueue(ev)

    def job_event(self, kind: str, data: dict[str, Any]) -> None:
        """Render one event off a queen job stream (`narration`, `output`, `token`, `state`).

        Malformed events are shown as output rather than dropped.
        """
        item: _Item
        if kind == "token":
            item = _Token(data)
        elif kind == "state":
            item = _State(data)
        else:
            item = to_narration(kind, data)
        self._enqueue(item)

    def status(self, text: str | None) -> None:
        """What the keeper waits for, shown by the live view's spinner with the time
        since it was set; None clears it (call that when the wait ends).

        Plain and JSON output print nothing for it: the narration already says it.
        """
        if text is None:
            self._status = None
            return
        text = strip_control(text)
        if self._status is None or self._status[0] != text:
            self._status = (text, time.monotonic())  # one assignment: the frame thread reads it

    def progress(self, stream: str, text: str | None) -> None:
        r"""What a child's `\r` progress bar shows now (None: its line ended); a capture's
        `on_progress`. The live view draws it in place; plain and JSON output print only
        the finished line, which the capture relays as its final state."""
        self._progress = None if text is None else strip_control(text)

    def flush(self) -> None:
        """Write everything queued so far, in order, in one call."""
        with self._write_lock:
            # Only the holder of the write lock pops, so `len` items are surely there.
            pop = self._pending.popleft
            items = [pop() for _ in range(len(self._pending))]
            if items and not self._broken:
                try:
                    self._write(items)
                except BrokenPipeError:
                    self._pipe_broke()
            elif self._live is not None:
                self._live.refresh()

    def __enter__(self) -> Renderer:
        if self.mode == "live":
            area = _Drawn(self._live_view)
            console = self._console or Console(file=self._file)
            self._console = console
            self._live = Live(
                get_renderable=lambda: area,
                console=console,
                auto_refresh=False,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        sink = _BatchSink(self)
        self._previous_sink = set_stdout_sink(sink)
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
        if self._thread is not None:
            self._thread.join()
        if self._partial or self._in_tokens:
            self._enqueue(_State({}))  # ends an unterminated token line
        self._status = None
        self.flush()
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- queueing and frames --------------------------------------------------------

    def _enqueue(self, item: _Item) -> None:
        pending = self._pending
        pending.append(item)  # deque.append is atomic: emitters take no lock
        backlog = len(pending)
        if self._idle:
            self._idle = False
            self._wake.set()
        if backlog > MAX_PENDING:
            self.flush()

    def _frames(self) -> None:
        live = self.mode == "live"
        while not self._stop.is_set():
            if live:
                self._stop.wait(FRAME_S)
            else:
                self._wake.wait()
                self._stop.wait(FLUSH_DELAY_S)
                self._wake.clear()
                self._idle = True
            if self._stop.is_set():
                return
            self.flush()

    def _pipe_broke(self) -> None:
        # The reader went away (`keeper run ... | head`): stop writing, and point stdout
        # at /dev/null so Python's exit-time flush does not complain about it either.
        self._broken = True
        if self._file is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)

    def _write(self, items: list[_Item]) -> None:
        if self.mode == "json":
            _write_text(self._file, self._json_batch(items))
        elif self.mode == "plain" and self._err_file is not None:
            # Consecutive runs per file keep each file's lines in order.
            for to_err, run in itertools.groupby(items, key=_for_stderr):
                _write_text(self._err_file if to_err else self._file, self._plain_batch(list(run)))
        elif self.mode == "plain":
            _write_text(self._file, self._plain_batch(items))
        else:
            self._live_batch(items)

    # -- plain ----------------------------------------------------------------------

    def _plain_batch(self, items: list[_Item]) -> str:
        out: list[str] = []
        add = out.append
        for item in items:
            if type(item) is NarrationEvent:
                if self._in_tokens:
                    add("\n")
                    self._in_tokens = False
                add(item.human if item.stream is not None else format_line(item))
                add("\n")
            elif type(item) is _Verbatim:
                if self._in_tokens:
                    add("\n")
                    self._in_tokens = False
                add(item.text)
            elif type(item) is _Token:
                add(item.text)
                self._in_tokens = not item.text.endswith("\n")
            elif type(item) is _State:
                if self._in_tokens:
                    add("\n")
                    self._in_tokens = False
                if item.data:
                    add(format_line(_state_event(item.data)))
                    add("\n")
        text = "".join(out)
        if all(type(item) is _Verbatim for item in items):
            return text  # checked free of control characters by the capture
        if _UNSAFE.search(text) is not None:
            text = "\n".join(map(strip_control, text.split("\n")))
        return text

    # -- json -----------------------------------------------------------------------

    def _json_batch(self, items: list[_Item]) -> str:
        out: list[str] = []
        add = out.append
        for item in items:
            if type(item) is NarrationEvent:
                add(_event_json(item))
            elif type(item) is _Verbatim:
                _batch_json(item, add)
            elif type(item) is _Token:
                add(_dumps({"event": "token", **item.data}) + "\n")
            elif type(item) is _State and item.data:
                add(_dumps({"event": "state", **item.data}) + "\n")
        text = "".join(out)
        if _C1.search(text) is not None:
            text = _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
        return text

    # -- live -----------------------------------------------------------------------

    def _live_batch(self, items: list[_Item]) -> None:
        lines: list[list[Segment] | str] = []
        for item in items:
            if type(item) is _Token:
                self._partial += _strip_keep_newlines(item.text)
                if "\n" in self._partial:
                    done, _, self._partial = self._partial.rpartition("\n")
                    lines.extend([Segment(part)] for part in done.split("\n"))
                continue
            if self._partial:
                lines.append([Segment(self._partial)])
                self._partial = ""
            if type(item) is NarrationEvent:
                lines.append(self._segments(item))
            elif type(item) is _Verbatim:
                lines.append(self._prerendered(item))
            elif type(item) is _State and item.data:
                lines.append(self._segments(_state_event(item.data)))
        console = self._console
        if lines and console is not None:
            console.print(_Lines(lines), soft_wrap=True)
        if self._live is not None and not lines:
            self._live.refresh()

    def _segments(self, ev: NarrationEvent) -> list[Segment]:
        human = strip_control(ev.human)
        if ev.stream is not None:
            return [Segment(human, _STDERR_STYLE if ev.stream == "stderr" else None)]
        actor = strip_control(ev.actor)
        return [
            Segment(f"[{actor:<10}] ", self._actor_style(actor)),
            Segment(f"{strip_control(ev.action):<15}: ", _ACTION_STYLE),
            Segment(human, _LEVEL_STYLES.get(ev.level)),
        ]

    def _prerendered(self, batch: _Verbatim) -> str:
        """The terminal text `_segments` would print for a clean batch's events, with
        each actor's colour codes built once (Rich costs ~1 µs per styled segment)."""
        out: list[str] = []
        add = out.append
        heads: dict[str, str] = {}  # by the line's first 30 characters, or actor LF action
        plain_pre, plain_post = ("", "") if batch.stream == "stdout" else self._ansi(_STDERR_STYLE)
        for line in batch.lines:
            if line[11:13] == "] " and line[28:30] == ": " and line[:1] == "[" and len(line) > 30:
                # The seed's widths: the first 30 characters decide the head, and a clean
                # batch holds no backslash to unescape (see format.split_line).
                head = heads.get(line[:30])
                if head is not None:
                    add(head)
                    add(line[30:])
                    add("\n")
                    continue
            parts = split_line(line) if line[:1] == "[" else None
            if parts is None:
                add(f"{plain_pre}{line}{plain_post}\n" if line else "\n")
                continue
            actor, action, human = parts
            head = heads.get(f"{actor}\n{action}")
            if head is None:
                actor_pre, actor_post = self._ansi(self._actor_style(actor))
                action_pre, action_post = self._ansi(_ACTION_STYLE)
                head = heads[f"{actor}\n{action}"] = (
                    f"{actor_pre}[{actor:<10}] {actor_post}{action_pre}{action:<15}: {action_post}"
                )
                if len(line) > 30 and line[:30] == f"[{actor:<10}] {action:<15}: ":
                    heads[line[:30]] = head
            add(head)
            add(human)
            add("\n")
        return "".join(out)

    def _ansi(self, style: Style) -> tuple[str, str]:
        """The codes Rich writes before and after a segment in `style` on this console."""
        codes = self._ansi_codes.get(style)
        if codes is None:
            console = self._console
            # Rich renders with its private _color_system; there is no public twin.
            system = console._color_system if console is not None else None
            if system is None:
                codes = ("", "")
            else:
                shown = style.without_color if console is not None and console.no_color else style
                pre, _, post = shown.render("\x00", color_system=system).partition("\x00")
                codes = (pre, post)
            self._ansi_codes[style] = codes
        return codes

    def _actor_style(self, actor: str) -> Style:
        style = self._styles.get(actor)
        if style is None:
            name = ACTOR_STYLES.get(actor) or _PALETTE[zlib.crc32(actor.encode()) % len(_PALETTE)]
            style = self._styles[actor] = Style.parse(name)
        return style

    def _live_view(self) -> Group:
        parts: list[Any] = []
        if self._partial:
            parts.append(Text(self._partial))
        if self._progress:
            parts.append(Text(self._progress, no_wrap=True, overflow="ellipsis"))
        status = self._status
        if status is not None:
            text, since = status
            self._spinner.update(text=Text(f"{text} · {_elapsed(time.monotonic() - since)}"))
            parts.append(self._spinner)
        return Group(*parts)


class _Lines:
    """Pre-styled lines as Rich segments: no markup, no wrapping, no measuring."""

    __slots__ = ("lines",)

    def __init__(self, lines: list[list[Segment] | str]) -> None:
        self.lines = lines  # a str is lines already rendered, each ending with a newline

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        newline = Segment.line()
        for line in self.lines:
            if isinstance(line, str):
                yield Segment(line)
                continue
            yield from line
            yield newline


class _Drawn:
    """A renderable built each time Rich draws it. Live redraws its last renderable under
    every print; built once per refresh, that would show the status of the last refresh."""

    __slots__ = ("build",)

    def __init__(self, build: Callable[[], Group]) -> None:
        self.build = build

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.build()


def table_console(settings: KeeperSettings) -> Console:
    """A console for tables on stdout: no colour and no bold/underline either with
    --no-color or NO_COLOR (Rich's own `no_color` still prints bold)."""
    plain = settings.no_color or settings.json
    return Console(color_system=None if plain else "auto", highlight=False)


def make_renderer(
    settings: KeeperSettings,
    *,
    console: Console | None = None,
    file: IO[str] | None = None,
    err_file: IO[str] | None = None,
) -> Renderer:
    """The renderer `settings` asks for; use it as `with make_renderer(settings) as r:`."""
    return Renderer(settings, console=console, file=file, err_file=err_file)


def _for_stderr(item: _Item) -> bool:
    """Plain mode with an err_file: a child's stderr line, or the keeper's own narration
    (no origin: not relayed from a child)."""
    if type(item) is _Verbatim:
        return item.stream == "stderr"
    return type(item) is NarrationEvent and (
        item.stream == "stderr" or (item.stream is None and item.origin is None)
    )


def _elapsed(seconds: float) -> str:
    """`4.2s`, or `3m07s` past a minute: tenths show a short wait is moving."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _strip_keep_newlines(text: str) -> str:
    """`strip_control` for text whose newlines are meaningful (streamed tokens)."""
    if _UNSAFE.search(text) is None:
        return text
    return "\n".join(map(strip_control, text.split("\n")))


def _state_event(data: dict[str, Any]) -> NarrationEvent:
    state = str(data.get("state", "unknown"))
    error = data.get("error")
    human = f"job {state}: {error}" if error else f"job {state}"
    return NarrationEvent("keeper", "state", human, level="error" if error else "info")


_str = json.encoder.encode_basestring  # C-accelerated


def _opt(value: str | None) -> str:
    return "null" if value is None else _str(value)


def _event_json(ev: NarrationEvent) -> str:
    """`{"event": ..., **ev.to_dict()}` as one line, without building the dict.

    The hot path of `--json`: json.dumps per event costs more than capture itself.
    tests/keeper/test_render.py checks it matches `to_dict` key for key.
    """
    kind = "narration" if ev.stream is None else "output"
    tail = ""
    if ev.fields:
        tail += f',"fields":{_dumps(ev.fields)}'
    if ev.origin is not None:
        tail += f',"origin":{_str(ev.origin)}'
    if ev.stream is not None:
        tail += f',"stream":{_str(ev.stream)}'
    return (
        f'{{"event":"{kind}","actor":{_str(ev.actor)},"action":{_str(ev.action)},'
        f'"target":{_opt(ev.target)},"human":{_str(ev.human)},"job_id":{_opt(ev.job_id)},'
        f'"correlation_id":{_opt(ev.correlation_id)},"level":{_str(ev.level)},'
        f'"ts":{float(ev.ts)!r}{tail}}}\n'
    )


def _batch_json(batch: _Verbatim, add: Callable[[str], object]) -> None:
    """`_event_json` of the events a clean line batch stands for, with the parts every
    line shares built once: the same text, key for key (a property test checks it)."""
    tail = (
        f',"job_id":{_opt(batch.job_id)},"correlation_id":{_opt(batch.correlation_id)},'
        f'"level":"info","ts":{float(batch.ts)!r}'
    )
    if batch.origin is not None:
        tail += f',"origin":{_str(batch.origin)}'
    narration_tail = tail + "}\n"
    output_head = (
        f'{{"event":"output","actor":{_str(batch.actor)},"action":"output","target":null,"human":'
    )
    output_tail = f'{tail},"stream":{_str(batch.stream)}}}\n'
    heads: dict[str, str] = {}
    for line in batch.lines:
        if line[11:13] == "] " and line[28:30] == ": " and line[:1] == "[" and len(line) > 30:
            head = heads.get(line[:30])  # the seed's widths: as in Renderer._prerendered
            if head is not None:
                add(head)
                add(_str(line[30:]))
                add(narration_tail)
                continue
        parts = split_line(line) if line[:1] == "[" else None
        if parts is None:
            add(output_head)
            add(_str(line))
            add(output_tail)
            continue
        actor, action, human = parts
        head = heads.get(f"{actor}\n{action}")
        if head is None:
            head = heads[f"{actor}\n{action}"] = (
                f'{{"event":"narration","actor":{_str(actor)},"action":{_str(action)},'
                '"target":null,"human":'
            )
            if len(line) > 30 and line[:30] == f"[{actor:<10}] {action:<15}: ":
                heads[line[:30]] = head
        add(head)
        add(_str(human))
        add(narration_tail)


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def _write_text(file: IO[str], text: str) -> None:
    if not text:
        return
    try:
        file.write(text)
    except UnicodeEncodeError:  # a non-UTF-8 terminal: show what it can
        encoding = getattr(file, "encoding", None) or "ascii"
        file.write(text.encode(encoding, "replace").decode(encoding))
    file.flush()


def _isatty(file: IO[str]) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
