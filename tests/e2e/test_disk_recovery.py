"""Recovering from a full disk with keeper commands alone, as a user would.

A queen and a hive, started by the keeper, keep RBEE_HOME on a 2 MiB tmpfs; models come
from a file server on loopback. A download larger than the disk fails saying so and takes
its partial file away with it. A partial file that fills the disk to the last byte (as a
hive killed mid-download leaves one) no longer locks the user out: a new download is
refused naming that file and its size, `keeper model list`, `keeper status` and `keeper
model delete` still run, and after the delete the next download succeeds.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from hive.tiny_model import write_tiny_model
from tests.support import Chain, fill_disk, serve_models

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def chain_on(home: Path) -> AsyncIterator[Chain]:
    """A queen and a hive the keeper started on `home`; stopped afterwards."""
    chain = Chain(home)
    await anyio.to_thread.run_sync(chain.start_queen)
    try:
        await anyio.to_thread.run_sync(chain.start_hive)
        yield chain
    finally:
        await anyio.to_thread.run_sync(chain.stop)


async def keeper(chain: Chain, *args: str) -> tuple[int, str]:
    """`keeper ARGS` to its end: its exit code and everything it printed."""
    done = await anyio.to_thread.run_sync(lambda: chain.run(*args, ok=False))
    return done.returncode, done.stdout + done.stderr


async def test_a_full_disk_is_recovered_with_keeper_commands_alone(
    small_home: Path, tmp_path: Path
) -> None:
    """1. A download larger than the disk fails naming the full disk and removes its .part.
    2. A .part filling the disk to the last byte: a download is refused naming it and its
    size; model list, status and model delete run. 3. After the delete, a download works.
    Result: recovered with keeper commands alone."""
    tiny = tmp_path / "tiny.gguf"
    write_tiny_model(tiny)
    blobs = {"huge.gguf": os.urandom(3 << 20), "tiny.gguf": tiny.read_bytes()}
    (tmp_path / "files").mkdir()
    models = small_home / "models" / "localhost"
    async with serve_models(blobs, tmp_path / "files") as files, chain_on(small_home) as chain:
        code, said = await keeper(chain, "model", "download", f"{files}/huge.gguf")
        assert code == 1 and "is full" in said and "removed the partial download" in said, said
        assert not list(models.glob("*.part"))

        part = fill_disk(models, "huge.gguf.part")  # what a hive killed mid-download leaves
        code, said = await keeper(chain, "model", "download", f"{files}/tiny.gguf")
        assert code == 1 and "is full" in said and f"{part} (" in said, said
        code, said = await keeper(chain, "model", "list")
        assert code == 0 and "huge" in said and "failed" in said, said
        code, said = await keeper(chain, "status")
        assert code == 0, said
        code, said = await keeper(chain, "model", "delete", "huge")
        assert code == 0 and "Deleted model huge" in said, said
        assert not part.exists()

        code, said = await keeper(chain, "model", "download", f"{files}/tiny.gguf")
        assert code == 0 and "available" in said, said
        code, said = await keeper(chain, "model", "list")
        assert code == 0 and "tiny: available" in said, said
