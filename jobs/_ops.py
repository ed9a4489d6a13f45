"""Operation builders: each returns one operation's flat wire dict, the shape the pydantic
models of `jobs._operations` validate on the server, without importing pydantic — so a
client (the keeper) states what it asks for in one typed call and never spells the dict.

    >>> worker_spawn_op(hive_id="gpu1", model="builtin:tiny")
    {'operation': 'worker_spawn', 'hive_id': 'gpu1', 'model': 'builtin:tiny', 'device': 'cpu'}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobs._sampling import (
    MAX_TOKENS_DEFAULT,
    TEMPERATURE_DEFAULT,
    TOP_K_DEFAULT,
    TOP_P_DEFAULT,
)

WireOperation = dict[str, Any]
"""An operation as sent: JSON-ready, tagged by `operation`."""


def queen_status_op(*, watch: bool = False, interval_s: float | None = None) -> WireOperation:
    """The queen's snapshot; with `watch`, a fresh one every `interval_s` until cancelled."""
    operation: WireOperation = {"operation": "queen_status"}
    if watch:
        operation["watch"] = True
        if interval_s is not None:
            operation["interval_s"] = interval_s
    return operation


def hive_list_op() -> WireOperation:
    return {"operation": "hive_list"}


def hive_status_op(*, hive_id: str) -> WireOperation:
    return {"operation": "hive_status", "hive_id": hive_id}


def worker_spawn_op(
    *,
    hive_id: str,
    model: str,
    device: str = "cpu",
    parallel: int | None = None,
    threads: int | None = None,
    ctx_size: int | None = None,
) -> WireOperation:
    op: WireOperation = {
        "operation": "worker_spawn",
        "hive_id": hive_id,
        "model": model,
        "device": device,
    }
    sizes = {"parallel": parallel, "threads": threads, "ctx_size": ctx_size}
    op.update({name: value for name, value in sizes.items() if value is not None})
    return op


def worker_list_op(*, hive_id: str) -> WireOperation:
    return {"operation": "worker_list", "hive_id": hive_id}


def worker_stop_op(*, hive_id: str, worker_id: str) -> WireOperation:
    return {"operation": "worker_stop", "hive_id": hive_id, "worker_id": worker_id}


def model_download_op(*, hive_id: str, model: str) -> WireOperation:
    return {"operation": "model_download", "hive_id": hive_id, "model": model}


def model_list_op(*, hive_id: str) -> WireOperation:
    return {"operation": "model_list", "hive_id": hive_id}


def model_delete_op(*, hive_id: str, model: str) -> WireOperation:
    return {"operation": "model_delete", "hive_id": hive_id, "model": model}


def model_serve_op(
    *, model: str, replicas: int, max_replicas: int | None = None, hive_id: str | None = None
) -> WireOperation:
    """Keep `replicas` workers of `model` (0: stop keeping them); with `max_replicas`, add
    workers while its queue grows; `hive_id` None lets placement choose the hives."""
    op: WireOperation = {"operation": "model_serve", "model": model, "replicas": replicas}
    if max_replicas is not None:
        op["max_replicas"] = max_replicas
    if hive_id is not None:
        op["hive_id"] = hive_id
    return op


def chat_messages(prompt: str, *, system: str | None = None) -> list[dict[str, str]]:
    """A user message, after a system message when `system` is not empty."""
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": prompt}]


def infer_op(
    *,
    model: str,
    prompt: str | None = None,
    messages: Sequence[dict[str, str]] | None = None,
    max_tokens: int = MAX_TOKENS_DEFAULT,
    temperature: float = TEMPERATURE_DEFAULT,
    top_p: float = TOP_P_DEFAULT,
    top_k: int = TOP_K_DEFAULT,
    seed: int | None = None,
    stop: Sequence[str] = (),
    hive_id: str | None = None,
    worker_id: str | None = None,
) -> WireOperation:
    """Generate text from `prompt` (sent as it is) or `messages` (through the chat
    template); `hive_id` and `worker_id` pin where it runs."""
    if (prompt is None) == (messages is None):
        raise ValueError("give either prompt or messages, not both")
    operation: WireOperation = {
        "operation": "infer",
        "model": model,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "seed": seed,
        "stop": list(stop),
    }
    if prompt is not None:
        operation["prompt"] = prompt
    else:
        operation["messages"] = list(messages or ())
    if hive_id is not None:
        operation["hive_id"] = hive_id
    if worker_id is not None:
        operation["worker_id"] = worker_id
    return operation
