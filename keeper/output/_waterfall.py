"""`keeper jobs trace`'s waterfall: one request's spans across hops as a Rich table.

    print_tables(settings, trace_waterfall(client.trace(job_id)))

One row per span, in the order the queen's trace gives them (the job, each hop's job,
then the request's phases in time order): its name, the hop and host it ran on, its
start from the request's start, its duration, and a bar placed on the request's time
line, so where the time went shows at a glance. Rich is imported when one is drawn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import RenderableType

BAR_WIDTH = 40  # characters of the time line
_STYLES = {"job": "bold cyan", "phase": "green", "mark": "yellow"}


def trace_waterfall(trace: dict[str, Any]) -> RenderableType:
    """The table for `trace` (a `GET /v1/jobs/{id}/trace` answer)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from narration_core import strip_control

    def clean(value: Any) -> Text:
        """Text another machine wrote (hops, hosts, ids): no control sequences, no markup."""
        return Text(strip_control(str(value)))

    total = max(float(trace.get("duration_s") or 0.0), 1e-9)
    title = Text.assemble(
        ("Trace ", "bold"),
        (strip_control(str(trace.get("trace_id") or "?")), "bold"),
        clean(f"  job {trace.get('job_id')} ({trace.get('state')}), {_seconds(total)}"),
    )
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in (
        ("SPAN", "left"),
        ("HOP", "left"),
        ("HOST", "left"),
        ("START", "right"),
        ("DURATION", "right"),
        ("TIMELINE", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for span in trace.get("spans", []):
        kind = str(span.get("kind"))
        style = _STYLES.get(kind, "")
        name = strip_control(str(span.get("name")))
        offset, duration = float(span.get("offset_s", 0.0)), float(span.get("duration_s", 0.0))
        label = name if kind == "job" else f"  {name}"
        table.add_row(
            Text(label, style=style),
            clean(span.get("hop")),
            clean(span.get("host")),
            f"+{_seconds(offset)}",
            "—" if kind == "mark" else _seconds(duration),
            Text(_bar(offset, duration, total, mark=kind == "mark"), style=style),
        )
    return Group(title, table)


def _bar(offset: float, duration: float, total: float, *, mark: bool) -> str:
    """The span's place on a BAR_WIDTH-wide line: blanks, then blocks (at least one)."""
    begin = min(int(offset / total * BAR_WIDTH), BAR_WIDTH - 1)
    if mark:
        return " " * begin + "◆"
    length = max(1, round(duration / total * BAR_WIDTH))
    return " " * begin + "█" * min(length, BAR_WIDTH - begin)


def _seconds(value: float) -> str:
    """`0.004 s` -> `4 ms`, `2.5` -> `2.50 s`: readable at both scales."""
    if value < 1.0:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"
