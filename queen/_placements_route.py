"""`GET /v1/placements?model=REF`: where the queen would place a model, without placing it.

    routes = placement_routes(Placements(hives))   # behind the user's token, like /v1/status

The plan (queen._split_plan) needs the model's shape, which a hive that has the model
reports in its `model_list` (hive._model_shape), what each hive lends (its beats: free
memory capped by `--lend-memory`), and whether its llama.cpp speaks RPC and which
protocol (its `/v1/capabilities`: `supports_rpc`, `rpc_protocol`). The fresh hives are
asked at once, each within ASK_TIMEOUT_S; one that does not answer is planned without RPC.
Answers the plan as JSON, or `{"error","detail"}`: 404 when no hive has the model (its
shape is unknown), 503 when the hives cannot hold it, 400 for a bad parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from jobs import DEFAULT_HIVE, InvalidRequest, JobError, WorkerSpawn
from jobs.client import JobClient
from queen._memory import lendable
from queen._refs import ASK_TIMEOUT_S, hive_capabilities, list_models, match
from queen._split_plan import CTX_DEFAULT, SLOTS_DEFAULT, Lender, Plan, Shape, split_plan
from queen.hives import Hive, HiveRegistry

PLACEMENTS_PATH = "/v1/placements"

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_SPAWN = WorkerSpawn.model_json_schema()["properties"]  # a worker's bounds, stated once


def _param(name: str) -> dict[str, Any]:
    """WorkerSpawn's schema for field `name` (the integer of an optional int), without its
    title and default: a parameter left out here means "any hive" or the worker's own."""
    schema = _SPAWN[name]
    schema = next((s for s in schema.get("anyOf", []) if s.get("type") == "integer"), schema)
    return {k: v for k, v in schema.items() if k not in ("title", "default")}


OPENAPI_PATHS: dict[str, Any] = {
    PLACEMENTS_PATH: {
        "get": {
            "summary": "Where a model would be placed: one hive, or a split by layers",
            "description": (
                "Reads the model's shape from a hive that has it and what each hive lends; "
                "places nothing. Needs the user's token beyond loopback, like the job routes."
            ),
            "parameters": [
                {"name": "model", "in": "query", "required": True, "schema": _param("model")},
                {"name": "hive", "in": "query", "schema": _param("hive_id")},
                {"name": "ctx_size", "in": "query", "schema": _param("ctx_size")},
                {"name": "parallel", "in": "query", "schema": _param("parallel")},
            ],
            "responses": {
                "200": {
                    "description": "{model, need_bytes, split, worker_hive, hives, left_out}",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "400": {"description": "a missing or malformed parameter", "content": _ERROR},
                "404": {"description": "no hive has the model, or no such hive", "content": _ERROR},
                "503": {"description": "the hives cannot hold the model", "content": _ERROR},
            },
        }
    }
}


@dataclass(frozen=True, slots=True)
class _Heard:
    """What one hive said: the model's shape if it has it, and its RPC."""

    shape: Shape | None
    supports_rpc: bool
    rpc_protocol: str | None


class Placements:
    """Plans for models on the hives the queen knows; event-loop only, no state of its own."""

    def __init__(self, hives: HiveRegistry) -> None:
        self.hives = hives

    async def plan(self, model: str, *, ctx: int, slots: int, at: str | None = None) -> Plan:
        """The plan for `model` with `ctx` tokens in each of `slots`, its worker on hive
        `at` when given; raises InvalidRequest (404: no hive has it or `at` is unknown,
        503: it does not fit)."""
        fresh = [h for h in self.hives.all() if h.beats and not h.is_stale()]
        heard: dict[str, _Heard] = {}

        async def ask(hive: Hive) -> None:
            heard[hive.id] = await self._ask(hive, model)

        async with anyio.create_task_group() as tg:
            for hive in fresh:
                tg.start_soon(ask, hive)
        shape = next((h.shape for h in heard.values() if h.shape is not None), None)
        if shape is None:
            raise InvalidRequest(
                f"no hive has {model} in its catalog, so its size is unknown; download it "
                f"with `keeper model download {model}` and ask again",
                detail={"model": model, "hives": [h.id for h in fresh]},
                status=404,
            )
        lenders = [
            Lender(
                h.id,
                lendable(h.memory_free_bytes, h.lend_bytes),
                heard[h.id].supports_rpc,
                heard[h.id].rpc_protocol,
            )
            for h in fresh
        ]
        return split_plan(model, shape, ctx=ctx, slots=slots, hives=lenders, at=at)

    async def _ask(self, hive: Hive, model: str) -> _Heard:
        """The model's shape on `hive` (None when it lacks the model) and its RPC; a hive
        that does not answer in ASK_TIMEOUT_S has neither."""
        shape, found = None, {}
        token = self.hives.token_for(hive.id)
        with anyio.move_on_after(ASK_TIMEOUT_S):
            try:
                async with JobClient(hive.url, token=token) as client:
                    models = await list_models(client, hive.id)
            except JobError:
                models = []
            model_id = match(models, model)
            entry = next((m for m in models if m.get("id") == model_id), None)
            shape = None if entry is None else Shape.from_listing(entry.get("shape"))
            found = await hive_capabilities(hive.url, token)
        protocol = found.get("rpc_protocol")
        return _Heard(
            shape,
            found.get("supports_rpc") is True,
            None if protocol is None else str(protocol),
        )


def placement_routes(placements: Placements) -> list[BaseRoute]:
    """`GET /v1/placements`; the job server's bearer auth covers it like the job routes,
    and its error handler answers InvalidRequest as `{"error","detail"}`."""

    async def placements_route(request: Request) -> Response:
        model = request.query_params.get("model", "")
        if not model:
            raise InvalidRequest(
                "GET /v1/placements needs ?model=REF (a ref or catalog id, e.g. builtin:tiny)",
                detail={"parameter": "model"},
                status=400,
            )
        unknown = sorted(set(request.query_params) - {"model", "hive", "ctx_size", "parallel"})
        if unknown:
            raise InvalidRequest(
                f"GET /v1/placements takes model, hive, ctx_size and parallel, not {unknown[0]}",
                detail={"parameter": unknown[0]},
                status=400,
            )
        ctx, slots = _whole(request, "ctx_size"), _whole(request, "parallel")
        hive = request.query_params.get("hive")
        try:  # a worker's bounds: what `keeper worker spawn` would accept
            spawn = WorkerSpawn(
                model=model, hive_id=hive or DEFAULT_HIVE, ctx_size=ctx, parallel=slots
            )
        except ValidationError as exc:
            problem = exc.errors()[0]
            name = str(problem["loc"][0]) if problem["loc"] else "model"
            name = "hive" if name == "hive_id" else name
            raise InvalidRequest(
                f"{name}: {problem['msg']}", detail={"parameter": name}, status=400
            ) from None
        plan = await placements.plan(
            model,
            ctx=spawn.ctx_size or CTX_DEFAULT,
            slots=spawn.parallel or SLOTS_DEFAULT,
            at=hive,
        )
        return JSONResponse(plan.to_dict(), headers={"cache-control": "no-store"})

    return [Route(PLACEMENTS_PATH, placements_route, methods=["GET"])]


def _whole(request: Request, name: str) -> int | None:
    """The query parameter `name` as a whole number (None when absent); 400 otherwise."""
    text = request.query_params.get(name)
    if text is None:
        return None
    if not text.isdigit():
        raise InvalidRequest(
            f"{name}={text!r} is not a whole number", detail={"parameter": name}, status=400
        )
    return int(text)
