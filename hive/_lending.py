"""The hive's side of a split: lend memory to a model loaded by a worker on another hive.

    handlers = lending_handlers(servers)   # merged into the hive's router

`rpc_serve` starts one ggml RPC server for a split (hive/_rpc_server.py: on this hive's
127.0.0.1, a free port) and answers its endpoint; asked again for the same split, it
answers the same server while that runs. `rpc_stop` stops it once the split unloads. The
queen asks both; every step is narrated into the asking job. A server that exits on its
own is forgotten, so the next `rpc_serve` for that split starts a fresh one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from hive._rpc_server import RpcServer, RpcServers
from hive.capabilities import rpc_support
from jobs import InvalidRequest, RpcServe, RpcStop
from jobs.server import Handler, Job
from narration_core import Narrator

NARRATE = Narrator("rbee-hive")


def lending_handlers(servers: RpcServers) -> Mapping[str, Handler]:
    """`rpc_serve` and `rpc_stop` over this hive's RPC servers."""
    lent: dict[str, RpcServer] = {}  # split id -> its server here

    def running(split_id: str) -> RpcServer | None:
        server = lent.get(split_id)
        if server is not None and server.exited.is_set():
            del lent[split_id]
            return None
        return server

    async def rpc_serve(op: RpcServe, job: Job) -> dict[str, Any]:
        support = await anyio.to_thread.run_sync(rpc_support)
        if not support["supports_rpc"]:
            raise InvalidRequest(
                f"this hive cannot lend memory to a split: {support['rpc_reason']}",
                detail=support,
                status=409,
            )
        server = running(op.split_id)
        if server is None:
            NARRATE.action("rpc_serve").target(op.split_id).human(
                f"Lending this hive's memory to split {op.split_id}"
            ).emit()
            server = lent[op.split_id] = await servers.start()
        return {"split_id": op.split_id, "endpoint": server.endpoint, "pid": server.pid}

    async def rpc_stop(op: RpcStop, job: Job) -> dict[str, Any]:
        server = running(op.split_id)
        if server is None:
            raise InvalidRequest(
                f"this hive lends nothing to split {op.split_id}: nothing to stop",
                detail={"split_id": op.split_id},
                status=404,
            )
        await servers.stop(server)
        del lent[op.split_id]
        NARRATE.action("rpc_stop").target(op.split_id).human(
            f"Split {op.split_id} no longer uses this hive's memory"
        ).emit()
        return {"split_id": op.split_id, "stopped": True}

    return {"rpc_serve": rpc_serve, "rpc_stop": rpc_stop}
