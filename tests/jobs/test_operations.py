"""The operation union: the flat wire shape, defaults, and rejections."""

from __future__ import annotations

import pytest

from jobs import (
    OPERATION_NAMES,
    Infer,
    InvalidRequest,
    WorkerSpawn,
    operation_json,
    parse_operation,
)


def test_upstream_shape_parses() -> None:
    """The upstream example body parses to its model and dumps back flat, with the
    worker's sizes it left out as their defaults (None: the worker's own)."""
    body = {
        "operation": "worker_spawn",
        "hive_id": "localhost",
        "model": "builtin:tiny",
        "device": "cpu",
    }
    op = parse_operation(body)
    assert isinstance(op, WorkerSpawn)
    assert operation_json(op) == {**body, "parallel": None, "threads": None, "ctx_size": None}


def test_infer_defaults_and_bounds() -> None:
    """infer fills sampling defaults and rejects out-of-range values."""
    op = parse_operation(b'{"operation":"infer","prompt":"hi","model":"m"}')
    assert isinstance(op, Infer) and op.max_tokens == 128 and op.stop == []
    with pytest.raises(InvalidRequest) as info:
        parse_operation({"operation": "infer", "prompt": "hi", "model": "m", "top_p": 2})
    assert info.value.status == 422 and "top_p" in str(info.value)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 422, "JSON object"),
        (b'{"operation": "fly"}', 422, "does not match"),
        (b'{"hive_id": "x"}', 422, "Unable to extract tag"),
        (b'{"operation": "worker_spawn"}', 422, "model: Field required"),
        (b'{"operation": "hive_list", "verbose": true}', 422, "verbose: Extra inputs"),
    ],
)
def test_bad_bodies_are_rejected(body: bytes, status: int, fragment: str) -> None:
    """Malformed JSON is 400; unknown operations, missing and unknown fields are 422."""
    with pytest.raises(InvalidRequest) as info:
        parse_operation(body)
    assert info.value.status == status
    assert fragment in str(info.value)


def test_every_operation_is_named() -> None:
    """The union covers every operation the design lists."""
    assert set(OPERATION_NAMES) == {
        "queen_status", "hive_start", "hive_stop", "hive_list", "hive_status", "worker_spawn",
        "worker_list", "worker_stop", "model_download", "model_list", "model_delete", "infer",
        "model_serve", "rpc_serve", "rpc_stop",
    }  # fmt: skip
