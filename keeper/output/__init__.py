"""The keeper's output: a live Rich view on a terminal, plain lines, or JSON lines, and
tables.

    with make_renderer(settings) as out:
        out.status("Starting queen")
        ...                                  # anything narrated lands on the screen

Behind this face: the frame pump (`_pump`: the queue, the frame thread, back-pressure,
output that cannot be written), plain lines (`_plain`), JSON lines (`_jsonlines`), the
live view (`_live`, with Rich; loaded only in live mode, so `LiveView` loads on first
use), tables (`_tables`, Rich imported when one is printed), the trace waterfall
(`_waterfall`, likewise) and what the pump queues (`_items`).
"""

from __future__ import annotations

import typing

from keeper.output._items import Drawn, Item, State, Token, Verbatim, state_event
from keeper.output._pump import Renderer, make_renderer
from keeper.output._tables import print_tables, table_console
from keeper.output._waterfall import trace_waterfall

if typing.TYPE_CHECKING:
    from keeper.output._live import LiveView


def __getattr__(name: str) -> object:
    if name != "LiveView":
        raise AttributeError(f"module 'keeper.output' has no attribute {name!r}")
    from keeper.output._live import LiveView

    return LiveView


__all__ = [
    "Drawn",
    "Item",
    "LiveView",
    "Renderer",
    "State",
    "Token",
    "Verbatim",
    "make_renderer",
    "print_tables",
    "state_event",
    "table_console",
    "trace_waterfall",
]
