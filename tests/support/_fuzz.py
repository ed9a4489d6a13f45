"""Schemathesis settings shared by the OpenAPI fuzz tests of every daemon.

Each daemon's test fuzzes its own /openapi.json against a live server of it; what must hold
is the same for all: no 5xx, documented statuses, bodies and headers of the documented
shape, invalid input refused, 405s with Allow.
"""

from __future__ import annotations

from typing import Any

CHECKS = (  # what must hold; the rest (auth, stateful, resource checks) do not apply here
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "unsupported_method",
)


def fuzz_config(
    *,
    max_examples: int,
    accepted: list[Any],
    server_errors: list[Any] | None = None,
    operations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A schemathesis config: every check of CHECKS; `accepted` are the statuses a request
    the document calls valid may get (positive data acceptance); `server_errors` the
    statuses besides 2xx and 4xx that are documented answers, not server errors."""
    return {
        "generation": {"max-examples": max_examples, "mode": "all"},
        "phases": {"stateful": {"enabled": False}},
        "operations": operations or [],
        "checks": {
            "enabled": False,
            **{name: {"enabled": True} for name in CHECKS},
            "not_a_server_error": {
                "enabled": True,
                "expected-statuses": ["2XX", "4XX", *(server_errors or [])],
            },
            "positive_data_acceptance": {"enabled": True, "expected-statuses": accepted},
        },
    }
