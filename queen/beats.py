"""The queen's end of heartbeats: `POST /v1/heartbeats` (a `jobs.beats.HiveBeat`) -> 204.

Each beat updates the hive registry; the first beat of a hive, and the first after it
went stale, is narrated on the queen's own output, so its log says when hives came and
went back without a line per beat.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jobs.beats import HiveBeat
from jobs.errors import InvalidRequest
from narration_core import Narrator
from queen.hives import HiveRegistry

NARRATE = Narrator("queen-rbee")
HEARTBEAT_PATH = "/v1/heartbeats"

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
    }
}


def heartbeat_routes(hives: HiveRegistry) -> list[BaseRoute]:
    """The heartbeat route, recording into `hives`."""

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

    return [Route(HEARTBEAT_PATH, receive, methods=["POST"])]


def parse_beat(body: bytes) -> HiveBeat:
    """The HiveBeat in a request body; raises InvalidRequest (422) naming the first problem."""
    try:
        return HiveBeat.model_validate_json(body)
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_context=False, include_input=False)
        first: dict[str, Any] = dict(detail[0]) if detail else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidRequest(
            f"not a heartbeat: {where}: {first.get('msg', 'invalid')}; "
            "send a jobs.beats.HiveBeat (see GET /openapi.json)",
            detail=detail,
        ) from None
