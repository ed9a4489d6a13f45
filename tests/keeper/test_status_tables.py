"""`keeper status` tables print what the queen reports, character for character."""

from __future__ import annotations

import io

from keeper.commands.status import tables
from keeper.output import table_console
from keeper.settings import KeeperSettings

# Hive ids come from the hives config and heartbeats, model refs from the user: any
# of them may hold brackets or colons.
ODD_HIVE = "gpu[/x]"
ODD_MODEL = "m[bold]q4:smile:.gguf"


def test_names_are_not_read_as_rich_markup_or_emoji() -> None:
    """A hive id or model with `[/x]` or `:smile:` prints as written instead of failing
    as a markup error or turning into an emoji."""
    snapshot = {
        "version": "1.0",
        "uptime_s": 3.0,
        "jobs": {"completed": 2},
        "hives": [{"hive_id": ODD_HIVE, "url": "http://h:1", "last_seen": None, "workers": []}],
        "workers": [
            {
                "hive_id": ODD_HIVE,
                "worker_id": "w[1]",
                "model": ODD_MODEL,
                "device": "cpu",
                "state": "idle",
                "pid": 1,
                "port": 2,
                "rss_bytes": None,
            }
        ],
    }
    console = table_console(KeeperSettings(no_color=True))
    console.file = out = io.StringIO()
    console.width = 200
    for table in tables(snapshot, "http://q:7833", now=0.0):
        console.print(table)
    text = out.getvalue()
    assert ODD_HIVE in text and ODD_MODEL in text and "w[1]" in text, text


def test_each_hive_says_whether_it_can_take_part_in_a_split_and_why_not() -> None:
    """The `splits` column: yes; the hive's own reason when its llama.cpp has no RPC;
    lending nothing; `?` until the hive has said (its first beat)."""
    no_rpc = "llama-cpp-python was built without GGML_RPC; run make install"
    hives = [
        {"hive_id": "can", "supports_rpc": True, "lend_bytes": None},
        {"hive_id": "norpc", "supports_rpc": False, "rpc_reason": no_rpc},
        {"hive_id": "zero", "supports_rpc": True, "lend_bytes": 0},
        {"hive_id": "new"},
    ]
    snapshot = {
        "version": "1.0", "uptime_s": 3.0, "jobs": {},
        "hives": [{"url": "http://h:1", "last_seen": None, "workers": [], **h} for h in hives],
    }  # fmt: skip
    console = table_console(KeeperSettings(no_color=True))
    console.file = out = io.StringIO()
    console.width = 300
    for table in tables(snapshot, "http://q:7833", now=0.0):
        console.print(table)
    rows = {line.split()[0]: line for line in out.getvalue().splitlines() if line.strip()}
    assert rows["can"].rstrip().endswith("yes"), rows
    assert rows["norpc"].rstrip().endswith(f"no: {no_rpc}"), rows
    assert rows["zero"].rstrip().endswith("no: it lends no memory (--lend-memory 0)"), rows
    assert rows["new"].rstrip().endswith("?"), rows
