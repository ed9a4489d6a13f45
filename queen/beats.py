"""The queen's end of heartbeats: `POST /v1/heartbeats` (a `jobs.HiveBeat`) -> 204,
and `POST /v1/heartbeats/goodbye` (a `jobs.HiveGoodbye`) -> 204.

Each beat updates the hive registry; the first beat of a hive, and the first after it
went stale, is narrated on the queen's own output, so its log says when hives came and
went back without a line per beat. A goodbye drops the hive and its workers at once, and
says so. Both routes sit behind the queen's bearer-token check (jobs.server.BearerAuth)
like every other non-open route, so a goodbye needs the very credential a beat needs.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jobs import HiveBeat, HiveGoodbye, InvalidRequest
from narration_core import Narrator
from queen.hives import HiveRegistry

NARRATE = Narrator("queen-rbee")
HEARTBEAT_PATH = "/v1/heartbeats"
GOODBYE_PATH = "/v1/heartbeats/goodbye"
Wire = TypeVar("Wire", bound=BaseModel)

OPENAPI_PATHS: dict[str, Any] = {
    HEARTBEAT_PATH: {
        "post": {
            "summary": "A hive's heartbeat: its id, URL, version and workers (every 2 s)",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": HiveBeat.model_json_schema()}},
            },
            "responses": {
                "204": {"description": "recorded"},
                "422": {"description": "not a heartbeat: {error, detail}"},
            },
        }
    },
    GOODBYE_PATH: {
        "post": {
            "summary": "A stopping hive's goodbye: the queen drops it and its workers",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": HiveGoodbye.model_json_schema()}},
            },
            "responses": {
                "204": {"description": "the hive is gone (or was not known at that URL)"},
                "422": {"description": "not a goodbye: {error, detail}"},
            },
        }
    },
}


def heartbeat_routes(hives: HiveRegistry) -> list[BaseRoute]:
    """The heartbeat and goodbye routes, recording into `hives`."""

    async def receive(request: Request) -> Response:
        beat = parse_beat(await request.body())
        news = hives.beat(beat)
        if news != "ok":
            workers = len(beat.workers)
            came = "joined" if news == "new" else "is back"
            NARRATE.action("hive_beat").target(beat.hive_id).human(
                f"Hive {beat.hive_id} {came} at {beat.url} "
                f"(version {beat.version}, {workers} worker{'s' * (workers != 1)})"
            ).emit()
        return Response(status_code=204)

    async def farewell(request: Request) -> Response:
        goodbye = _parse(HiveGoodbye, await request.body(), "a goodbye")
        gone = hives.goodbye(goodbye)
        if gone is not None:
            workers = len(gone.workers)
            NARRATE.action("hive_goodbye").target(goodbye.hive_id).human(
                f"Hive {goodbye.hive_id} at {goodbye.url} stopped; dropped it and its "
                f"{workers} worker{'s' * (workers != 1)}"
            ).emit()
        return Response(status_code=204)

    return [
        Route(HEARTBEAT_PATH, receive, methods=["POST"]),
        Route(GOODBYE_PATH, farewell, methods=["POST"]),
    ]


def parse_beat(body: bytes) -> HiveBeat:
    """The HiveBeat in a request body; raises InvalidRequest (422) naming the first problem."""
    return _parse(HiveBeat, body, "a heartbeat")


def _parse(model: type[Wire], body: bytes, what: str) -> Wire:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_context=False, include_input=False)
        first: dict[str, Any] = dict(detail[0]) if detail else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidRequest(
            f"not {what}: {where}: {first.get('msg', 'invalid')}; "
            f"send a jobs.{model.__name__} (see GET /openapi.json)",
            detail=detail,
        ) from None
