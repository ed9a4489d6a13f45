"""The plan for a model across hives, without processes: a table of synthetic clusters.

Every model here has 8 layers of 10 MiB and 10 MiB outside them: with the 1.1 margin a
layer costs 11 MiB and the model 99 MiB, so a row's figures can be checked by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from jobs import InvalidRequest
from queen._memory import lendable
from queen._split_plan import Lender, Plan, Shape, layer_costs, split_plan

MIB = 1 << 20
LAYERS = 8
SHAPE = Shape(tuple([10 * MIB] * LAYERS), 10 * MIB, 0)
NEED = 99 * MIB


@dataclass(frozen=True)
class H:
    """A hive of a row: MiB free, MiB lent (None: no --lend-memory), RPC and protocol."""

    id: str
    free: int | None
    lend: int | None = None
    rpc: bool = True
    proto: str = "3.0.0"

    def lender(self) -> Lender:
        free = None if self.free is None else self.free * MIB
        lend = None if self.lend is None else self.lend * MIB
        return Lender(self.id, lendable(free, lend), self.rpc, self.proto)


Layers = list[tuple[str, int, int]]  # (hive, first, last) in layer order, the worker first
OUT: dict[str, str] = {}

ROWS: list[tuple[str, list[H], Layers, dict[str, str]]] = [
    ("fits one", [H("a", 200)], [("a", 0, 7)], OUT),
    ("fits one exactly", [H("a", 99)], [("a", 0, 7)], OUT),
    ("the roomiest of those that fit", [H("a", 100), H("b", 150)], [("b", 0, 7)], OUT),
    ("a tie goes to the first id", [H("b", 150), H("a", 150)], [("a", 0, 7)], OUT),
    ("fits one by what it lends", [H("a", 500, lend=100)], [("a", 0, 7)], OUT),
    (
        "lending less than free sends it elsewhere",
        [H("a", 500, lend=50), H("b", 120)],
        [("b", 0, 7)],
        OUT,
    ),
    ("two hives", [H("a", 60), H("b", 50)], [("a", 0, 3), ("b", 4, 7)], OUT),
    ("two hives by lend", [H("a", 600, lend=60), H("b", 50)], [("a", 0, 3), ("b", 4, 7)], OUT),
    (
        "three hives",
        [H("a", 45), H("b", 40), H("c", 35)],
        [("a", 0, 1), ("b", 2, 4), ("c", 5, 7)],
        OUT,
    ),
    (
        "the fewest hives: the third is not needed",
        [H("a", 60), H("b", 50), H("c", 45)],
        [("a", 0, 3), ("b", 4, 7)],
        OUT,
    ),
    (
        "ties by id, and a third hive when whole layers do not fit two",
        [H("c", 50), H("b", 50), H("a", 50)],
        [("a", 0, 1), ("b", 2, 4), ("c", 5, 7)],
        OUT,
    ),
    (
        "layers in proportion to what each lends, rounded",
        [H("a", 70), H("b", 35)],
        [("a", 0, 4), ("b", 5, 7)],
        OUT,
    ),
    (
        "hives without RPC are left out and named",
        [H("a", 60), H("b", 50, rpc=False), H("c", 45)],
        [("a", 0, 3), ("c", 4, 7)],
        {"b": "its llama.cpp has no RPC"},
    ),
    (
        "the roomiest hive without RPC cannot host the split's worker",
        [H("a", 90, rpc=False), H("b", 60), H("c", 50)],
        [("b", 0, 3), ("c", 4, 7)],
        {"a": "its llama.cpp has no RPC"},
    ),
    (
        "another RPC protocol than the worker's hive is left out",
        [H("a", 60), H("b", 50, proto="2.0.0"), H("c", 45)],
        [("a", 0, 3), ("c", 4, 7)],
        {"b": "speaks RPC protocol 2.0.0, not 3.0.0 as hive a"},
    ),
    (
        "a hive lending nothing is left out",
        [H("a", 60), H("b", 300, lend=0), H("c", 50)],
        [("a", 0, 3), ("c", 4, 7)],
        {"b": "lends no memory"},
    ),
    (
        "a hive that reports no memory is left out",
        [H("a", None), H("b", 60), H("c", 50)],
        [("b", 0, 3), ("c", 4, 7)],
        {"a": "reports no memory yet"},
    ),
    (
        "four alike: three are enough, taken by id",
        [H("d", 35), H("c", 35), H("b", 35), H("a", 35)],
        [("a", 0, 1), ("b", 2, 4), ("c", 5, 7)],
        OUT,
    ),
    (
        "a big lender and a small one: 69 MiB after the outside tensors against 25",
        [H("a", 80), H("b", 25)],
        [("a", 0, 5), ("b", 6, 7)],
        OUT,
    ),
    (
        "the roomiest hive runs the worker, however the ids sort",
        [H("a", 50), H("b", 56)],
        [("b", 0, 3), ("a", 4, 7)],
        OUT,
    ),
]

REFUSALS: list[tuple[str, list[H], str]] = [
    (
        "all together short",
        [H("a", 40), H("b", 30)],
        "m needs about 99 MiB of memory and all hives that can take part lend 70 MiB "
        "together, 29 MiB short; lend more with `keeper hive start NAME --lend-memory SIZE` "
        "or start another hive",
    ),
    (
        "short, naming the hives left out",
        [H("a", 40), H("b", 30), H("c", 90, rpc=False)],
        "lend 70 MiB together (1 left out: c: its llama.cpp has no RPC), 29 MiB short",
    ),
    (
        "short when only the worker's hive speaks RPC",
        [H("a", 60), H("b", 50, rpc=False)],
        "lend 60 MiB together (1 left out: b: its llama.cpp has no RPC), 39 MiB short",
    ),
    (
        "zero lend everywhere",
        [H("a", 500, lend=0)],
        "lend 0 bytes together (1 left out: a: lends no memory), 99 MiB short",
    ),
    ("no hive at all", [], "lend 0 bytes together, 99 MiB short"),
    (
        "enough together, but not in whole layers",
        [H("a", 40), H("b", 35), H("c", 30)],
        "m needs about 99 MiB of memory in whole layers of up to 11 MiB each, which do not "
        "fit into what the hives lend (105 MiB together, but each hive's part must hold "
        "whole layers)",
    ),
]


def _layers(plan: Plan) -> Layers:
    return [(s.hive_id, s.first, s.last) for s in plan.shares]


@pytest.mark.parametrize(("name", "hives", "layers", "left_out"), ROWS, ids=[r[0] for r in ROWS])
def test_a_cluster_gets_the_plan_a_person_would_draw(
    name: str, hives: list[H], layers: Layers, left_out: dict[str, str]
) -> None:
    """Each row's cluster gets the expected hives and layer ranges, every layer placed once,
    the bytes adding up to the need, the output on the worker's hive, no hive overfilled."""
    lenders = [h.lender() for h in hives]
    plan = split_plan("m", SHAPE, ctx=1, slots=1, hives=lenders)
    assert _layers(plan) == layers
    assert plan.split is (len(layers) > 1)
    assert {h.hive_id: h.reason for h in plan.left_out} == left_out
    assert plan.need_bytes == NEED == sum(s.bytes for s in plan.shares)
    assert [s.output for s in plan.shares] == [True] + [False] * (len(layers) - 1)
    lent = {h.hive_id: h.lend_bytes for h in lenders}
    assert all(s.bytes <= (lent[s.hive_id] or 0) for s in plan.shares)


