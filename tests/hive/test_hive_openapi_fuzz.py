"""Schemathesis against a live rbee-hive process: it answers what its /openapi.json says,
and never a 5xx, for generated requests valid and invalid, carrying its credential
(without one every route but /health is a 401, which tests/hive/test_hive_credential.py
checks).

The document is built when the module loads with the function the hive serves it from
(schemathesis' lazy loader does not run on pytest 9); a test checks it is the served one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from hive.app import OPENAPI_PATHS
from jobs import rbee_version
from jobs.server import openapi_schema
from tests.support import fuzz_config, hive_token, served_for_fuzzing

EXAMPLES_PER_OPERATION = 25
START_DEADLINE_S = 60.0
# A generated job may name a model no index has, a worker that never existed or an
# operation only the queen runs: refused (4xx) or failed in its stream; a made-up job id
# is a 404.
FUZZ_CONFIG = fuzz_config(max_examples=EXAMPLES_PER_OPERATION, accepted=["2XX", "4XX"])


@dataclass
class LiveHive:
    url: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def live_hive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHive]:
    """The real rbee-hive on a free loopback port, beating to no queen."""
    home: Path = tmp_path_factory.mktemp("hive-fuzz-home")
    with served_for_fuzzing("hive", home, "--hive-id", "localhost") as url:
        yield LiveHive(url, {"Authorization": f"Bearer {hive_token(home)}"})


DOCUMENT = openapi_schema(title="rbee-hive", version=rbee_version(), extra_paths=OPENAPI_PATHS)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict(FUZZ_CONFIG))


def test_fuzzed_document_is_the_served_one(live_hive: LiveHive) -> None:
    """The document fuzzed here is exactly what the live hive serves at /openapi.json."""
    served = httpx.get(f"{live_hive.url}/openapi.json", headers=live_hive.headers, timeout=10)
    assert served.json() == DOCUMENT


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_hive_answers_what_its_document_says(case: schemathesis.Case, live_hive: LiveHive) -> None:
    """Every generated request gets a documented status with a body of the documented
    shape and type, never a 5xx; invalid input is refused; 405s carry Allow."""
    response = case.call(base_url=live_hive.url, headers=live_hive.headers)
    try:
        case.validate_response(response)
    finally:
        if response.status_code == 201:  # a generated job (a download, a spawn) is ended
            job_id = response.json()["job_id"]
            httpx.delete(f"{live_hive.url}/v1/jobs/{job_id}", headers=live_hive.headers)
