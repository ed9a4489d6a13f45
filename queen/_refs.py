"""Model refs and catalog ids: `builtin:tiny` is the model a worker reports as `tiny`.

A request names a model by ref (`builtin:tiny`, `hf:…`, a path) or by catalog id; workers
report catalog ids. The queen learns which id a ref is on each hive from that hive's
`model_list`, asking every hive that runs workers when it must (not only a hive it asked
before), and forgets an answer the hive later refuses (the model was deleted).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
from pydantic import BaseModel

from jobs import JobError, ModelList, UpstreamFailed, WorkerInfo, WorkerList
from jobs.client import JobClient, tls_for
from queen._split_plan import Shape, worker_need
from queen.errors import QueenError
from queen.hives import Hive, HiveRegistry

ASK_TIMEOUT_S = 5.0  # a hive's model_list or worker_list; one that does not answer has none
MISSING_FOR_S = 5.0  # a hive said it lacks a ref: not asked again for this long


class ModelRefs:
    """(hive, ref) -> catalog id, as the hives said; event-loop only, no lock."""

    def __init__(self, hives: HiveRegistry) -> None:
        self.hives = hives
        self._ids: dict[tuple[str, str], str] = {}
        self._missing: dict[tuple[str, str], float] = {}  # -> monotonic time it was asked
        self._sizes: dict[str, int] = {}  # ref or catalog id -> its file's size in bytes
        # ref or catalog id -> bytes a worker of it needs, from its GGUF header's shape
        self._needs: dict[str, int] = {}

    def cached(self, hive_id: str, ref: str) -> str | None:
        """The catalog id `ref` is on `hive_id`, if the queen has learned it."""
        return self._ids.get((hive_id, ref))

    def remember(self, hive_id: str, ref: str, model_id: str) -> None:
        self._ids[(hive_id, ref)] = model_id
        self._missing.pop((hive_id, ref), None)

    def forget(self, hive_id: str, ref: str | None = None) -> None:
        """Drop what the queen learned of `ref` (a ref or a catalog id) on `hive_id`, every
        ref naming the same id too, or everything about the hive when `ref` is None: the
        hive refused it, or the model was deleted there."""
        model_id = self._ids.get((hive_id, ref)) if ref is not None else None
        for key, value in list(self._ids.items()):
            if key[0] == hive_id and (ref is None or key[1] == ref or value in (ref, model_id)):
                del self._ids[key]
        for key in [k for k in self._missing if k[0] == hive_id]:
            del self._missing[key]

    def serves(self, hive_id: str, model: str, ref: str) -> bool:
        """True when a worker on `hive_id` running catalog id `model` serves `ref`."""
        return model == ref or model == self._ids.get((hive_id, ref))

    def size_of(self, ref: str) -> int | None:
        """The model file's size in bytes, as a catalog that has it said (any hive)."""
        return self._sizes.get(ref)

    def need_of(self, ref: str) -> int | None:
        """Bytes a worker of `ref` needs with the worker's default context and slots, from
        the GGUF header a catalog that has it read (queen._split_plan.worker_need); None
        when no catalog reported its shape."""
        return self._needs.get(ref)

    def refs_of(self, model_ids: set[str]) -> set[str]:
        """Every ref the queen has seen name one of `model_ids`."""
        return {ref for (_, ref), model_id in self._ids.items() if model_id in model_ids}

    async def resolve(self, client: JobClient, hive_id: str, ref: str) -> str | None:
        """The hive's catalog id for `ref` when it has the model available, else None."""
        known = self._ids.get((hive_id, ref))
        if known is not None:
            return known
        models = await list_models(client, hive_id)
        for entry in models:
            if isinstance(entry.get("size"), int) and entry.get("status") == "available":
                shape = Shape.from_listing(entry.get("shape"))
                for name in (entry.get("id"), entry.get("source")):
                    if name:
                        self._sizes[str(name)] = entry["size"]
                        if shape is not None:
                            self._needs[str(name)] = worker_need(shape)
        found = match(models, ref)
        if found is None:
            self._missing[(hive_id, ref)] = time.monotonic()
        else:
            self.remember(hive_id, ref, found)
        return found

    async def learn(self, ref: str, hive_ids: set[str]) -> None:
        """Ask each of `hive_ids` the queen has no answer for (recently) what `ref` is
        there, at once; a hive that does not answer in ASK_TIMEOUT_S is left unknown."""
        now = time.monotonic()
        ask = [
            hive
            for hive in self.hives.all()
            if hive.id in hive_ids
            and (hive.id, ref) not in self._ids
            and now - self._missing.get((hive.id, ref), -MISSING_FOR_S) >= MISSING_FOR_S
        ]

        async def one(hive: Hive) -> None:
            with anyio.move_on_after(ASK_TIMEOUT_S):
                try:
                    async with JobClient(hive.url, token=self.hives.token_for(hive.id)) as client:
                        await self.resolve(client, hive.id, ref)
                except JobError:
                    pass  # unreachable or refusing: its workers are not this ref's, for now

        async with anyio.create_task_group() as tg:
            for hive in ask:
                tg.start_soon(one, hive)