@pytest.mark.parametrize(("name", "hives", "sentence"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_cluster_too_small_is_refused_in_one_sentence(
    name: str, hives: list[H], sentence: str
) -> None:
    """When the hives cannot hold the model: 503 and one sentence with the model, its need,
    what they lend together and the shortfall."""
    with pytest.raises(InvalidRequest) as refused:
        split_plan("m", SHAPE, ctx=1, slots=1, hives=[h.lender() for h in hives])
    assert refused.value.status == 503
    assert sentence in str(refused.value)
    assert str(refused.value).count(". ") == 0  # one sentence
    assert refused.value.detail["need_bytes"] == NEED


AT_ROWS: list[tuple[str, list[H], str, Layers | str]] = [
    (
        "--hive where it fits, though another is roomier",
        [H("a", 100), H("b", 500)],
        "a",
        [("a", 0, 7)],
    ),
    (
        "--hive too small: the split's worker runs there",
        [H("a", 60), H("b", 50), H("c", 40)],
        "b",
        [("b", 0, 2), ("a", 3, 7)],
    ),
    (
        "--hive reporting no memory: placed there whole",
        [H("a", None), H("b", 500)],
        "a",
        [("a", 0, 7)],
    ),
    (
        "--hive without RPC cannot host a split",
        [H("a", 60, rpc=False), H("b", 50)],
        "a",
        "lend 60 MiB together (1 left out: a: its llama.cpp has no RPC), 39 MiB short",
    ),
    ("--hive the queen does not hear from", [H("a", 60)], "z", "hive z is not among the hives"),
]


@pytest.mark.parametrize(("name", "hives", "at", "expected"), AT_ROWS, ids=[r[0] for r in AT_ROWS])
def test_a_named_hive_gets_the_worker(
    name: str, hives: list[H], at: str, expected: Layers | str
) -> None:
    """`--hive` fixes where the worker runs: the model goes there whole when it fits, else
    that hive holds the split's output; a hive that cannot is refused, naming why."""
    lenders = [h.lender() for h in hives]
    if isinstance(expected, str):
        with pytest.raises(InvalidRequest) as refused:
            split_plan("m", SHAPE, ctx=1, slots=1, hives=lenders, at=at)
        assert expected in str(refused.value)
        return
    plan = split_plan("m", SHAPE, ctx=1, slots=1, hives=lenders, at=at)
    assert _layers(plan) == expected
    assert plan.worker_hive == at


def test_the_kv_cache_for_context_times_slots_counts_per_layer() -> None:
    """8 KiB of KV per token: 1024 tokens in one slot (or 512 in two) adds 1 MiB a layer,
    so a hive of 100 MiB that held the model for a short context no longer does."""
    shape = Shape(SHAPE.layer_bytes, SHAPE.other_bytes, 8 * 1024)
    hives = [H("a", 100).lender(), H("b", 50).lender()]
    short = split_plan("m", shape, ctx=1, slots=1, hives=hives)
    assert _layers(short) == [("a", 0, 7)]
    for ctx, slots in ((1024, 1), (512, 2)):
        plan = split_plan("m", shape, ctx=ctx, slots=slots, hives=hives)
        assert plan.need_bytes == 107 * MIB
        assert _layers(plan) == [("a", 0, 4), ("b", 5, 7)]
        assert [s.bytes for s in plan.shares] == [71 * MIB, 36 * MIB]
    trained = Shape(SHAPE.layer_bytes, SHAPE.other_bytes, 8 * 1024, context_length=512)
    longer = split_plan("m", trained, ctx=4096, slots=2, hives=hives)  # the worker stops at 512
    assert longer.need_bytes == 107 * MIB


def test_the_tensors_outside_the_layers_stay_on_the_workers_hive() -> None:
    """A model whose embedding and output weigh most: the worker's hive (the roomiest)
    holds them, so it takes fewer layers than its lend alone would give it."""
    shape = Shape(tuple([10 * MIB] * 4), 100 * MIB, 0)
    plan = split_plan("m", shape, ctx=1, slots=1, hives=[H("a", 130).lender(), H("b", 50).lender()])
    assert _layers(plan) == [("a", 0, 0), ("b", 1, 3)]
    assert [(s.hive_id, s.bytes, s.output) for s in plan.shares] == [
        ("a", 121 * MIB, True),
        ("b", 33 * MIB, False),
    ]
    assert plan.worker_hive == "a"


def test_the_plan_as_json_names_each_hive_its_layers_and_bytes() -> None:
    """`GET /v1/placements` and `--explain --json` show the split as layers and bytes."""
    plan = split_plan("m", SHAPE, ctx=1, slots=1, hives=[H("a", 60).lender(), H("b", 50).lender()])
    assert plan.to_dict() == {
        "model": "m",
        "need_bytes": NEED,
        "split": True,
        "worker_hive": "a",
        "hives": [
            {"hive": "a", "layers": [0, 3], "bytes": 55 * MIB, "output": True},
            {"hive": "b", "layers": [4, 7], "bytes": 44 * MIB, "output": False},
        ],
        "left_out": [],
    }


def test_a_shape_is_read_from_a_catalog_listing_or_not_at_all() -> None:
    """A hive's `shape` field becomes a Shape; a missing or malformed one gives none (the
    queen then cannot plan a split for that model)."""
    listed = {"layer_bytes": [5, 6], "other_bytes": 7, "kv_bytes_per_token": 8, "layers": 2}
    assert Shape.from_listing(listed) == Shape((5, 6), 7, 8)
    assert Shape.from_listing({**listed, "context_length": 256}) == Shape((5, 6), 7, 8, 256)
    assert layer_costs(Shape((10, 10), 10, 1), ctx=3, slots=2) == ([14, 14], 11)
    for bad in (None, {}, {**listed, "layer_bytes": []}, {**listed, "other_bytes": "7"}):
        assert Shape.from_listing(bad) is None
    assert Shape.from_listing({**listed, "layer_bytes": [5, True]}) is None
