"""`keeper status` shows each worker's slots, threads and context, from the real chain."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import psutil
import pytest

from hive.tiny_model import TinyShape, write_tiny_model
from jobs import worker_credential
from tests.support import Chain, await_until, hive_token

# Wide enough that a generation takes seconds, so the status can see its slots busy.
SLOW = TinyShape(n_ctx=2048, n_embd=512, n_layer=8, n_ff=2048)
LONG = {"prompt": "a", "max_tokens": 1800, "seed": 1}


def worker_row(chain: Chain, worker_id: str) -> str:
    """The worker's row of `keeper status` (piped: whole rows)."""
    out = chain.run("status").stdout
    rows = [line for line in out.splitlines() if worker_id in line]
    assert rows, out
    return rows[0]


@pytest.mark.anyio
async def test_status_shows_slots_threads_and_context(tmp_path: Path) -> None:
    """A spawned worker's row shows its slots free (0/2 busy), its threads (the physical
    cores) and its context per slot with the KV memory it costs; with a generation in
    each slot the row says 2/2 busy and the worker `busy`, then free again once they
    are cancelled."""
    model = tmp_path / "slow.gguf"
    write_tiny_model(model, shape=SLOW)
    chain = Chain(tmp_path / "home")
    chain.start_queen()
    try:
        chain.start_hive()
        spawned = chain.run("--json", "worker", "spawn", "--model", str(model)).stdout
        events = [json.loads(line) for line in spawned.splitlines() if line.startswith("{")]
        worker_id = events[-1]["result"]["worker_id"]
        threads = psutil.cpu_count(logical=False) or psutil.cpu_count()
        kv_mib = 2 * SLOW.n_ctx * SLOW.n_layer * 2 * SLOW.n_embd * 2 / 2**20
        idle = re.compile(
            rf"ready\s+0/2 busy\s+{threads}\s+{SLOW.n_ctx} tok/slot, {kv_mib:.0f} MiB KV\s"
        )
        await await_until(lambda: bool(idle.search(worker_row(chain, worker_id))), deadline_s=30)
        url = (await chain.worker(worker_id))["url"]
        credential = worker_credential(hive_token(tmp_path / "home"), worker_id)
        auth = {"Authorization": f"Bearer {credential}"}  # as the queen sends prompts
        async with httpx.AsyncClient(base_url=url, trust_env=False, headers=auth) as http:
            jobs = [(await http.post("/v1/inference", json=LONG)).json()["job_id"] for _ in "ab"]
            busy = re.compile(r"busy\s+2/2 busy\s")
            await await_until(
                lambda: bool(busy.search(worker_row(chain, worker_id))), deadline_s=30
            )
            for job_id in jobs:
                await http.delete(f"/v1/jobs/{job_id}")
        await await_until(lambda: bool(idle.search(worker_row(chain, worker_id))), deadline_s=30)
    finally:
        chain.stop()
