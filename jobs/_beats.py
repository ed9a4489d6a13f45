"""Heartbeats: what a hive tells the queen about itself and its workers, every few seconds.

    POST /v1/heartbeats           (hive -> queen)   HiveBeat JSON      -> 204
    POST /v1/heartbeats/goodbye   (hive -> queen)   HiveGoodbye JSON   -> 204

The queen's hive registry is rebuilt from these alone, so a restarted queen knows every
live hive again after one interval. A hive that stops says goodbye, and the queen drops it
and its workers at once; one that falls silent without a word (killed, cut off) is marked
stale after STALE_AFTER_BEATS missed beats rather than forgotten. Both calls carry the
same credential (the queen's token, when it has one).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, TypeAdapter, ValidationError

HEARTBEAT_PATH = "/v1/heartbeats"  # on the queen: a hive's beat, signed with its credential
GOODBYE_PATH = "/v1/heartbeats/goodbye"  # on the queen: a stopping hive's last word
BEAT_NOW_PATH = "/v1/heartbeats/now"  # on a hive, open: beat now (a queen just started)
BEAT_INTERVAL_S = 2.0  # seconds between a hive's heartbeats
STALE_AFTER_BEATS = 3  # missed beats after which the queen calls a hive stale
BEAT_BACKOFF_MAX_S = 30.0  # longest pause between beats while the queen is unreachable
LEND_MEMORY_ENV = "RBEE_LEND_MEMORY"  # a hive's --lend-memory, from its environment
# What --lend-memory reads: a number and a unit, whole (pydantic's ByteSize alone takes
# "1.5.0G" as 1 byte); ByteSize then says what the unit is worth.
SIZE_PATTERN = re.compile(r"^\s*\d+(\.\d+)?\s*[A-Za-z]*\s*$")

WorkerState = Literal["starting", "loading", "ready", "busy", "stopping", "failed"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkerInfo(_Wire):
    """One worker as its hive reports it."""

    worker_id: str = Field(min_length=1, max_length=128)
    pid: int = Field(ge=1)
    port: int = Field(ge=1, le=65535)
    url: str
    model: str  # the catalog id of the loaded model
    device: str = "cpu"
    state: WorkerState = "starting"
    rss_bytes: int | None = Field(default=None, ge=0)
    started_at: float | None = None  # wall time the worker process started
    # Parallel slots (sequences generated at once) and how many are generating now, from
    # the worker's /health: the queen admits a request only where a slot is free.
    slots: int = Field(default=1, ge=1)
    slots_busy: int = Field(default=0, ge=0)
    threads: int | None = Field(default=None, ge=1)  # CPU threads llama.cpp decodes with
    ctx_size: int | None = Field(default=None, ge=1)  # context tokens per slot
    kv_bytes: int | None = Field(default=None, ge=0)  # memory its KV cache (context) holds


class HiveBeat(_Wire):
    """A hive's heartbeat: who it is, where it listens, and its workers right now."""

    hive_id: str = Field(min_length=1, max_length=128)
    url: str  # base URL the queen should use to reach this hive
    version: str
    workers: list[WorkerInfo] = Field(default_factory=list)
    ts: float  # the hive's wall clock when it sent the beat
    # The machine's memory, for the queen's placement by memory (psutil; VRAM per GPU where
    # nvidia-smi reports it, device name "cuda:N" -> free bytes).
    memory_total_bytes: int | None = Field(default=None, ge=0)
    memory_free_bytes: int | None = Field(default=None, ge=0)
    gpu_free_bytes: dict[str, int] = Field(default_factory=dict)
    # What the hive lends placement (`--lend-memory`): the queen uses at most this much of
    # its memory, for a worker or a share of a split. None: no cap but the free memory.
    lend_bytes: int | None = Field(default=None, ge=0)
    # Whether its llama.cpp can serve a split (GGML_RPC), and why not; None until the hive
    # has looked (after its first beat: it loads libggml), or from an older hive.
    supports_rpc: bool | None = None
    rpc_reason: str | None = Field(default=None, max_length=500)


class HiveGoodbye(_Wire):
    """A stopping hive's last word: the queen forgets it and its workers.

    `url` is the one its beats gave: a goodbye from a hive the queen knows at another URL
    (another hive with the same id took its place) changes nothing. Strict: `"ts": false`
    is refused (422), not read as 0.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    hive_id: str = Field(min_length=1, max_length=128)
    url: str
    ts: float  # the hive's wall clock when it left


def parse_size(text: str) -> int:
    """Bytes from a size as people write it for `--lend-memory`: `2G`, `512M` (powers of
    ten), `1.5GiB`, `2 GiB` (powers of two), `1073741824` (bytes), as pydantic's ByteSize
    reads them; raises ValueError with one sentence naming the value otherwise."""
    problem = ValueError(f"--lend-memory {text!r} is not a size; write e.g. 2G, 512M or 1.5GiB")
    if not SIZE_PATTERN.match(text):
        raise problem
    try:
        return int(TypeAdapter(ByteSize).validate_python(text.strip()))
    except ValidationError:
        raise problem from None
