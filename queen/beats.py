"""The queen's end of heartbeats: `POST /v1/heartbeats` (a `jobs.HiveBeat`) -> 204,
and `POST /v1/heartbeats/goodbye` (a `jobs.HiveGoodbye`) -> 204.

Each beat updates the hive registry; the first beat of a hive, and the first after it
went stale, is narrated on the queen's own output, so its log says when hives came and
went back without a line per beat. A goodbye drops the hive and its workers at once, and
says so.

Both routes need the sending hive's credential (`Authorization: Bearer`, derived from the
queen's secret and the hive id, jobs._credentials), on loopback too and whatever the
user's RBEE_TOKEN: a process without it gets 401 and changes nothing, so nobody can
advertise a fake worker to receive other people's prompts. The credential is bound to the
hive id, so a beat can only describe the hive that sent it; a goodbye needs the very
credential its hive's beats carry.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from jobs import (
    GOODBYE_PATH,
    HEARTBEAT_PATH,
    HiveBeat,
    HiveGoodbye,
    InvalidRequest,
    same_credential,
)
from narration_core import Narrator
from queen.hives import HiveRegistry

NARRATE = Narrator("queen-rbee")
BEAT_PATHS = (HEARTBEAT_PATH, GOODBYE_PATH)  # past the user's token: they check their own
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
                "401": {"description": "not the hive's credential: {error, detail}"},
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
                "401": {"description": "not the hive's credential: {error, detail}"},
                "422": {"description": "not a goodbye: {error, detail}"},
            },
        }
    },
}


def heartbeat_routes(hives: HiveRegistry) -> list[BaseRoute]:
    """The heartbeat and goodbye routes, recording into `hives`."""

    def check(request: Request, hive_id: str) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not same_credential(
            given.strip(), hives.credential(hive_id)
        ):
            raise InvalidRequest(
                f"this request does not carry hive {hive_id}'s credential; a hive gets it "
                "from `keeper hive start`, which derives it from this queen's secret",
                status=401,
            )

    async def receive(request: Request) -> Response:
        beat = parse_beat(await request.body())
        check(request, beat.hive_id)
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
        check(request, goodbye.hive_id)
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
