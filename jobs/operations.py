"""Operations: what a job does, as flat JSON tagged by `operation` (upstream's wire shape).

    {"operation": "worker_spawn", "hive_id": "localhost", "model": "builtin:tiny", "device": "cpu"}

Unknown fields are rejected (422): queen, hive and keeper ship in one distribution, so an
unknown field is a typo (`max_token`) that would otherwise be silently ignored.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from jobs.errors import InvalidRequest

DEFAULT_HIVE = "localhost"  # the hive on the queen's own machine


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueenStatus(_Op):
    """The queen's uptime, version, job counts and known hives.

    With `watch`, the job keeps narrating a fresh snapshot every `interval_s` until it is
    cancelled (`keeper status --watch`); it is the one queen operation that runs until told
    to stop.
    """

    operation: Literal["queen_status"] = "queen_status"
    watch: bool = False
    interval_s: float = Field(default=2.0, ge=0.01, le=3600)  # a floor: no busy loop


class HiveStart(_Op):
    operation: Literal["hive_start"] = "hive_start"
    hive_id: str = DEFAULT_HIVE


class HiveStop(_Op):
    operation: Literal["hive_stop"] = "hive_stop"
    hive_id: str = DEFAULT_HIVE


class HiveList(_Op):
    operation: Literal["hive_list"] = "hive_list"


class HiveStatus(_Op):
    operation: Literal["hive_status"] = "hive_status"
    hive_id: str = DEFAULT_HIVE


class WorkerSpawn(_Op):
    operation: Literal["worker_spawn"] = "worker_spawn"
    hive_id: str = DEFAULT_HIVE
    model: str = Field(min_length=1)
    device: str = "cpu"


class WorkerList(_Op):
    operation: Literal["worker_list"] = "worker_list"
    hive_id: str = DEFAULT_HIVE


class WorkerStop(_Op):
    operation: Literal["worker_stop"] = "worker_stop"
    hive_id: str = DEFAULT_HIVE
    worker_id: str = Field(min_length=1)


class ModelDownload(_Op):
    operation: Literal["model_download"] = "model_download"
    hive_id: str = DEFAULT_HIVE
    model: str = Field(min_length=1)


class ModelList(_Op):
    operation: Literal["model_list"] = "model_list"
    hive_id: str = DEFAULT_HIVE


class ModelDelete(_Op):
    operation: Literal["model_delete"] = "model_delete"
    hive_id: str = DEFAULT_HIVE
    model: str = Field(min_length=1)


class Infer(_Op):
    """Generate text; tokens arrive as `token` events on the job's stream."""

    operation: Literal["infer"] = "infer"
    prompt: str
    model: str = Field(min_length=1)
    max_tokens: int = Field(default=128, ge=1, le=32768)
    temperature: float = Field(default=0.7, ge=0, le=5)
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = Field(default=40, ge=0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    hive_id: str | None = None  # None: any hive with the model loaded


Operation = Annotated[
    QueenStatus
    | HiveStart
    | HiveStop
    | HiveList
    | HiveStatus
    | WorkerSpawn
    | WorkerList
    | WorkerStop
    | ModelDownload
    | ModelList
    | ModelDelete
    | Infer,
    Field(discriminator="operation"),
]
OPERATION_ADAPTER: TypeAdapter[Operation] = TypeAdapter(Operation)
OPERATION_MODELS: tuple[type[BaseModel], ...] = (
    QueenStatus,
    HiveStart,
    HiveStop,
    HiveList,
    HiveStatus,
    WorkerSpawn,
    WorkerList,
    WorkerStop,
    ModelDownload,
    ModelList,
    ModelDelete,
    Infer,
)
OPERATION_NAMES: tuple[str, ...] = tuple(
    m.model_fields["operation"].default for m in OPERATION_MODELS
)


def parse_operation(body: bytes | str | dict[str, Any]) -> Operation:
    """Validate a request body; raises InvalidRequest (400 malformed JSON, 422 invalid)."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequest(
                f"the body is not valid JSON ({exc}); send an object such as "
                '{"operation": "queen_status"}',
                status=400,
            ) from None
    if not isinstance(body, dict):
        raise InvalidRequest(
            'the body must be a JSON object with an "operation" field', detail=None, status=422
        )
    try:
        return OPERATION_ADAPTER.validate_python(body)
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_context=False, include_input=False)
        first: dict[str, Any] = dict(detail[0]) if detail else {}
        loc = first.get("loc", ())[1:]  # the first element is the operation tag
        where = ".".join(str(p) for p in loc) or "operation"
        raise InvalidRequest(
            f"invalid operation at {where}: {first.get('msg', 'invalid')}; "
            "see GET /openapi.json for the accepted shapes",
            detail=detail,
        ) from None


def operation_json(op: Operation) -> dict[str, Any]:
    """The flat wire form of an operation, defaults included."""
    return op.model_dump(mode="json")
