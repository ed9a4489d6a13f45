"""The plan for a model across hives: one hive when it fits, else a split by whole layers.

    plan = split_plan("big.gguf", shape, ctx=4096, slots=2, hives=[Lender("a", 6 << 30, …)])

A model's need is its weights (from the GGUF header, hive._model_shape, with the margin
queen._memory gives llama.cpp's buffers) plus its KV cache for context × slots, counted
per layer, since a split moves a layer's KV with its weights. One hive when the roomiest
lends enough; otherwise the fewest hives by lendable memory (largest first, ties by id),
layers split in proportion to what each lends. The worker runs on the roomiest hive that
can join a split and keeps the tensors outside the blocks (token embedding, output): a
cpu worker whose split leaves it a share keeps the first layers and the output in
llama.cpp (worker/engine.py), so the plan lists the worker's hive first, then the peers
in the order their RPC servers are given to the worker. A hive that cannot
join (no RPC in its llama.cpp, another RPC protocol than the worker's hive, nothing lent,
no memory reported) is left out and named. Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobs import InvalidRequest
from queen._memory import WEIGHTS_MARGIN

# A worker's own defaults when a request names none (worker.engine: CTX_SIZE_DEFAULT
# tokens per slot, PARALLEL_CPU slots): the plan is for the worker `keeper infer` starts.
CTX_DEFAULT = 4096
SLOTS_DEFAULT = 2
GIB = 1 << 30
MIB = 1 << 20
KIB = 1 << 10


@dataclass(frozen=True, slots=True)
class Shape:
    """What placement needs of a model: bytes per layer, bytes outside the layers, KV
    bytes per token of context (all layers), as a hive's `model_list` reports them."""

    layer_bytes: tuple[int, ...]
    other_bytes: int
    kv_bytes_per_token: int
    context_length: int | None = None  # the trained window: a worker's context stops there

    @classmethod
    def from_listing(cls, raw: Any) -> Shape | None:
        """The shape in a catalog entry's `shape` field, or None when it has none or it is
        not one (a hive older than this queen, an unreadable header)."""
        if not isinstance(raw, Mapping):
            return None
        layers = raw.get("layer_bytes")
        other, kv = raw.get("other_bytes"), raw.get("kv_bytes_per_token")
        if not isinstance(layers, list) or not layers or not _counts(layers, other, kv):
            return None
        trained = raw.get("context_length")
        trained = trained if type(trained) is int and trained > 0 else None
        return cls(tuple(layers), int(other or 0), int(kv or 0), trained)  # checked ints


def _counts(layers: list[Any], *others: Any) -> bool:
    return all(type(n) is int and n >= 0 for n in (*layers, *others))


@dataclass(frozen=True, slots=True)
class Lender:
    """A hive placement may use: what it lends (min of free memory and `--lend-memory`;
    None: it reported no memory), whether its llama.cpp speaks RPC, and which protocol."""

    hive_id: str
    lend_bytes: int | None
    supports_rpc: bool = False
    rpc_protocol: str | None = None


@dataclass(frozen=True, slots=True)
class Share:
    """One hive's part of a plan: layers first..last (inclusive; none when first > last)
    and the bytes they need; `output` marks the worker's hive, which holds the rest."""

    hive_id: str
    first: int
    last: int
    bytes: int
    output: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "hive": self.hive_id,
            "layers": [self.first, self.last],
            "bytes": self.bytes,
            "output": self.output,
        }


@dataclass(frozen=True, slots=True)
class LeftOut:
    """A hive that could not join the split, and why in a few words."""

    hive_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a model's layers go, in layer order: the worker's hive first (the first
    layers and the tensors outside them: a cpu worker keeps those, worker/engine.py),
    then each peer's RPC server in the worker's device order."""

    model: str
    need_bytes: int
    shares: tuple[Share, ...]
    left_out: tuple[LeftOut, ...] = ()

    @property
    def split(self) -> bool:
        return len(self.shares) > 1

    @property
    def worker_hive(self) -> str:
        return self.shares[0].hive_id

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `GET /v1/placements` and `--explain --json`."""
        return {
            "model": self.model,
            "need_bytes": self.need_bytes,
            "split": self.split,
            "worker_hive": self.worker_hive,
            "hives": [s.to_dict() for s in self.shares],
            "left_out": [{"hive": h.hive_id, "reason": h.reason} for h in self.left_out],
        }


