"""Waiting on a child tree under the stop signals: the first stops it, a second kills it.

    with open_stop_signals() as stops:     # before the spawn
        proc = await capture.spawn(argv)
        code, stopped_by = await stops.wait(proc, on_stop=say_stopping)

Ctrl-C, SIGTERM (CI timeouts, systemd) and SIGHUP (a closed terminal) all mean "stop":
the first asks the tree to stop (SIGTERM, the capture's grace period, then SIGKILL); a
second one, while it is stopping, SIGKILLs the whole tree at once. Either way the keeper
returns only once the tree is gone, so nothing it started survives it.

A signal that was ignored when the keeper started stays ignored: a script's background
job starts with SIGINT ignored (the terminal's Ctrl-C is not for it) and `nohup` ignores
SIGHUP. SIGTERM still stops such a keeper.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio

from narration_core import STOP_SIGNALS  # each means "stop the tree"

if TYPE_CHECKING:
    from narration_core.capture import CapturedProcess


def live_stop_signals() -> list[signal.Signals]:
    """The stop signals this process acts on: those not ignored when it started."""
    return [sig for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN]


class StopSignals:
    """The stop signals, taken over for an `open_stop_signals()` block.

    Signals that arrive before `wait()` (while the child is being spawned) wait in the
    receiver's queue and are acted on as soon as `wait()` starts, so none cancels the
    spawn half-way (asyncio would then kill the child alone and wait on its pipes,
    which its orphaned children still hold).
    """

    def __init__(self, arrivals: AsyncIterator[signal.Signals]) -> None:
        self._arrivals = arrivals
        self.received: list[signal.Signals] = []

    async def wait(
        self, proc: CapturedProcess, *, on_stop: Callable[[signal.Signals], None]
    ) -> tuple[int, signal.Signals | None]:
        """Relay `proc` until it exits; returns its exit code and the signal that stopped it.

        `on_stop(sig)` is called on the first stop signal, before the tree is asked to
        stop; any later one SIGKILLs the tree.
        """
        async with anyio.create_task_group() as tg:

            async def watch(waiting: anyio.CancelScope) -> None:
                async for sig in self._arrivals:
                    self.received.append(sig)
                    if len(self.received) == 1:
                        on_stop(sig)
                        waiting.cancel()  # wait() stops the tree, shielded
                    else:
                        proc.kill()

            with anyio.CancelScope() as waiting:
                tg.start_soon(watch, waiting)
                await proc.wait()
            # Cancelled or not, wait() returns only once the tree is gone and reaped.
            code = await proc.wait()
            tg.cancel_scope.cancel()
        return code, self.received[0] if self.received else None


@contextmanager
def open_stop_signals() -> Iterator[StopSignals]:
    """Take SIGINT, SIGTERM and SIGHUP over for the block (those not ignored at start).

    Open it before spawning the child. The handlers in place before are restored
    afterwards (asyncio would otherwise leave SIGTERM and SIGHUP at their defaults).
    """
    signals = live_stop_signals()
    previous = {sig: signal.getsignal(sig) for sig in signals}
    try:
        with anyio.open_signal_receiver(*signals) as arrivals:
            yield StopSignals(arrivals)
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
