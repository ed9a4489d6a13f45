"""The hive's side of a split: lend memory to a model loaded by a worker on another hive.

    handlers = lending_handlers(servers)   # merged into the hive's router

`rpc_serve` starts one ggml RPC server for a split (hive/_rpc_server.py: on this hive's
127.0.0.1, a free port) and answers its endpoint; asked again for the same split, it
answers the same server while that runs. `rpc_stop` stops it once the split unloads. The
queen asks both; every step is narrated into the asking job. A server that exits on its
own is forgotten, so the next `rpc_serve` for that split starts a fresh one.

For a split whose worker runs on another machine, `rpc_serve` carries that hive's link
key (`grant_key`): this hive grants it, in the authorized_keys its sshd reads, one SSH
forward to the server's port (hive/_rpc_link.py), labelled `<hive id>@<split id>`;
`rpc_stop` revokes it, and a hive starting revokes what an earlier run of it left.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from hive._rpc_link import RpcLinkError, authorized_line, grant, revoke, revoke_prefixed
from hive._rpc_server import RpcServer, RpcServers
from hive.capabilities import rpc_support
from jobs import InvalidRequest, RpcServe, RpcStop
from jobs.server import Handler, Job
from narration_core import Narrator

NARRATE = Narrator("rbee-hive")


def grant_label(hive_id: str, split_id: str) -> str:
    """The authorized_keys label of this hive's grant for `split_id` (ids have no `@`)."""
    return f"{hive_id}@{split_id}"


def revoke_leftovers(hive_id: str, authorized_keys: Path) -> None:
    """Remove the grants an earlier run of this hive left (killed before `rpc_stop`): their
    RPC servers died with it, so nothing may forward to their ports any more."""
    try:
        count = revoke_prefixed(authorized_keys, f"{hive_id}@")
    except RpcLinkError as exc:
        NARRATE.action("rpc_link_revoke").human(str(exc)).level("warn").emit()
        return
    if count:
        NARRATE.action("rpc_link_revoke").human(
            f"Revoked {count} SSH link grant{'s' * (count != 1)} an earlier run of this hive "
            f"left in {authorized_keys}"
        ).emit()


def lending_handlers(
    servers: RpcServers, *, hive_id: str = "localhost", authorized_keys: Path | None = None
) -> Mapping[str, Handler]:
    """`rpc_serve` and `rpc_stop` over this hive's RPC servers; with `authorized_keys`
    (the file this machine's sshd reads for the hive's user), a split's peer on another
    machine is granted an SSH forward to its server (docs/splitting.md)."""
    lent: dict[str, RpcServer] = {}  # split id -> its server here
    granted: set[str] = set()  # split ids whose server's port a link key may reach

    def running(split_id: str) -> RpcServer | None:
        server = lent.get(split_id)
        if server is not None and server.exited.is_set():
            del lent[split_id]
            return None
        return server

    async def revoke_grant(split_id: str) -> None:
        if split_id not in granted or authorized_keys is None:
            return
        granted.discard(split_id)
        label = grant_label(hive_id, split_id)
        await anyio.to_thread.run_sync(revoke, authorized_keys, label)
        NARRATE.action("rpc_link_revoke").target(split_id).human(
            f"Revoked the SSH link grant of split {split_id} in {authorized_keys}"
        ).emit()

    async def rpc_serve(op: RpcServe, job: Job) -> dict[str, Any]:
        support = await anyio.to_thread.run_sync(rpc_support)
        if not support["supports_rpc"]:
            raise InvalidRequest(
                f"this hive cannot lend memory to a split: {support['rpc_reason']}",
                detail=support,
                status=409,
            )
        if op.grant_key is not None:
            if authorized_keys is None:
                raise InvalidRequest(
                    "this hive grants no SSH links (no authorized_keys configured); lend "
                    "memory to splits on this machine only",
                    detail={"field": "grant_key"},
                    status=400,
                )
            try:
                authorized_line(op.grant_key, 1, grant_label(hive_id, op.split_id))
            except ValueError as exc:
                raise InvalidRequest(
                    f"grant_key is not a link key this hive can grant ({exc})",
                    detail={"field": "grant_key"},
                    status=400,
                ) from None
        server = running(op.split_id)
        if server is None:
            await revoke_grant(op.split_id)  # a dead server's port: granted no more
            NARRATE.action("rpc_serve").target(op.split_id).human(
                f"Lending this hive's memory to split {op.split_id}"
            ).emit()
            server = lent[op.split_id] = await servers.start()
        result: dict[str, Any] = {
            "split_id": op.split_id,
            "endpoint": server.endpoint,
            "pid": server.pid,
        }
        if op.grant_key is not None:
            assert authorized_keys is not None
            port = int(server.endpoint.rpartition(":")[2])
            label = grant_label(hive_id, op.split_id)
            try:
                await anyio.to_thread.run_sync(grant, authorized_keys, op.grant_key, port, label)
            except RpcLinkError:
                await servers.stop(server)
                del lent[op.split_id]
                raise
            granted.add(op.split_id)
            NARRATE.action("rpc_link_grant").target(op.split_id).human(
                f"Granted an SSH forward to 127.0.0.1:{port} (and nothing else) for split "
                f"{op.split_id} in {authorized_keys}"
            ).emit()
            result["ssh_user"] = getpass.getuser()
        return result

    async def rpc_stop(op: RpcStop, job: Job) -> dict[str, Any]:
        server = running(op.split_id)
        await revoke_grant(op.split_id)
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
