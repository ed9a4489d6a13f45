"""`keeper status`: the queen, its hives (last beat, stale) and their workers as tables.

The figures come from the queen's read-only `GET /v1/status` (its registry is fed by
heartbeats): looking at the queen creates no job. `--json` prints one line, the snapshot
as `result` beside `"event": "status"` and `"state": "completed"`, the shape the status
job's last line had, so scripts reading it keep working.
"""

from __future__ import annotations

import time
from typing import Any

from keeper.settings import KeeperSettings

MIB = 1024 * 1024  # RSS is shown in MiB


def snapshot(settings: KeeperSettings) -> dict[str, Any]:
    """The queen's status now; raises the keeper's errors (unreachable: exit 3)."""
    from keeper.session import open_client

    with open_client(settings) as client:
        return client.status()


def show(settings: KeeperSettings) -> None:
    """Ask the queen for its snapshot and print it; raises like any queen command."""
    now = snapshot(settings)
    if settings.json:
        import json
        import sys

        line = {"event": "status", "state": "completed", "url": settings.queen_url, "result": now}
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        return
    from keeper.output import print_tables

    print_tables(settings, *tables(now, settings.queen_url, now=time.time()))


def tables(snapshot: dict[str, Any], url: str, *, now: float) -> list[Any]:
    """Three Rich tables: the queen, its hives, their workers.

    Every cell is a Text: ids and model refs are whatever users named them, and a
    string cell would be read as Rich markup (`[/x]` fails) and emoji codes (`:smile:`).
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    def table(title: str, *columns: str) -> Table:
        made = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in columns:
            made.add_column(column)
        return made

    def row(table: Table, *cells: str | Text) -> None:
        table.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in cells))

    queen = table("queen", "url", "version", "up", "jobs")
    counts = ", ".join(f"{n} {s}" for s, n in sorted(snapshot.get("jobs", {}).items()))
    row(
        queen,
        url,
        str(snapshot.get("version", "?")),
        _ago(snapshot.get("uptime_s")),
        counts or "none",
    )
    hives = table("hives", "id", "url", "last beat", "state", "workers", "lends", "splits")
    for hive in snapshot.get("hives", []):
        seen = hive.get("last_seen")
        state = (
            Text("stale", style="bold red")
            if hive.get("stale")
            else Text("never beat" if seen is None else "up")
        )
        row(
            hives,
            hive["hive_id"],
            hive["url"],
            "-" if seen is None else f"{_ago(now - seen)} ago",
            state,
            str(len(hive.get("workers", []))),
            _lends(hive.get("lend_bytes")),
            _splits(hive),
        )
    kept = _served(snapshot.get("served") or [], table, row)
    if not snapshot.get("workers"):
        hint = Text("no workers; start one with `keeper worker spawn --model REF`")
        return [queen, hives, *kept, hint]
    workers = table(
        "workers",
        "hive",
        "id",
        "model",
        "device",
        "state",
        "slots",
        "threads",
        "context",
        "pid",
        "port",
        "RSS",
    )
    for w in snapshot["workers"]:
        rss, ctx, kv = w.get("rss_bytes"), w.get("ctx_size"), w.get("kv_bytes")
        context = "-" if ctx is None else f"{ctx} tok/slot"
        if ctx is not None and kv is not None:
            context += f", {kv / MIB:.0f} MiB KV"
        row(
            workers,
            w["hive_id"],
            w["worker_id"],
            w["model"],
            w["device"],
            w["state"],
            f"{w.get('slots_busy', 0)}/{w.get('slots', 1)} busy",
            str(w.get("threads") or "-"),
            context,
            str(w["pid"]),
            str(w["port"]),
            "-" if rss is None else f"{rss / MIB:.0f} MiB",
        )
    return [queen, hives, *kept, workers]


def _served(rows: list[dict[str, Any]], table: Any, row: Any) -> list[Any]:
    """The models `keeper model serve` keeps: wanted replicas against live workers."""
    if not rows:
        return []
    served = table("served", "model", "hive", "replicas", "live")
    for r in rows:
        most = r.get("max_replicas") or r["replicas"]
        wanted = f"{r['replicas']}" + (f" (up to {most})" if most > r["replicas"] else "")
        live = r.get("live") or []
        row(
            served,
            r["model"],
            r.get("hive_id") or "any",
            wanted,
            f"{len(live)}: {', '.join(live) or '-'}",
        )
    return [served]


def _lends(size: int | None) -> str:
    """What a hive lends placement (`--lend-memory`): `2.0 GiB`, `512 MiB`; `all free`
    when it sets no cap."""
    if size is None:
        return "all free"
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f} GiB"
    return f"{size / MIB:,.0f} MiB"


def _splits(hive: dict[str, Any]) -> str:
    """Whether the hive can take part in a model split across hives (docs/splitting.md),
    or why not: its llama.cpp has no RPC (the hive's reason), or it lends nothing."""
    can = hive.get("supports_rpc")
    if can is None:
        return "?"
    if not can:
        return f"no: {hive.get('rpc_reason') or 'its llama.cpp has no RPC'}"
    return "no: it lends no memory (--lend-memory 0)" if hive.get("lend_bytes") == 0 else "yes"


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
