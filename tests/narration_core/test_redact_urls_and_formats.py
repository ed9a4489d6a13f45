"""Google API keys, JWTs and a URL's credentials (userinfo, secret query values) are redacted."""

from __future__ import annotations

import pytest

from narration_core import redact
from narration_core.redact import needs_redaction

GOOGLE_KEY = "AIza" + "SyD-9tSrke72PouQMnMX_a7eZSW0jkFMBWY"[:35]
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


@pytest.mark.parametrize(
    ("line", "secret", "kept"),
    [
        (f"request failed: key {GOOGLE_KEY} rejected", GOOGLE_KEY, "request failed: key"),
        (f"GOOGLE={GOOGLE_KEY}", GOOGLE_KEY, "GOOGLE="),
        (f"calling maps with {GOOGLE_KEY}.", GOOGLE_KEY, "calling maps with [REDACTED]."),
        (f"got {JWT} from the login", JWT, "got [REDACTED] from the login"),
        (f"session={JWT}", JWT, "session="),
        (f"https://api.example.com/v1?jwt={JWT}", JWT, "https://api.example.com/v1"),
        ("http://user:pass@127.0.0.1:9/m.gguf failed", ":pass@", "http://user:[REDACTED]@"),
        ("GET https://h/m.gguf?key=SECRETVALUE failed", "SECRETVALUE", "?key=[REDACTED] failed"),
        ("https://h/m?a=1&token=Tok3nValue&b=2", "Tok3nValue", "&b=2"),
        ("https://h/m?api_key=abcdEF123&x=1", "abcdEF123", "?api_key=[REDACTED]&x=1"),
        ("https://h/m?access_token=ya29.ABCdef", "ya29.ABCdef", "?access_token=[REDACTED]"),
        ("https://acct.blob.core.windows.net/c/m?sv=2022&sig=AbC%2Bd3F", "AbC%2Bd3F", "sv=2022"),
        ("https://s3/m?X-Amz-Signature=0a1b2c3d4e", "0a1b2c3d4e", "X-Amz-Signature="),
        ("https://h/m?signature=QUJDREVG", "QUJDREVG", "?signature=[REDACTED]"),
        ("https://h/login?user=bob&password=Hunter", "Hunter", "user=bob&password=[REDACTED]"),
        (
            "https://h/sk-proj-abcdefghijklmnopqrstuvwxyz012345/m",
            "sk-proj-abcdefghij",
            "https://h/",
        ),
    ],
)
def test_secret_is_redacted(line: str, secret: str, kept: str) -> None:
    out = redact(line)
    assert secret not in out
    assert kept in out
    assert redact(out) == out  # stable


@pytest.mark.parametrize(
    "line",
    [
        "AIza is how a Google key starts",
        "AIzaShort",  # too short for a key
        "eyJhbGciOiJIUzI1NiJ9 alone is only a header",
        "https://h/search?q=tokens&sort_key=name&eos_token=x&max_tokens=5",
        "https://h/m?key=<KEY>&token=$TOKEN&sig=[REDACTED]",
        "https://h/m?page=2&signed=true",
        "pass --token <T> or set RBEE_TOKEN",
    ],
)
def test_lookalikes_are_kept(line: str) -> None:
    assert redact(line) == line


def test_a_41_character_key_is_not_a_google_key() -> None:
    """The format is exactly AIza + 35 characters; a longer run is something else."""
    line = f"id {GOOGLE_KEY}X"
    assert redact(line) == line


def test_the_fast_path_sees_the_new_formats() -> None:
    """The cheap trigger check must not wave a key or a JWT through a batch of lines."""
    batch = "\n".join([f"line {i} all fine" for i in range(500)] + [f"got {GOOGLE_KEY}", JWT])
    assert needs_redaction(batch)
    assert not needs_redaction("\n".join(f"line {i} all fine" for i in range(500)))
