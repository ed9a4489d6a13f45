"""Splits: a model no hive can hold alone, loaded by one worker across several hives.

    peers = await splits.lend(plan, job)       # each peer hive starts an RPC server
    ... spawn the worker on plan.worker_hive with `peers` (queen._provision) ...
    splits.started(split_id, hive, worker_id)  # its RPC servers stop when it is gone

The plan (queen._split_plan, through queen._placements_route.Placements) names the hives
and the layers each holds: the worker's hive first, then the peers. Each peer is asked
`rpc_serve` (hive/_lending.py: a ggml RPC server on its 127.0.0.1), the worker is started
with those endpoints and each one's share of the layers, and once that worker is gone
(stopped, idle-unloaded, died) the peers are asked `rpc_stop`. Every step is narrated into
the job that asked.

An RPC server listens on its hive's loopback only, so a peer must be reachable on the
worker's loopback: hives on the queen's own machine. A split whose peers run on other
machines needs SSH links between the hives (hive/_rpc_link.py, docs/splitting.md) that
the queen does not set up yet; it is refused in one sentence rather than opened on the
network.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio

from jobs import BEAT_INTERVAL_S, InvalidRequest, RpcPeer, RpcServe, RpcStop
from jobs.client import JobClient
from jobs.relay import submit_and_forward
from jobs.server import Job
from narration_core import Narrator
from queen._refs import quietly
from queen._split_plan import Plan, size_text
from queen.hives import HiveRegistry

NARRATE = Narrator("queen-rbee")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
RELEASE_TIMEOUT_S = 10.0  # one peer's rpc_stop; a peer that is gone has nothing to stop


@dataclass(frozen=True, slots=True)
class Lent:
    """What a split's worker is started with: the peers' RPC servers as it reaches them,
    each with its share of the layers, and the share its own hive keeps."""

    split_id: str
    peers: tuple[str, ...]  # hive ids, in device order
    servers: tuple[RpcPeer, ...]
    local_share: float


class Splits:
    """The splits this queen started; event-loop only, no lock."""

    def __init__(self, hives: HiveRegistry) -> None:
        self.hives = hives
        self._live: dict[str, tuple[str, str, tuple[str, ...]]] = {}  # split -> hive, worker, peers

    async def lend(self, plan: Plan, job: Job | None) -> Lent:
        """Ask each peer of `plan` for an RPC server; raises InvalidRequest (503) for peers
        off this machine, the peer's failure otherwise (servers already started are
        stopped again)."""
        worker = plan.shares[0]
        peers = plan.shares[1:]
        hives = {h.id: h for h in self.hives.all()}
        remote = [s.hive_id for s in (worker, *peers) if not _on_this_machine(hives[s.hive_id].url)]
        if remote:
            raise InvalidRequest(
                f"{plan.model} needs {size_text(plan.need_bytes)}, more than any one hive lends, "
                f"and a split across hives on other machines ({', '.join(remote)}) needs SSH "
                "links between them that this queen does not set up yet; lend more memory on "
                "one hive or run the split's hives on the queen's machine (docs/splitting.md)",
                detail={"model": plan.model, "hives": remote, "plan": plan.to_dict()},
                status=503,
            )
        split_id = f"split-{secrets.token_hex(4)}"
        said = "; ".join(
            f"hive {s.hive_id} layers {s.first}-{s.last} ({size_text(s.bytes)})"
            for s in plan.shares
        )
        NARRATE.action("split").target(split_id).human(
            f"{plan.model} needs {size_text(plan.need_bytes)}, more than any one hive lends; "
            f"splitting it by layers as {split_id}: {said}"
        ).emit()
        servers: list[RpcPeer] = []
        lent: list[str] = []
        try:
            for share in peers:
                result = await self._ask(
                    share.hive_id, RpcServe(hive_id=share.hive_id, split_id=split_id), job
                )
                lent.append(share.hive_id)
                servers.append(
                    RpcPeer(endpoint=str(result["endpoint"]), share=share.last - share.first + 1)
                )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._release(split_id, lent)
            raise
        # A cpu worker keeps its share of layers and the output (worker/engine.py: +1).
        return Lent(split_id, tuple(lent), tuple(servers), worker.last - worker.first + 2)

    def started(self, lent: Lent, hive_id: str, worker_id: str) -> None:
        """The split's worker runs: its peers' servers stop once it is gone."""
        self._live[lent.split_id] = (hive_id, worker_id, lent.peers)

    async def failed(self, lent: Lent) -> None:
        """The split's worker did not start: its peers' servers stop now."""
        await self._release(lent.split_id, list(lent.peers))

    async def run(self, alive: Callable[[str, str], bool]) -> None:
        """Every beat interval, stop the RPC servers of splits whose worker is gone
        (`alive(hive, worker)` False); runs until cancelled (the queen's lifespan)."""
        while True:
            await anyio.sleep(BEAT_INTERVAL_S)
            for split_id, (hive_id, worker_id, peers) in list(self._live.items()):
                if not alive(hive_id, worker_id):
                    del self._live[split_id]
                    NARRATE.action("split_end").target(split_id).human(
                        f"Worker {worker_id} of {split_id} is gone; its hives stop lending"
                    ).emit()
                    await self._release(split_id, list(peers))

    async def _ask(self, hive_id: str, operation: RpcServe, job: Job | None) -> dict[str, object]:
        hive = await self.hives.reachable(hive_id)
        async with JobClient(hive.url, token=self.hives.token_for(hive_id)) as client:
            if job is None:
                return await quietly(client, operation)
            result = await submit_and_forward(client, operation, into=job, hop=f"hive:{hive_id}")
            return dict(result)

    async def _release(self, split_id: str, peers: list[str]) -> None:
        """Ask each of `peers` to stop its server for `split_id`; one that cannot (gone,
        restarted) has nothing left to stop."""
        for hive_id in peers:
            with anyio.move_on_after(RELEASE_TIMEOUT_S):
                try:
                    hive = self.hives.get(hive_id)
                    async with JobClient(hive.url, token=self.hives.token_for(hive_id)) as client:
                        await quietly(client, RpcStop(hive_id=hive_id, split_id=split_id))
                except Exception:
                    pass


def _on_this_machine(url: str) -> bool:
    return urlsplit(url).hostname in LOCAL_HOSTS
