"""Tables on stdout: Rich tables that fit a terminal, and whole rows on a pipe."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

from keeper.settings import KeeperSettings

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

PIPED_WIDTH = 100_000  # columns for tables on a pipe: wider than any row, so none is cut
TRAILING_BLANKS = re.compile(r" +$", re.MULTILINE)  # Rich pads each table line to its width


def table_console(settings: KeeperSettings) -> Console:
    """A console for tables on stdout: no colour and no bold/underline either with
    --no-color or NO_COLOR (Rich's own `no_color` still prints bold), and no `:emoji:`
    codes: a name is shown as it was written."""
    from rich.console import Console

    class TableConsole(Console):
        def on_broken_pipe(self) -> None:
            """The reader left (`keeper status | head -1`): not an error, so stop printing
            and exit 0, where Rich exits 1."""
            self.quiet = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            raise SystemExit(0)

    plain = settings.no_color or settings.json
    return TableConsole(color_system=None if plain else "auto", highlight=False, emoji=False)


def print_tables(settings: KeeperSettings, *renderables: RenderableType) -> None:
    """Print Rich tables (and texts) on stdout. On a terminal they fit its width; piped or
    redirected (`keeper jobs list | awk`), every row is whole however wide it is, and no
    line ends in the blanks Rich pads its cells with."""
    console = table_console(settings)
    if console.is_terminal:
        for renderable in renderables:
            console.print(renderable)
        return
    console.width = PIPED_WIDTH
    for renderable in renderables:
        with console.capture() as captured:
            console.print(renderable)
        try:
            sys.stdout.write(TRAILING_BLANKS.sub("", captured.get()))
            sys.stdout.flush()
        except BrokenPipeError:
            console.on_broken_pipe()
