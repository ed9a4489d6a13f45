"""The live view on a terminal: scrolled narration in colour above a spinner line.

Only a renderer in live mode imports this (and Rich's live machinery with it): plain
and JSON output, which scripts and CI read, start without it.

Each frame prints everything queued since the last one in one `console.print` of
pre-styled segments (Rich costs ~80 µs per print, ~1 µs per styled segment), then Rich
redraws the live area: a token line in progress, a child's `\\r` progress bar, and what
the keeper waits for with the time since.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.segment import Segment
from rich.spinner import Spinner
from rich.style import Style
from rich.text import Text

from keeper.output._items import Drawn, Item, State, Token, Verbatim, state_event
from narration_core import NarrationEvent, strip_control
from narration_core.format import SeedHeads, rewrite_heads, split_line
from narration_core.sanitize import strip_control_lines

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


class LiveView:
    """Draws items on a Rich console and keeps the live area under them.

    `status`, `progress` and `partial` are read by the frame thread while the keeper's
    loop sets them: each is replaced by one assignment, never mutated.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status: tuple[str, float] | None = None  # what the keeper waits for, since when
        self.progress: str | None = None  # a child's unfinished `\r` line
        self.partial = ""  # tokens since the last newline
        # One spinner for the whole run: Rich picks its frame from the time since its
        # first render, so a spinner built per frame would show its first frame forever.
        self._spinner = Spinner("dots", style="cyan")
        self._styles: dict[str, Style] = {}
        self._ansi_codes: dict[Style, tuple[str, str]] = {}
        self._live: Live | None = None
        self._seen = SeedHeads()  # the heads of the last line batch

    def start(self) -> None:
        area = _Drawn(self._area)
        self._live = Live(
            get_renderable=lambda: area,
            console=self.console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def draw(self, items: list[Item]) -> None:
        """Print `items` above the live area, in order, in one console write."""
        lines: list[list[Segment] | str] = []
        for item in items:
            if type(item) is Token:
                self.partial += strip_control_lines(item.text)
                if "\n" in self.partial:
                    done, _, self.partial = self.partial.rpartition("\n")
                    lines.extend([Segment(part)] for part in done.split("\n"))
                continue
            if self.partial:
                lines.append([Segment(self.partial)])
                self.partial = ""
            if type(item) is NarrationEvent:
                lines.append(self._segments(item))
            elif type(item) is Drawn:
                lines.append(item.text)
            elif type(item) is Verbatim:
                lines.append(self.prerendered(item))
            elif type(item) is State and item.data:
                lines.append(self._segments(state_event(item.data)))
        if lines:
            self.console.print(_Lines(lines), soft_wrap=True)
        elif self._live is not None:
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

    def prerendered(self, batch: Verbatim) -> str:
        """The terminal text `_segments` would print for a clean batch's events, with
        each actor's colour codes built once. Called from the capture's thread too: the
        caches it fills hold the same value whoever fills them first.

        A stdout batch of seed-width narration (a child narrating) is rewritten head by
        head with `str.replace`, since only the head of such a line is styled.
        """
        if batch.stream == "stdout":
            heads = self._seen.of(batch.text, batch.lines)
            if heads is not None:
                styled = {head: self._styled_head(*names) for head, names in heads.items()}
                return rewrite_heads(batch.text, batch.lines, styled, "\n")
        out: list[str] = []
        add = out.append
        known: dict[str, str] = {}  # styled heads by the line's first 30 characters
        plain_pre, plain_post = ("", "") if batch.stream == "stdout" else self._ansi(_STDERR_STYLE)
        for line in batch.lines:
            if line[11:13] == "] " and line[28:30] == ": " and line[:1] == "[" and len(line) > 30:
                # The seed's widths: the head decides actor and action, and the message
                # is the rest (a clean batch holds no backslash to unescape).
                head = known.get(line[:30])
                if head is None:
                    actor, action = line[1:11].strip(), line[13:28].strip()
                    head = known[line[:30]] = self._styled_head(actor, action)
                add(head)
                add(line[30:])
                add("\n")
                continue
            parts = split_line(line) if line[:1] == "[" else None
            if parts is None:
                add(f"{plain_pre}{line}{plain_post}\n" if line else "\n")
                continue
            actor, action, human = parts
            add(self._styled_head(actor, action))
            add(human)
            add("\n")
        return "".join(out)

    def _styled_head(self, actor: str, action: str) -> str:
        actor_pre, actor_post = self._ansi(self._actor_style(actor))
        action_pre, action_post = self._ansi(_ACTION_STYLE)
        return f"{actor_pre}[{actor:<10}] {actor_post}{action_pre}{action:<15}: {action_post}"

    def _ansi(self, style: Style) -> tuple[str, str]:
        """The codes Rich writes before and after a segment in `style` on this console."""
        codes = self._ansi_codes.get(style)
        if codes is None:
            console = self.console
            # Rich renders with its private _color_system; there is no public twin.
            system = console._color_system
            if system is None:
                codes = ("", "")
            else:
                shown = style.without_color if console.no_color else style
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

    def _area(self) -> Group:
        parts: list[Text | Spinner] = []
        if self.partial:
            parts.append(Text(self.partial))
        if self.progress:
            parts.append(Text(self.progress, no_wrap=True, overflow="ellipsis"))
        status = self.status
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


def _elapsed(seconds: float) -> str:
    """`4.2s`, or `3m07s` past a minute: tenths show a short wait is moving."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
