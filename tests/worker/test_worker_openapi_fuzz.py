"""Schemathesis against a live llm-worker-rbee process on builtin:tiny's kind of model: it
answers what its /openapi.json says, and never a 5xx, for generated requests valid and
invalid, carrying its credential (without one every route but /health is a 401:
tests/hive/test_supervisor.py checks that on a worker its hive spawned).

The document is built when the module loads with the function the worker serves it from;
a test checks it is the served one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from hive.tiny_model import write_tiny_model
from jobs import WORKER_CREDENTIAL_ENV, rbee_version
from jobs.server import openapi_schema
from tests.support import WORKER_AUTH, WORKER_CREDENTIAL, fuzz_config, served_for_fuzzing
from worker._openapi import openapi_paths

EXAMPLES_PER_OPERATION = 25
START_DEADLINE_S = 60.0
# Valid by the document: a generation is created (201), or every slot is busy (503); a
# made-up job id is a 404; messages a chat template cannot take are a 400.
FUZZ_CONFIG = fuzz_config(
    max_examples=EXAMPLES_PER_OPERATION, accepted=["2XX", 400, 404, 503], server_errors=[503]
)


@pytest.fixture(scope="module")
def live_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real worker on a tiny random-weight GGUF and a free loopback port, ready."""
    home: Path = tmp_path_factory.mktemp("worker-fuzz-home")
    model = home / "tiny.gguf"
    write_tiny_model(model)
    env = {WORKER_CREDENTIAL_ENV: WORKER_CREDENTIAL}
    with served_for_fuzzing("worker", home, "--model", str(model), env=env) as url:
        yield url


DOCUMENT = openapi_schema(
    title="llm-worker-rbee", version=rbee_version(), extra_paths=openapi_paths()
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict(FUZZ_CONFIG))


def test_fuzzed_document_is_the_served_one(live_worker: str) -> None:
    """The document fuzzed here is exactly what the live worker serves at /openapi.json,
    and it offers no POST /v1/jobs (the worker's one door is /v1/inference)."""
    served = httpx.get(f"{live_worker}/openapi.json", headers=WORKER_AUTH, timeout=10).json()
    assert served == DOCUMENT
    assert "post" not in served["paths"]["/v1/jobs"]


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_worker_answers_what_its_document_says(case: schemathesis.Case, live_worker: str) -> None:
    """Every generated request gets a documented status with a body of the documented
    shape and type, never a 5xx but the documented 503; invalid input is refused."""
    response = case.call(base_url=live_worker, headers=WORKER_AUTH)
    try:
        case.validate_response(response)
    finally:
        if response.status_code == 201:  # a generated generation is ended at once
            job_id = response.json()["job_id"]
            httpx.delete(f"{live_worker}/v1/jobs/{job_id}", headers=WORKER_AUTH, timeout=10)
