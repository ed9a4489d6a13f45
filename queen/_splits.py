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

An RPC server listens on its hive's loopback only. A peer on the worker's machine (same
URL host, or both on loopback) is given to the worker as that endpoint (`rpc_servers`).
A peer on another machine is reached through an SSH link the worker's hive opens
(`rpc_links`, hive/_links.py): the queen reads the worker's hive's link key from its
`/v1/capabilities` (`rpc_link_key`), asks the peer `rpc_serve` with it (`grant_key`: the
peer grants that key a forward to its server's port and nothing else, and answers the
user to log in as), and tells the worker's hive where the peer's sshd is: the hives
config's `link_host` (else the host of the peer's URL, else its `host`) and `link_port`
(else its `port`, else 22). `rpc_stop` revokes the grant.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio

from jobs import (
    BEAT_INTERVAL_S,
    HIVES_CONFIG,
    InvalidRequest,
    RbeePaths,
    RpcLinkPeer,
    RpcPeer,
    RpcServe,
    RpcStop,
)
from jobs.client import JobClient
from jobs.relay import submit_and_forward
from jobs.server import Job
from narration_core import Narrator
from queen._refs import hive_capabilities, quietly
from queen._split_plan import Plan, size_text
from queen.hives import HiveRegistry
from queen.settings import LinkHost, read_link_hosts

NARRATE = Narrator("queen-rbee")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SSH_PORT = 22
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:-]{0,252}")  # as jobs' RpcLinkPeer.ssh_host
RELEASE_TIMEOUT_S = 10.0  # one peer's rpc_stop; a peer that is gone has nothing to stop


@dataclass(frozen=True, slots=True)
class Lent:
    """What a split's worker is started with: the peers' RPC servers as it reaches them,
    each with its share of the layers, and the share its own hive keeps."""

    split_id: str
    peers: tuple[str, ...]  # hive ids, in device order
    servers: tuple[RpcPeer, ...]  # peers on the worker's machine
    local_share: float
    links: tuple[RpcLinkPeer, ...] = ()  # peers on other machines, over SSH


class Splits:
    """The splits this queen started; event-loop only, no lock."""

    def __init__(self, hives: HiveRegistry, *, config: Path | None = None) -> None:
        self.hives = hives
        # The hives config, read for each split across machines (their sshd's address).
        self.config = config or RbeePaths.resolve().config / HIVES_CONFIG
        self._live: dict[str, tuple[str, str, tuple[str, ...]]] = {}  # split -> hive, worker, peers

    async def lend(self, plan: Plan, job: Job | None) -> Lent:
        """Ask each peer of `plan` for an RPC server (and an SSH grant, for a peer off the
        worker's machine); raises InvalidRequest (503) when a link cannot be planned, the
        peer's failure otherwise (servers already started are stopped again)."""
        worker = plan.shares[0]
        peers = plan.shares[1:]
        home = self.hives.get(worker.hive_id).url
        far = {s.hive_id for s in peers if not _same_machine(home, self.hives.get(s.hive_id).url)}
        ssh: dict[str, tuple[str, int]] = {}
        key = None
        if far:
            ssh = await self._ssh_hosts(plan, sorted(far))
            key = await self._link_key(plan, worker.hive_id)
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
        links: list[RpcLinkPeer] = []
        lent: list[str] = []
        try:
            for share in peers:
                layers = share.last - share.first + 1
                ask = RpcServe(
                    hive_id=share.hive_id,
                    split_id=split_id,
                    grant_key=key if share.hive_id in far else None,
                )
                result = await self._ask(share.hive_id, ask, job)
                lent.append(share.hive_id)
                endpoint = str(result["endpoint"])
                if share.hive_id not in far:
                    servers.append(RpcPeer(endpoint=endpoint, share=layers, hive_id=share.hive_id))
                    continue
                host, port = ssh[share.hive_id]
                link = RpcLinkPeer(
                    hive_id=share.hive_id,
                    ssh_host=host,
                    ssh_port=port,
                    ssh_user=str(result["ssh_user"]),
                    remote_port=int(endpoint.rpartition(":")[2]),
                    share=layers,
                )
                links.append(link)
                NARRATE.action("rpc_link_plan").target(split_id).human(
                    f"Hive {worker.hive_id} reaches hive {share.hive_id}'s RPC server over "
                    f"SSH ({link.ssh_user}@{host}:{port}, forward to its {endpoint} only)"
                ).emit()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._release(split_id, lent)
            raise
        # A cpu worker keeps its share of layers and the output (worker/engine.py: +1).
        return Lent(
            split_id,
            tuple(lent),
            tuple(servers),
            worker.last - worker.first + 2,
            tuple(links),
        )

    async def _ssh_hosts(self, plan: Plan, far: list[str]) -> dict[str, tuple[str, int]]:
        """Where the worker's hive reaches each of `far`'s sshd: the hives config's
        `link_host`, else the host of the hive's URL (unless loopback), else its `host`;
        `link_port`, else `port`, else 22. Refuses (503) a peer none of these names."""
        hosts = await anyio.to_thread.run_sync(read_link_hosts, self.config)
        found: dict[str, tuple[str, int]] = {}
        for hive_id in far:
            entry = hosts.get(hive_id, LinkHost())
            url_host = urlsplit(self.hives.get(hive_id).url).hostname
            if url_host in LOCAL_HOSTS:
                url_host = None
            host = entry.link_host or url_host or entry.host
            if not host:
                raise InvalidRequest(
                    f"{plan.model} must be split across machines, and this queen does not "
                    f"know where the other hives reach hive {hive_id}'s sshd (its URL is on "
                    f"loopback); set link_host (and link_port) under [hives.{hive_id}] in "
                    f"{self.config}",
                    detail={"model": plan.model, "hive_id": hive_id, "plan": plan.to_dict()},
                    status=503,
                )
            if not HOST.fullmatch(host):
                raise InvalidRequest(
                    f"{plan.model} must be split across machines, and {host!r}, where the "
                    f"hives config {self.config} says hive {hive_id}'s sshd is, is not a host "
                    f"name or address; set link_host under [hives.{hive_id}] to one",
                    detail={"model": plan.model, "hive_id": hive_id, "host": host},
                    status=503,
                )
            found[hive_id] = (host, entry.port or SSH_PORT)
        return found

    async def _link_key(self, plan: Plan, hive_id: str) -> str:
        """The worker's hive's RPC link key (its `/v1/capabilities`); refuses (503) a hive
        that reports none (an older rbee-hive)."""
        hive = await self.hives.reachable(hive_id)
        found = await hive_capabilities(hive.url, self.hives.token_for(hive_id))
        key = found.get("rpc_link_key")
        if not isinstance(key, str) or not key:
            raise InvalidRequest(
                f"{plan.model} must be split across machines, and hive {hive_id}, which "
                "would run its worker, reports no SSH link key (rpc_link_key in "
                "/v1/capabilities); update rbee-hive there",
                detail={"model": plan.model, "hive_id": hive_id, "plan": plan.to_dict()},
                status=503,
            )
        return key

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


def _same_machine(url: str, other: str) -> bool:
    """Two hives on one machine: their URLs name the same host, or both loopback."""
    host, other_host = urlsplit(url).hostname, urlsplit(other).hostname
    return host == other_host or (host in LOCAL_HOSTS and other_host in LOCAL_HOSTS)