def layer_costs(shape: Shape, *, ctx: int, slots: int) -> tuple[list[int], int]:
    """Bytes each layer needs (weights with the margin, plus its part of the KV cache for
    `ctx` tokens, never more than the trained window as the worker loads it, in each of
    `slots`), and the bytes outside the layers."""
    n = len(shape.layer_bytes)
    kv = shape.kv_bytes_per_token * min(ctx, shape.context_length or ctx) * slots
    costs = [
        int(size * WEIGHTS_MARGIN) + kv * (i + 1) // n - kv * i // n
        for i, size in enumerate(shape.layer_bytes)
    ]
    return costs, int(shape.other_bytes * WEIGHTS_MARGIN)


def worker_need(shape: Shape, *, ctx: int = CTX_DEFAULT, slots: int = SLOTS_DEFAULT) -> int:
    """Bytes one worker of a model of this shape needs whole: what placement compares
    with a hive's lendable memory, the same sum a split is planned against."""
    costs, other = layer_costs(shape, ctx=ctx, slots=slots)
    return sum(costs) + other


def split_plan(
    model: str,
    shape: Shape,
    *,
    ctx: int,
    slots: int,
    hives: Sequence[Lender],
    at: str | None = None,
) -> Plan:
    """The plan for `model` on `hives` (see the module's docstring); `at` names the hive
    the worker must run on (`--hive`): the model goes there whole when it fits (or when
    it reports no memory: nothing to compare), else that hive holds the split's worker.
    Raises InvalidRequest: 404 when `at` is not among `hives`, 503 when the hives that can
    join a split lend too little together."""
    costs, other = layer_costs(shape, ctx=ctx, slots=slots)
    need = sum(costs) + other
    whole = (Share(at or "", 0, len(costs) - 1, need, True),)
    if at is not None and at not in {h.hive_id for h in hives}:
        raise InvalidRequest(
            f"hive {at} is not among the hives the queen hears from; `keeper status` lists them",
            detail={"hive": at},
            status=404,
        )
    unknown = [LeftOut(h.hive_id, "reports no memory yet") for h in hives if h.lend_bytes is None]
    if at is not None and at in {h.hive_id for h in unknown}:
        return Plan(model, need, whole)
    ranked = sorted(
        (h for h in hives if h.lend_bytes is not None),
        key=lambda h: (h.hive_id != at, -(h.lend_bytes or 0), h.hive_id),
    )
    if ranked and (ranked[0].lend_bytes or 0) >= need:
        return Plan(model, need, (Share(ranked[0].hive_id, 0, len(costs) - 1, need, True),))
    can_host = [h for h in ranked[: 1 if at else None] if h.supports_rpc and h.lend_bytes]
    worker = can_host[0] if can_host else None
    left_out = list(unknown)
    joined: list[Lender] = []
    for hive in ranked:
        reason = _why_not(hive, worker)
        if reason is None and worker is not None:
            joined.append(hive)
        elif reason is not None:
            left_out.append(LeftOut(hive.hive_id, reason))
    for k in range(2, len(joined) + 1):
        chosen = joined[:k]
        if sum(h.lend_bytes or 0 for h in chosen) < need:
            continue
        shares = _assign(chosen, costs, other)
        if shares is not None:
            return Plan(model, need, shares, tuple(sorted(left_out, key=lambda h: h.hive_id)))
    left_out.sort(key=lambda h: h.hive_id)
    if worker is None:  # no split can happen: the first hive alone is all there is
        lent = ranked[0].lend_bytes or 0 if ranked else 0
    else:
        lent = sum(h.lend_bytes or 0 for h in joined)
    raise _short(
        model,
        need,
        lent,
        left_out,
        granular=worker is not None and lent >= need,
        layer=max(costs, default=0),
    )


def _why_not(hive: Lender, worker: Lender | None) -> str | None:
    """Why `hive` cannot join a split whose worker runs on `worker`, or None if it can."""
    if not hive.lend_bytes:
        return "lends no memory"
    if not hive.supports_rpc:
        return "its llama.cpp has no RPC"
    if worker is not None and hive.rpc_protocol != worker.rpc_protocol:
        return (
            f"speaks RPC protocol {hive.rpc_protocol}, not {worker.rpc_protocol} "
            f"as hive {worker.hive_id}"
        )
    return None


