"""Schemathesis against a live queen: the server answers what /openapi.json says (issue 7
item 6). Generated requests, valid and invalid, go over real HTTP to an in-process queen
on a loopback port; every answer must be documented, well-typed and never a 500.

The document is built when the module loads, with the same function the queen serves it
from (schemathesis' lazy fixture loader does not run on pytest 9), and a test checks the
served document is that one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings

from jobs import rbee_version
from jobs.server import openapi_schema
from queen.app import QUEEN_OPENAPI_PATHS
from tests.support import fuzz_config, queen_settings, start_queen

EXAMPLES_PER_OPERATION = 40  # with the coverage phase, a few hundred requests in all
FUZZ_CONFIG = fuzz_config(
    max_examples=EXAMPLES_PER_OPERATION,
    # 502 is the documented answer when a hive cannot be reached (its port is closed
    # here); any other 5xx is a server error.
    server_errors=[502],
    # What the document calls valid is accepted: created (or 502, the hive is down),
    # and for a made-up job id, 404.
    accepted=["2XX", 404, 502],
    operations=[
        {  # a beat or goodbye valid by the document still needs the credential of the
            # hive it names, which a generated request cannot carry: 401 is right there
            # (tests/queen/test_beats.py signs real ones)
            "include-path-regex": "^/v1/heartbeats(/goodbye)?$",
            "checks": {"positive_data_acceptance": {"enabled": False}},
        }
    ],
)


@pytest.fixture(scope="module")
def live_queen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A queen served by uvicorn in a portal thread, so the synchronous schemathesis calls
    reach it over real sockets; its one hive points at a closed port."""
    home: Path = tmp_path_factory.mktemp("fuzz-home")
    settings_ = queen_settings(home)  # its hive at a closed port: hive operations answer 502
    with (
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(start_queen(settings_)) as queen,
    ):
        yield queen.url


DOCUMENT = openapi_schema(
    title="queen-rbee", version=rbee_version(), extra_paths=QUEEN_OPENAPI_PATHS
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict(FUZZ_CONFIG))


def test_fuzzed_document_is_the_served_one(live_queen: str) -> None:
    """The document fuzzed here is exactly what the live queen serves at /openapi.json."""
    assert httpx.get(f"{live_queen}/openapi.json", timeout=10).json() == DOCUMENT


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_queen_answers_what_its_document_says(case: schemathesis.Case, live_queen: str) -> None:
    """Every generated request gets a documented status with a body of the documented
    shape and type, never a 500; invalid input is refused; 405s carry Allow."""
    response = case.call(base_url=live_queen)
    try:
        case.validate_response(response)
    finally:
        if response.status_code == 201:  # a generated watch job would run until cancelled
            job_id = response.json()["job_id"]
            httpx.delete(f"{live_queen}/v1/jobs/{job_id}", timeout=10)
