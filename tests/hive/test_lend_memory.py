"""`rbee-hive --lend-memory SIZE` / RBEE_LEND_MEMORY: read as bytes, refused when not a
size, and reported in every heartbeat for the queen's placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from hive.errors import HiveConfigError
from hive.heartbeat import Heartbeat
from hive.settings import HiveSettings
from jobs import RbeePaths

GIB = 1 << 30


@pytest.mark.parametrize(
    ("flag", "env", "lent"),
    [
        ("2G", {}, 2_000_000_000),
        ("512M", {}, 512_000_000),
        ("1.5GiB", {}, int(1.5 * GIB)),
        ("2 GiB", {}, 2 * GIB),
        ("1073741824", {}, GIB),
        (None, {"RBEE_LEND_MEMORY": "1GiB"}, GIB),
        ("2GiB", {"RBEE_LEND_MEMORY": "1GiB"}, 2 * GIB),  # the flag wins
        (None, {}, None),  # no cap: all that is free
    ],
)
def test_a_lend_is_read_as_bytes_from_the_flag_or_the_environment(
    tmp_path: Path, flag: str | None, env: dict[str, str], lent: int | None
) -> None:
    """Sizes people write (powers of ten for G/M, of two for GiB) become the bytes the
    hive lends; the flag beats the environment."""
    settings = HiveSettings.build(lend_memory=flag, env=env, paths=RbeePaths.resolve(tmp_path))
    assert settings.lend_bytes == lent


@pytest.mark.parametrize("bad", ["lots", "-1G", "2X", "1.5.0G"])
def test_a_lend_that_is_not_a_size_is_refused_naming_it(tmp_path: Path, bad: str) -> None:
    """A value that is not a size stops the hive with one sentence naming it."""
    with pytest.raises(HiveConfigError) as refused:
        HiveSettings.build(lend_memory=bad, env={}, paths=RbeePaths.resolve(tmp_path))
    assert str(refused.value) == (
        f"--lend-memory {bad!r} is not a size; write e.g. 2G, 512M or 1.5GiB"
    )


def test_every_beat_carries_what_the_hive_lends() -> None:
    """The queen learns the cap from the beats (None: no cap)."""
    for lent in (3 * GIB, None):
        beat = Heartbeat(
            "http://127.0.0.1:1", hive_id="h", url="http://h:2", version="1", workers=list,
            lend_bytes=lent,
        ).beat()  # fmt: skip
        assert beat.lend_bytes == lent
