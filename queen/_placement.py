"""Placement: which worker takes a request, and which hive starts a worker when none can.

Pure functions over what the queen knows (no I/O), so the rules read in one place and are
tested without processes:
- a worker: the one the request names, else one serving the model, fresh hives before
  stale ones, ready before loading, the fewest of this queen's requests in flight first;
- a hive to start a worker on: the one the request names, else the only fresh hive (or the
  only hive at all: a late beat does not make a hive gone; a dead one fails the call); a
  hive from the config that never beat counts only while none has beaten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from jobs import InvalidRequest
from queen._workers import Pick
from queen.hives import Hive


def rank(pick: Pick, *, stale: set[str], in_flight: int) -> tuple[bool, bool, int, bool]:
    """The sort key of a worker for a request: the lowest is offered first."""
    state = pick.worker.state
    return (pick.hive_id in stale, state not in ("ready", "busy"), in_flight, state != "ready")


def best(
    picks: Iterable[Pick], *, stale: set[str], in_flight: Callable[[Pick], int]
) -> Pick | None:
    """The worker among `picks` to offer a request first, or None when there is none."""
    return min(picks, key=lambda p: rank(p, stale=stale, in_flight=in_flight(p)), default=None)


def named(picks: Sequence[Pick], worker_id: str) -> Pick:
    """The worker called `worker_id` among `picks`; raises InvalidRequest (404) naming the
    workers the queen knows when there is none."""
    for pick in picks:
        if pick.worker.worker_id == worker_id:
            return pick
    known = sorted(p.worker.worker_id for p in picks)
    raise InvalidRequest(  # 404: the body is valid, the worker it names is not there
        f"no live worker {worker_id!r} is known to the queen "
        f"(known: {', '.join(known) or 'none'}); `keeper worker list` shows a hive's workers",
        detail={"worker_id": worker_id, "known": known},
        status=404,
    )


def candidates(hives: Sequence[Hive]) -> list[Hive]:
    """The hives a worker may be started on when the request names none: the fresh ones
    that have beaten, else the fresh ones (a hive from the config that never beat: its
    URL is a guess, and a queen just started has heard from nobody yet), else all."""
    fresh = [h for h in hives if not h.is_stale()]
    return [h for h in fresh if h.beats] or fresh or list(hives)


def hive_to_start_on(hives: Sequence[Hive], model: str) -> Hive:
    """The hive to start a worker for `model` on when the request names none: the only
    candidate (or the only hive at all); raises InvalidRequest when none or several could."""
    fresh = [h for h in candidates(hives) if not h.is_stale()]
    if len(fresh) == 1:
        return fresh[0]
    if not fresh and len(hives) == 1:
        return hives[0]
    if not fresh:
        raise InvalidRequest(  # 503: the request is fine, the queen cannot serve it yet
            f"no worker has {model} loaded and no hive is running to start one; "
            "start a hive with `keeper hive start`",
            status=503,
        )
    names = ", ".join(h.id for h in fresh)
    raise InvalidRequest(
        f"no worker has {model} loaded and several hives could start one ({names}); "
        "name one with --hive",
        status=400,
    )
