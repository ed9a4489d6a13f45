"""Secrets never reach a sink."""

from __future__ import annotations

import pytest

from narration_core import NarrationEvent, Narrator, narration_context, redact, register_job_sink

NARRATE = Narrator("test")
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("calling with Bearer eyJhbGciOi.J9abc", "eyJhbGciOi.J9abc", "Bearer [REDACTED]"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz", "Authorization: [REDACTED]"),
        ("authorization=tok123", "tok123", "authorization=[REDACTED]"),
        ("GET /models?api_key=sk-live-42&x=1", "sk-live-42", "api_key=[REDACTED]&x=1"),
        ("token=abcdef", "abcdef", "token=[REDACTED]"),
        ("login password=hunter2 ok", "hunter2", "password=[REDACTED] ok"),
        ('{"secret": "s3cr3t", "n": 1}', "s3cr3t", '"secret": "[REDACTED]"'),
        (
            "fetch https://alice:pa55w0rd@hub.example/m.gguf",
            "pa55w0rd",
            "https://alice:[REDACTED]@hub.example/m.gguf",
        ),
        (f"key file:\n{PEM}\nend", "b3BlbnNzaC1rZXktdjEAAAAA", "[REDACTED PRIVATE KEY]\nend"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow truncated", "MIIEow", "[REDACTED PRIVATE KEY]"),
        ("export HF_TOKEN=hf_abc123", "hf_abc123", "HF_TOKEN=[REDACTED]"),
        ("OPENAI_API_KEY=sk-x1 run", "sk-x1", "OPENAI_API_KEY=[REDACTED] run"),
        ("AWS_SECRET_ACCESS_KEY=wJalr", "wJalr", "AWS_SECRET_ACCESS_KEY=[REDACTED]"),
        ("private_key: abc", "abc", "private_key: [REDACTED]"),
        ("run --token s3cret --port 1", "s3cret", "--token [REDACTED] --port 1"),
        ("run --api-key=k3y", "k3y", "--api-key=[REDACTED]"),
        ("https://user:pa/ss@h.example/x", "pa/ss", "https://user:[REDACTED]@h.example/x"),
        ("https://ghp_0123456789abcdefXYZ@github.com/o/r", "ghp_0123", "https://[REDACTED]@github"),
        ("Cookie: session=abc; id=2", "session=abc", "Cookie: [REDACTED]"),
    ],
)
def test_each_secret_kind_is_redacted(text: str, secret: str, kept: str) -> None:
    """Each kind of credential is replaced, and the words around it stay readable."""
    out = redact(text)
    assert secret not in out
    assert kept in out


@pytest.mark.parametrize(
    "text",
    [
        "Loaded 42 tokens in 3 ms",
        "max_tokens=64 tokens_out=12",
        "see https://example.org/x",
        "keyboard",
        "keeper run --max-tokens 64",
        "git clone https://git@example.org/r",
        "sort by monkey=banana",
    ],
)
def test_ordinary_text_is_untouched(text: str) -> None:
    """Messages without credentials are left exactly as written."""
    assert redact(text) == text


def test_job_sink_and_stdout_never_see_the_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """Redaction runs before every sink: stdout, the job sink, target and fields."""
    seen: list[NarrationEvent] = []
    unregister = register_job_sink("job-s", seen.append)
    try:
        with narration_context(job_id="job-s"):
            (
                NARRATE.action("connect")
                .target("https://u:topsecret@host/")
                .human("using Bearer topsecret")
                .field("password", "topsecret")
                .field("note", "token=topsecret")
                .emit()
            )
    finally:
        unregister()
    assert "topsecret" not in capsys.readouterr().out
    (event,) = seen
    assert "topsecret" not in event.to_json()
    assert event.fields["password"] == "[REDACTED]"
