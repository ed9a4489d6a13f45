"""Secrets never reach a sink."""

from __future__ import annotations

import pytest
from redaction_corpus import ORDINARY, PROJECT_MESSAGES, SECRETS

from narration_core import NarrationEvent, Narrator, narration_context, redact, register_job_sink

NARRATE = Narrator("test")


@pytest.mark.parametrize(
    ("line", "secret", "kept"),
    [row[1:] for row in SECRETS],
    ids=[row[0] for row in SECRETS],
)
def test_each_secret_kind_is_redacted(line: str, secret: str, kept: str) -> None:
    """Each kind of credential is replaced, and the words around it stay readable."""
    out = redact(line)
    assert secret not in out
    assert kept in out


@pytest.mark.parametrize("line", ORDINARY)
def test_everyday_lines_pass_unchanged(line: str) -> None:
    """Shell, ssh, git, pip, apt and compiler output that only mentions secrets is untouched."""
    assert redact(line) == line


@pytest.mark.parametrize("line", PROJECT_MESSAGES)
def test_the_projects_own_messages_pass_unchanged(line: str) -> None:
    """rbee's own advice about tokens (`pass --token <T> or set RBEE_TOKEN`) is not mangled."""
    assert redact(line) == line


@pytest.mark.parametrize(("line", "secret", "kept"), [row[1:] for row in SECRETS])
def test_redaction_is_stable(line: str, secret: str, kept: str) -> None:
    """Redacting twice changes nothing more: the marker is never taken for a secret."""
    once = redact(line)
    assert redact(once) == once


def test_job_sink_and_stdout_never_see_the_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """Redaction runs before every sink: stdout, the job sink, target and fields."""
    seen: list[NarrationEvent] = []
    unregister = register_job_sink("job-s", seen.append)
    try:
        with narration_context(job_id="job-s"):
            (
                NARRATE.action("connect")
                .target("https://u:tops3cret@host/")
                .human("using Bearer tops3cret")
                .field("password", "tops3cret")
                .field("note", "token=tops3cret")
                .emit()
            )
    finally:
        unregister()
    assert "tops3cret" not in capsys.readouterr().out
    (event,) = seen
    assert "tops3cret" not in event.to_json()
    assert event.fields["password"] == "[REDACTED]"
