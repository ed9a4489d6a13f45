"""Private keys printed over many lines are hidden, and never hide real output."""

from __future__ import annotations

import json

import asyncssh
import pytest

from narration_core import LineSplitter

KEY = "[REDACTED PRIVATE KEY]"
CUT = "[REDACTED PRIVATE KEY (cut: no END line)]"


def _keys() -> dict[str, str]:
    """Real private keys in the formats programs print: PKCS#1, PKCS#8 and OpenSSH."""
    rsa = asyncssh.generate_private_key("ssh-rsa", key_size=1024)
    ed = asyncssh.generate_private_key("ssh-ed25519")
    return {
        "pkcs1": rsa.export_private_key("pkcs1-pem").decode(),
        "pkcs8-encrypted": rsa.export_private_key("pkcs8-pem", passphrase="x").decode(),
        "openssh": ed.export_private_key().decode(),
    }


KEYS = _keys()


def _split(text: str, *, chunk: int = 7) -> list[str]:
    """Feed `text` to a LineSplitter in small chunks, as a pipe would, and flush."""
    splitter = LineSplitter()
    data = text.encode()
    lines: list[str] = []
    for i in range(0, len(data), chunk):
        lines += splitter.feed(data[i : i + chunk])
    return lines + splitter.flush()


def _body(key: str) -> list[str]:
    return key.strip().splitlines()[1:-1]


@pytest.mark.parametrize("name", list(KEYS))
def test_a_real_key_becomes_one_marker(name: str) -> None:
    """A real key, in any common format, comes out as one marker between the lines around it."""
    lines = _split(f"before\n{KEYS[name]}after\n")
    assert lines == ["before", KEY, "after"]


def test_legacy_encrypted_pem_and_pgp_armor_are_hidden() -> None:
    """Armor headers, blank lines and PGP's checksum line are part of the block."""
    body = ["MIICXQIBAAKBgQD2GlO8tQbiwBL5GEKNOi7KZQLyPRUDnUy3cU/e2O7DM/Pgg8uR"] * 3
    pem = [
        "-----BEGIN RSA PRIVATE KEY-----",
        "Proc-Type: 4,ENCRYPTED",
        "DEK-Info: AES-128-CBC,3F17F5316E2BAC89",
        "",
        *body,
        "I+3cKh+M",
        "-----END RSA PRIVATE KEY-----",
    ]
    pgp = [
        "-----BEGIN PGP PRIVATE KEY BLOCK-----",
        "Version: GnuPG v2",
        "",
        *body,
        "AoGAJEZlKV+VkD63jTfiN2bo",
        "=njUN",
        "-----END PGP PRIVATE KEY BLOCK-----",
    ]
    assert _split("\n".join(["a", *pem, "b", *pgp, "c"]) + "\n") == ["a", KEY, "b", KEY, "c"]


def test_a_key_without_end_line_does_not_swallow_output() -> None:
    """A block cut short ends at the first line that is not key material; all later output shows."""
    key = KEYS["pkcs1"].strip().splitlines()[:4]  # BEGIN and three body lines, no END
    after = ["error: build failed", *(f"line {i}" for i in range(300))]
    lines = _split("\n".join(["before", *key, *after]) + "\n")
    assert lines == ["before", CUT, *after]
    assert not any(part in "\n".join(lines) for part in key[1:])


def test_a_short_line_after_the_body_is_released_when_no_end_follows() -> None:
    """A short base64-looking line (`Done`) held as a key's last line shows if no END comes."""
    key = KEYS["pkcs1"].strip().splitlines()[:3]
    assert _split("\n".join([*key, "Done", "next step"]) + "\n") == [CUT, "Done", "next step"]


def test_a_word_after_begin_is_output() -> None:
    """BEGIN followed by ordinary words (a tutorial, a grep) hides nothing but the BEGIN line."""
    lines = _split("-----BEGIN PRIVATE KEY-----\ndone\ninternationalization\n")
    assert lines == [CUT, "done", "internationalization"]


def test_text_around_the_block_stays() -> None:
    """Text before BEGIN and after END on the same lines is kept."""
    key = KEYS["openssh"].strip().splitlines()
    text = "key file: " + "\n".join(key) + " (saved)\nnext\n"
    assert _split(text) == [f"key file: {KEY}", " (saved)", "next"]


def test_a_key_cut_by_end_of_stream_is_hidden() -> None:
    """A stream ending inside a key, with no final newline, shows the marker, never the body."""
    body = _body(KEYS["pkcs1"])
    text = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(body[:3])
    lines = _split(text)
    assert lines == [CUT]


def test_keeper_run_shows_all_output_after_an_unterminated_key(keeper) -> None:
    """`keeper --json run` of a child printing a key with no END line shows every later line."""
    key = KEYS["pkcs1"].strip().splitlines()[:6]
    after = [f"step {i} done" for i in range(250)]
    script = "\n".join(["before", *key, *after]) + "\n"
    result = keeper("--json", "run", "--", "printf", "%s", script)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    shown = [event["human"] for event in events if event["event"] == "output"]
    assert shown == ["before", CUT, *after]
    assert key[2] not in result.stdout