def _assign(chosen: Sequence[Lender], costs: Sequence[int], other: int) -> tuple[Share, ...] | None:
    """Whole layers for each of `chosen` (the worker's hive first, peers after), in
    proportion to what each lends once the worker's hive has set aside the tensors
    outside the layers; then single layers moved off any hive they overflow. None when no
    such split fits."""
    order = list(chosen)  # layer order: the worker's hive first, then the RPC peers
    caps = [h.lend_bytes or 0 for h in order]
    caps[0] -= other
    n = len(costs)
    if caps[0] < 0 or n < len(order):
        return None
    counts = _proportional(n, caps, [h.hive_id for h in order])
    for _ in range(n * len(order)):
        loads = _loads(counts, costs)
        over = [i for i, load in enumerate(loads) if load > caps[i]]
        if not over:
            break
        src = max(over, key=lambda i: loads[i] - caps[i])
        dst = max((i for i in range(len(order)) if i != src), key=lambda i: caps[i] - loads[i])
        if caps[dst] - loads[dst] < max(costs) or counts[src] <= 1:
            return None
        counts[src] -= 1
        counts[dst] += 1
    else:
        return None
    shares, first = [], 0
    for i, (hive, count) in enumerate(zip(order, counts, strict=True)):
        last = first + count - 1
        is_worker = i == 0
        size = sum(costs[first : last + 1]) + (other if is_worker else 0)
        shares.append(Share(hive.hive_id, first, last, size, is_worker))
        first = last + 1
    return tuple(shares)


def _proportional(n: int, caps: Sequence[int], ids: Sequence[str]) -> list[int]:
    """`n` layers in proportion to `caps`: floors, then the largest remainders (ties to
    the larger cap, then the id), at least one layer each."""
    total = sum(caps) or 1
    counts = [n * c // total for c in caps]
    by_remainder = sorted(
        range(len(caps)), key=lambda i: (-(n * caps[i] % total), -caps[i], ids[i])
    )
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i, count in enumerate(counts):
        if count == 0:
            counts[max(range(len(counts)), key=lambda j: counts[j])] -= 1
            counts[i] = 1
    return counts


def _loads(counts: Sequence[int], costs: Sequence[int]) -> list[int]:
    loads, first = [], 0
    for count in counts:
        loads.append(sum(costs[first : first + count]))
        first += count
    return loads


def _short(
    model: str,
    need: int,
    lent: int,
    left_out: Sequence[LeftOut],
    *,
    granular: bool,
    layer: int = 0,
) -> InvalidRequest:
    """The refusal: one sentence naming the model, its need, what the hives that can take
    part lend together and the shortfall (503: it may fit once hives lend more or another
    starts). `granular`: they lend enough, but not in pieces whole layers fit."""
    if granular:
        message = (
            f"{model} needs about {size_text(need)} of memory in whole layers of up to "
            f"{size_text(layer)} each, which do not fit into what the hives lend "
            f"({size_text(lent)} together, but each hive's part must hold whole layers); "
            "lend more with `keeper hive start NAME --lend-memory SIZE` or start another hive"
        )
    else:
        out = f" ({len(left_out)} left out: {_names(left_out)})" if left_out else ""
        message = (
            f"{model} needs about {size_text(need)} of memory and all hives that can take "
            f"part lend {size_text(lent)} together{out}, {size_text(need - lent)} short; lend "
            "more with `keeper hive start NAME --lend-memory SIZE` or start another hive"
        )
    return InvalidRequest(
        message,
        detail={
            "model": model,
            "need_bytes": need,
            "lend_bytes": lent,
            "short_bytes": max(need - lent, 0),
            "layer_bytes": layer,
            "left_out": [{"hive": h.hive_id, "reason": h.reason} for h in left_out],
        },
        status=503,
    )


def _names(left_out: Sequence[LeftOut]) -> str:
    return "; ".join(f"{h.hive_id}: {h.reason}" for h in sorted(left_out, key=lambda h: h.hive_id))


def size_text(size: int) -> str:
    """`1.5 GiB`, `300 MiB`, `512 KiB`: bytes as a person reads them."""
    if size >= GIB:
        return f"{size / GIB:.1f} GiB"
    if size >= MIB:
        return f"{size / MIB:,.0f} MiB"
    if size >= KIB:
        return f"{size / KIB:,.0f} KiB"
    return f"{size} bytes"
