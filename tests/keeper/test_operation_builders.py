"""The vocabulary's operation builders (what the keeper sends) against the models the
queen validates with, and the sampling defaults shared by the queen, keeper and worker."""

from __future__ import annotations

import inspect

import pytest

import jobs
from keeper.cli import _infer
from worker.engine import Sampling

BUILT = [
    jobs.queen_status_op(),
    jobs.queen_status_op(watch=True, interval_s=0.5),
    jobs.hive_list_op(),
    jobs.hive_status_op(hive_id="gpu1"),
    jobs.worker_spawn_op(hive_id="gpu1", model="builtin:tiny", device="cuda:0"),
    jobs.worker_list_op(hive_id="gpu1"),
    jobs.worker_stop_op(hive_id="gpu1", worker_id="w-1"),
    jobs.model_download_op(hive_id="gpu1", model="builtin:tiny"),
    jobs.model_list_op(hive_id="gpu1"),
    jobs.model_delete_op(hive_id="gpu1", model="builtin:tiny"),
    jobs.infer_op(model="builtin:tiny", prompt="Once upon a time", seed=1, stop=["\n"]),
    jobs.infer_op(
        model="builtin:tiny",
        messages=jobs.chat_messages("Hi", system="Be brief."),
        hive_id="gpu1",
        worker_id="w-1",
    ),
    jobs.model_serve_op(model="builtin:tiny", replicas=2, max_replicas=3, hive_id="gpu1"),
]


@pytest.mark.parametrize("operation", BUILT, ids=lambda op: str(op["operation"]))
def test_every_builder_makes_what_the_queen_accepts(operation: jobs.WireOperation) -> None:
    """A built operation passes the queen's validation, and every field it states comes
    back from the model unchanged (nothing is coerced or renamed on the way)."""
    dumped = jobs.operation_json(jobs.parse_operation(operation))
    assert {name: dumped[name] for name in operation} == operation


def test_every_operation_has_a_builder() -> None:
    built = {op["operation"] for op in BUILT}
    # hive_start/stop are the keeper's own, rpc_serve/stop the queen's requests to hives.
    not_sent = {"hive_start", "hive_stop", "rpc_serve", "rpc_stop"}
    assert built == set(jobs.OPERATION_NAMES) - not_sent


def test_infer_takes_a_prompt_or_messages() -> None:
    with pytest.raises(ValueError, match="either prompt or messages"):
        jobs.infer_op(model="m")
    with pytest.raises(ValueError, match="either prompt or messages"):
        jobs.infer_op(model="m", prompt="p", messages=jobs.chat_messages("p"))
    assert jobs.chat_messages("p", system="") == [{"role": "user", "content": "p"}]


def test_sampling_defaults_are_the_same_everywhere() -> None:
    """The queen's `Infer`, the keeper's flags and the worker's `Sampling` take their
    defaults from jobs/_sampling.py."""
    defaults = {
        "max_tokens": jobs.MAX_TOKENS_DEFAULT,
        "temperature": jobs.TEMPERATURE_DEFAULT,
        "top_p": jobs.TOP_P_DEFAULT,
        "top_k": jobs.TOP_K_DEFAULT,
    }
    assert defaults == {"max_tokens": 128, "temperature": 0.7, "top_p": 0.95, "top_k": 40}
    infer = jobs.Infer(model="m", prompt="p")
    flags = inspect.signature(_infer.infer).parameters
    for name, value in defaults.items():
        assert getattr(infer, name) == value
        assert flags[name].default == value
        assert getattr(Sampling(), name) == value
        assert jobs.infer_op(model="m", prompt="p")[name] == value
