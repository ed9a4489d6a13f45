"""Secrets never reach a sink."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redaction_corpus import ORDINARY, PROJECT_MESSAGES, SECRETS

from narration_core import NarrationEvent, Narrator, narration_context, redact, register_job_sink
from narration_core.redact import redact_fields

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


_PIECES = st.sampled_from(
    ["token", "password", "=", ":", " ", "key", "Bearer", "--token", "abc123", "hunter", "'",
     '"', "\x1b[31m", "\x1b[0m", "https://", "u:", "@", "mysql", "-p", "ghp_", "A" * 20, "_",
     "-", ".", "(", "[", "<", "`", "expired", "-----BEGIN ", "PRIVATE KEY-----", "-----END ",
     "\n", "AKIA", "HF_TOKEN", "Authorization", "Cookie: a=b"]
)  # fmt: skip
_SECRET = st.from_regex(r"[A-Za-z]{2,10}[0-9][A-Za-z0-9]{4,20}", fullmatch=True)
_SHAPES = [
    "password={}", "HF_TOKEN={}", "api_key: {}", '"secret": "{}"', "--token {}",
    "Authorization: Bearer {}", "mysql -u root -p{}", "https://bob:{}@host/x", "token = {}",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=12).map("".join))
def test_redaction_is_stable_on_any_text(text: str) -> None:
    """For any mix of secret-ish fragments, redacting the result again changes nothing."""
    once = redact(text)
    assert redact(once) == once


@settings(max_examples=300, deadline=None)
@given(
    secret=_SECRET,
    shape=st.sampled_from(_SHAPES),
    before=st.sampled_from(["", "login ", "ERROR ", "[keeper    ] run    : "]),
    after=st.sampled_from(["", " ok", ", retrying", ". Done"]),
)
def test_a_secret_in_any_shape_is_gone(secret: str, shape: str, before: str, after: str) -> None:
    """A random secret with a digit disappears from every name/flag/header/URL shape."""
    line = before + shape.format(secret) + after
    out = redact(line)
    assert secret not in out
    assert out.startswith(before) and out.endswith(after)


def test_fields_are_redacted_by_name_then_by_value() -> None:
    """Secret-named fields lose their value whole; counts like `max_tokens` and other
    strings keep theirs, patterns aside."""
    fields = {
        "password": "hunter",
        "api_key": 42,
        "Authorization": "Basic x",
        "max_tokens": 64,
        "tokens_out": 12,
        "eos_token": "</s>",
        "note": "login password=hunter2",
        "raw": "\x1b[31mpassword=hunter3\x1b[0m",
        "token": None,
    }
    out = redact_fields(fields)
    assert out["password"] == out["api_key"] == out["Authorization"] == "[REDACTED]"
    assert (out["max_tokens"], out["tokens_out"], out["eos_token"]) == (64, 12, "</s>")
    assert out["note"] == "login password=[REDACTED]"
    assert "hunter3" not in out["raw"]
    assert out["token"] is None
