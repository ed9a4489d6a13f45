"""The worker's end of a split's SSH links: this hive opens one link per peer on another
machine, hands the worker their local endpoints, and keeps them open for its life.

    async with links.running():                       # the hive's lifespan
        held = await links.open(op.rpc_links)         # RpcLinkError: one sentence
        worker = await supervisor.spawn(..., rpc_servers=[*held.endpoints])
        held.watch(worker, supervisor)                # or held.close() when it failed

Each link is an SSH local forward from this hive's 127.0.0.1:<free port> to the peer's
127.0.0.1:P, its RPC server for the split (hive/_rpc_link.py `open_link`), with this hive's
own link key, which the peer granted for P alone. The links live in tasks of their own
(not the spawn's job, which ends once the worker is ready): when the worker exits they
close; when one closes first (the peer's machine, sshd or network went away), the worker
is stopped with a narrated sentence naming the peer hive, since ggml would otherwise
wait on a dead socket or abort it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc

from hive._rpc_link import RpcLink, link_keypair, open_link
from hive.supervisor import Supervisor, Worker
from jobs import RpcLinkPeer
from narration_core import Narrator

PEER_REPORT_S = 3.0  # a split worker reports its lost peer and exits itself within ~2 s
NARRATE = Narrator("rbee-hive")


@dataclass
class HeldLinks:
    """The open links of one split worker; `endpoints` in the order of the peers asked."""

    links: list[RpcLink]
    peers: list[str]  # hive ids, as the queen named them
    _done: anyio.Event = field(default_factory=anyio.Event)
    _worker: anyio.Event = field(default_factory=anyio.Event)  # set once watch() was called
    worker: Worker | None = None
    supervisor: Supervisor | None = None

    @property
    def endpoints(self) -> list[str]:
        return [link.endpoint for link in self.links]

    def watch(self, worker: Worker, supervisor: Supervisor) -> None:
        """The links serve `worker`: they close when it exits, and it stops when one closes."""
        self.worker, self.supervisor = worker, supervisor
        self._worker.set()

    def close(self) -> None:
        """Close the links now (the worker did not start)."""
        self._done.set()


class Links:
    """This hive's open SSH links to its split workers' peers."""

    def __init__(self, home: Path, known_hosts: Path) -> None:
        self.home = home  # where the link key lives (link_keypair)
        self.known_hosts = known_hosts
        self._tg: anyio.abc.TaskGroup | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Links]:
        """Hold links while the block runs; leaving it closes every one."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield self
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    def public_key(self) -> str:
        """This hive's link public key (OpenSSH form), made on first use."""
        return link_keypair(self.home)[1]

    async def open(self, peers: Sequence[RpcLinkPeer]) -> HeldLinks:
        """Open a link to each of `peers`; raises RpcLinkError (one sentence naming the
        peer) when one cannot be opened, the others being closed again."""
        if self._tg is None:
            raise RuntimeError("the links are not running; enter `links.running()`")
        key_path, _ = await anyio.to_thread.run_sync(link_keypair, self.home)
        held: HeldLinks = await self._tg.start(self._hold, list(peers), key_path)
        return held

    async def _hold(
        self,
        peers: list[RpcLinkPeer],
        key_path: Path,
        *,
        task_status: anyio.abc.TaskStatus[HeldLinks] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async with contextlib.AsyncExitStack() as stack:
            links = []
            for peer in peers:
                NARRATE.action("rpc_link").target(peer.hive_id).human(
                    f"Opening an SSH link to peer hive {peer.hive_id} "
                    f"({peer.ssh_user}@{peer.ssh_host}:{peer.ssh_port}) for its RPC server"
                ).emit()
                link = await stack.enter_async_context(
                    open_link(
                        peer.ssh_host,
                        peer.ssh_port,
                        peer.ssh_user,
                        key_path,
                        self.known_hosts,
                        peer.remote_port,
                        peer=peer.hive_id,
                    )
                )
                NARRATE.action("rpc_link_ready").target(peer.hive_id).human(
                    f"Linked {link.endpoint} to peer hive {peer.hive_id}'s "
                    f"127.0.0.1:{peer.remote_port} over SSH"
                ).emit()
                links.append(link)
            held = HeldLinks(links, [p.hive_id for p in peers])
            task_status.started(held)
            closed: list[str] = []
            async with anyio.create_task_group() as tg:

                async def one(link: RpcLink) -> None:
                    closed.append(await link.wait_closed())
                    held.close()

                async def worker_gone() -> None:
                    await held._worker.wait()
                    assert held.worker is not None
                    await held.worker.exited.wait()
                    held.close()

                for link in links:
                    tg.start_soon(one, link)
                tg.start_soon(worker_gone)
                await held._done.wait()
                tg.cancel_scope.cancel()
            worker, supervisor = held.worker, held.supervisor
            if closed and worker is not None and supervisor is not None:
                await _stop_for(worker, supervisor, closed[0])


async def _stop_for(worker: Worker, supervisor: Supervisor, reason: str) -> None:
    """Stop `worker`, whose link `reason` says closed: its layers there are gone. It gets
    PEER_REPORT_S to notice first (worker/_rpc.py PeerWatch: it fails its jobs naming the
    peer and exits), so the caller reads that sentence rather than a cancellation."""
    with anyio.move_on_after(PEER_REPORT_S):
        await worker.exited.wait()
    if worker.exited.is_set():  # it said which endpoint; this says which peer that was
        NARRATE.action("rpc_link_lost").target(worker.id).human(
            f"Worker {worker.id} lost its peer: {reason}"
        ).level("error").emit()
        return
    NARRATE.action("rpc_link_lost").target(worker.id).human(
        f"Stopping worker {worker.id}: {reason}"
    ).level("error").emit()
    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        await supervisor.stop(worker.id)
