"""Stopping a process tree: its process group plus descendants that left the group.

Shared by the async capture (a child it spawned) and the keeper (a detached daemon it
finds by pidfile): SIGTERM, a grace period, then SIGKILL. A captured child's whole tree
hears the SIGTERM at once; a daemon hears it first and stops its own children, and only
what it leaves behind is signalled by the keeper. psutil is imported when a tree is
stopped, not at import.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

STOP_GRACE_S = 5.0  # seconds between SIGTERM and SIGKILL when stopping a process tree
KILL_WAIT_S = 2.0  # seconds to wait for the tree to vanish after SIGKILL
POLL_S = 0.02  # seconds between checks that a stopping tree is gone


def tree_members(pid: int) -> list[psutil.Process]:
    """The process's descendants and its process group's members, wherever they moved.

    Scans the process table, which costs a few milliseconds: only done when stopping.
    Take the snapshot before signalling: once the leader dies its children are
    re-parented and psutil can no longer tell they were ours.
    """
    import psutil

    members: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):  # the leader is gone; its group may live on
        members.update((p.pid, p) for p in psutil.Process(pid).children(recursive=True))
    for proc in psutil.process_iter():
        if proc.pid == pid or proc.pid in members:
            continue
        with contextlib.suppress(OSError):  # exited during the scan
            if os.getpgid(proc.pid) == pid:
                members[proc.pid] = proc
    return list(members.values())


def any_alive(members: list[psutil.Process]) -> bool:
    import psutil

    for member in members:
        try:
            if member.is_running() and member.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:  # vanished between the two calls
            continue
    return False


def signal_tree(pid: int, members: list[psutil.Process], sig: signal.Signals) -> None:
    """Signal the process group led by `pid` and every member that left it."""
    import psutil

    # ESRCH: the group is empty (all exited); EPERM: its id was reused by someone else.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for member in members:
        try:
            # is_running() compares create times, so a reused pid is never signalled.
            if member.is_running() and os.getpgid(member.pid) != pid:
                member.send_signal(sig)
        except (psutil.Error, ProcessLookupError):  # exited meanwhile
            continue


@dataclass(frozen=True, slots=True)
class StopResult:
    """How a stop went: `killed` is True when SIGTERM was not enough."""

    pid: int
    killed: bool
    seconds: float


def stop_tree(leader: psutil.Process, *, grace: float = STOP_GRACE_S) -> StopResult:
    """Stop a daemon and its tree, blocking: SIGTERM, `grace` seconds, SIGKILL.

    For a process this one did not spawn (a daemon found by pidfile); a spawned child
    is stopped by the capture, which also reaps it. SIGTERM goes to the daemon's own
    process group first: the processes that left it (a hive's workers, in their own
    sessions) are the daemon's to stop, and a second SIGTERM from here would cut their
    graceful stop short. Whatever the daemon leaves behind when it exits gets SIGTERM
    then, and everything still running when `grace` ends gets SIGKILL.
    """
    start = time.monotonic()
    deadline = start + grace
    family = [leader, *tree_members(leader.pid)]
    signal_tree(leader.pid, [leader], signal.SIGTERM)
    if wait_gone([leader], timeout=grace) and any_alive(family):
        signal_tree(leader.pid, family, signal.SIGTERM)  # left behind by the daemon
    killed = not wait_gone(family, timeout=max(0.0, deadline - time.monotonic()))
    if killed:
        signal_tree(leader.pid, family, signal.SIGKILL)
        wait_gone(family, timeout=KILL_WAIT_S)
    # If the leader is our own child after all, reap it: no zombie left behind.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(leader.pid, os.WNOHANG)
    return StopResult(pid=leader.pid, killed=killed, seconds=time.monotonic() - start)


def wait_gone(members: list[psutil.Process], *, timeout: float) -> bool:
    """Block until every member has exited (a zombie counts as exited); False on timeout.

    Not `psutil.wait_procs`: for a process that is not our child that waits until the
    zombie is reaped, which a container's init may do only seconds later. Each member
    is waited on through a pidfd where the system has them (Linux 5.3+: readable the
    moment the process exits, our child or not), so a stop returns as soon as the tree
    is gone; elsewhere the members are polled every POLL_S.
    """
    deadline = time.monotonic() + timeout
    return all(_wait_exit(member, deadline) for member in members)


def _wait_exit(member: psutil.Process, deadline: float) -> bool:
    """Block until `member` has exited or `deadline` (monotonic) passes; True if it exited."""
    try:
        pidfd = os.pidfd_open(member.pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):  # no pidfds here (not Linux, or an old kernel)
        return _poll_exit(member, deadline)
    try:
        # Opened after the pid was looked up: if it was reused meanwhile, the pidfd is
        # another process's, and our member is already gone.
        if not any_alive([member]):
            return True
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0.0, deadline - time.monotonic()) * 1000))
    finally:
        os.close(pidfd)


def _poll_exit(member: psutil.Process, deadline: float) -> bool:
    while any_alive([member]):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True