def match(models: list[dict[str, Any]], ref: str) -> str | None:
    """The id of the available catalog entry `ref` names (by id or source), or None."""
    for entry in models:
        if ref in (entry.get("id"), entry.get("source")) and entry.get("status") == "available":
            return str(entry["id"])
    return None


async def list_models(client: JobClient, hive_id: str) -> list[dict[str, Any]]:
    """The hive's catalog entries, from a `model_list` job read quietly (not relayed)."""
    result = await quietly(client, ModelList(hive_id=hive_id))
    return list(result.get("models", []))


async def list_workers(client: JobClient, hive_id: str) -> list[WorkerInfo]:
    """The hive's workers, from a `worker_list` job read quietly (not relayed)."""
    result = await quietly(client, WorkerList(hive_id=hive_id))
    return [
        WorkerInfo.model_validate({k: v for k, v in w.items() if k != "log"})
        for w in result.get("workers", [])
    ]


async def catalog_names(hives: HiveRegistry) -> set[str]:
    """Every model id and ref in the fresh hives' catalogs (hives that fail, and this
    machine's default hive until it has beaten, are skipped)."""
    names: set[str] = set()
    for hive in hives.all():
        if hive.is_stale():
            continue
        try:  # a hive known only by default gets no call before its first beat
            hive = await hives.reachable(hive.id, wait_s=0)
        except QueenError:
            continue
        try:
            async with JobClient(hive.url, token=hives.token_for(hive.id)) as client:
                models = await list_models(client, hive.id)
        except JobError:
            continue
        for entry in models:
            if entry.get("status") == "available":
                names.update(str(entry[k]) for k in ("id", "source") if entry.get(k))
    return names


async def quietly(client: JobClient, operation: BaseModel) -> dict[str, Any]:
    """Run `operation` on the hive and return its result, its narration not relayed;
    raises UpstreamFailed when the hive's job did not complete."""
    job_id = await client.submit(operation)
    final: dict[str, Any] = {}
    async for event in client.stream(job_id):
        if event.is_final:
            final = event.data
    if final.get("state") != "completed":
        reason = final.get("error") or f"ended {final.get('state', 'without a final state')}"
        raise UpstreamFailed(f"hive at {client.base_url}", job_id, str(reason))
    return dict(final.get("result") or {})


CAPABILITIES_PATH = "/v1/capabilities"  # on a hive


async def hive_capabilities(url: str, token: str) -> dict[str, Any]:
    """The hive's `/v1/capabilities` (its devices, RPC build and link key), or {} when it
    does not answer it."""
    try:
        async with httpx.AsyncClient(
            timeout=ASK_TIMEOUT_S, trust_env=False, verify=tls_for(url)
        ) as client:
            response = await client.get(
                url + CAPABILITIES_PATH, headers={"authorization": f"Bearer {token}"}
            )
            found = response.json() if response.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
