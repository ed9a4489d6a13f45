"""Credentials are per hop: the queen's own token never goes to a hive (issue 7 item 3).

The "hive" here is a tiny real HTTP server on loopback that records every request head
it receives and answers like a hive would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs import HIVES_CONFIG, JobEvent, RbeePaths
from jobs.client import JobClient
from queen.errors import QueenConfigError
from queen.settings import QueenSettings
from tests.support import queen_settings, recording_hive, spawn_queen, start_queen

QUEEN_TOKEN = "s3cr3t"
HIVE_TOKEN = "hive-own-token"


def ignore(event: object) -> None:
    """An event handler for tests that only need the final state."""


def write_hives_config(home: Path, text: str) -> None:
    config = RbeePaths.resolve(home).ensure().config
    (config / HIVES_CONFIG).write_text(text)


@pytest.mark.anyio
async def test_queen_token_never_reaches_a_hive(rbee_home: Path) -> None:
    """A queen guarded by its own token hands hive_status to the hive with the hive's own
    token, never its own."""
    async with recording_hive() as hive:
        settings = queen_settings(
            rbee_home,
            token=QUEEN_TOKEN,
            hives={"gpu1": hive.url},
            hive_tokens={"gpu1": HIVE_TOKEN},
        )
        async with start_queen(settings) as queen, JobClient(queen.url, token=QUEEN_TOKEN) as c:
            state = await c.submit_and_stream(
                {"operation": "hive_status", "hive_id": "gpu1"}, ignore
            )
    assert state == "completed"
    (submit,) = hive.headers_of(b"/v1/jobs")
    assert submit[b"authorization"] == f"Bearer {HIVE_TOKEN}".encode()
    for head in hive.heads:
        assert QUEEN_TOKEN.encode() not in head


@pytest.mark.anyio
async def test_client_sends_its_token_to_jobs_but_not_to_health() -> None:
    """JobClient carries its token on job calls and leaves it off /health probes."""
    async with recording_hive() as hive, JobClient(hive.url, token=HIVE_TOKEN) as client:
        await client.health()
        assert await client.submit({"operation": "hive_list"}) == "job-1"
    (health,) = hive.headers_of(b"/health")
    (submit,) = hive.headers_of(b"/v1/jobs")
    assert b"authorization" not in health
    assert submit[b"authorization"] == f"Bearer {HIVE_TOKEN}".encode()


def test_hives_config_gives_urls_and_tokens(rbee_home: Path) -> None:
    """hives.toml gives each hive its URL and its own token; --hive overrides the URL only,
    and keys for the keeper (host) are ignored."""
    write_hives_config(
        rbee_home,
        '[hives.gpu1]\nurl = "http://10.0.0.5:7835/"\ntoken = "t1"\nhost = "gpu1-ssh"\n'
        '[hives.gpu2]\nhost = "gpu2"\n',
    )
    settings = QueenSettings.build(env={}, hives=["gpu1=http://127.0.0.1:9"])
    assert settings.hives["gpu1"] == "http://127.0.0.1:9"
    assert "gpu2" not in settings.hives  # no url yet: learned from its heartbeats
    assert settings.hive_tokens == {"gpu1": "t1"}
    assert settings.hives["localhost"].startswith("http://127.0.0.1:")
    assert "localhost" not in settings.hive_tokens  # none on loopback unless configured


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[hives.gpu1\n", "cannot read the hives config"),
        ('[hives.gpu1]\nurl = "10.0.0.5:7835"\n', "not an http(s) URL"),
        ('[hives.gpu1]\ntoken = "  "\n', "token is empty"),
        ("[hives.gpu1]\ntoken = 5\n", "token must be a string"),
        ('[hives."bad id"]\nurl = "http://x"\n', "is not a hive"),
    ],
)
def test_bad_hives_config_is_a_config_error(rbee_home: Path, text: str, fragment: str) -> None:
    """A hives config the queen cannot use is refused with one sentence naming the file."""
    write_hives_config(rbee_home, text)
    with pytest.raises(QueenConfigError) as info:
        QueenSettings.build(env={})
    assert fragment in str(info.value) and HIVES_CONFIG in str(info.value)


@pytest.mark.anyio
async def test_real_queen_on_all_interfaces_keeps_its_token(rbee_home: Path) -> None:
    """The issue's drill: `queen-rbee --bind 0.0.0.0 --token s3cr3t` with a hive from
    hives.toml; the hive's listener never sees s3cr3t, only the hive's own token."""
    async with recording_hive() as hive:
        write_hives_config(rbee_home, f'[hives.gpu1]\nurl = "{hive.url}"\ntoken = "{HIVE_TOKEN}"\n')
        async with spawn_queen(rbee_home, "--bind", "0.0.0.0", "--token", QUEEN_TOKEN) as queen:
            port = queen.url.rsplit(":", 1)[1]
            async with JobClient(f"http://127.0.0.1:{port}", token=QUEEN_TOKEN) as client:
                state = await client.submit_and_stream(
                    {"operation": "hive_status", "hive_id": "gpu1"}, ignore
                )
    assert state == "completed"
    assert hive.heads and all(QUEEN_TOKEN.encode() not in head for head in hive.heads)
    own = f"Bearer {HIVE_TOKEN}".encode()
    assert all(h[b"authorization"] == own for h in hive.headers_of(b"/v1/jobs"))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("configured", "fragment"), [(None, "keeper hive start gpu1"), ("nope", "refused the token")]
)
async def test_hive_refusing_the_queen_says_to_fix_hives_toml(
    rbee_home: Path, configured: str | None, fragment: str
) -> None:
    """A hive that answers 401 fails the job with advice about the hive's entry in
    hives.toml, not about the queen's own token."""
    async with recording_hive(require_token=HIVE_TOKEN) as hive:
        tokens = {"gpu1": configured} if configured else {}
        settings = queen_settings(rbee_home, hives={"gpu1": hive.url}, hive_tokens=tokens)
        async with start_queen(settings) as queen, JobClient(queen.url) as client:
            events: list[JobEvent] = []
            state = await client.submit_and_stream(
                {"operation": "hive_status", "hive_id": "gpu1"}, events.append
            )
    assert state == "failed"
    error = events[-1].data["error"]
    assert fragment in error and "[hives.gpu1] in hives.toml" in error
    assert "RBEE_TOKEN" not in error
