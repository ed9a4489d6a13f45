"""`GET /v1/placements` with a real queen and hive: the plan for builtin:tiny from its GGUF
header, behind the user's token, and a hive's `--lend-memory` capping placement."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from jobs.client import JobClient
from tests.support import (
    Chain,
    KeeperRunner,
    extra_hive,
    queen_settings,
    queen_with_hive,
    run_job,
    start_queen,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
TOKEN = "placements-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
LENT = 512 << 10  # what the hive lends: less than builtin:tiny needs


async def _download_tiny(queen_url: str) -> dict[str, Any]:
    """builtin:tiny in the hive's catalog; its entry, as the hive lists it."""
    async with JobClient(queen_url) as jobs:
        final = await run_job(jobs, {"operation": "model_download", "model": "builtin:tiny"})
        assert final[-1].data["state"] == "completed", final[-1].data
        listing = await run_job(jobs, {"operation": "model_list", "hive_id": "localhost"})
    models: list[dict[str, Any]] = listing[-1].data["result"]["models"]
    return next(m for m in models if m["source"] == "builtin:tiny")


async def test_placements_need_the_token_a_model_and_a_hive_that_has_it(
    rbee_home: Path,
) -> None:
    """Without the token: 401; without ?model or with a bad number: 400; a model no hive
    has: 404 naming the download; all as `{"error","detail"}`; in /openapi.json."""
    async with (
        start_queen(queen_settings(rbee_home, token=TOKEN)) as queen,
        httpx.AsyncClient(base_url=queen.url, trust_env=False) as http,
    ):
        assert (await http.get("/v1/placements?model=builtin:tiny")).status_code == 401
        missing = await http.get("/v1/placements", headers=AUTH)
        assert missing.status_code == 400 and "model=REF" in missing.json()["error"]
        bad = await http.get("/v1/placements?model=builtin:tiny&ctx_size=x", headers=AUTH)
        assert bad.status_code == 400 and bad.json()["detail"] == {"parameter": "ctx_size"}
        small = await http.get("/v1/placements?model=builtin:tiny&parallel=0", headers=AUTH)
        assert small.status_code == 400 and small.json()["detail"] == {"parameter": "parallel"}
        other = await http.get("/v1/placements?model=builtin:tiny&device=cuda:0", headers=AUTH)
        assert other.status_code == 400 and "not device" in other.json()["error"]
        odd = await http.get("/v1/placements?model=builtin:tiny&hive=../x", headers=AUTH)
        assert odd.status_code == 400 and odd.json()["detail"] == {"parameter": "hive"}
        unknown = await http.get("/v1/placements?model=builtin:tiny", headers=AUTH)
        assert unknown.status_code == 404, unknown.text
        assert "keeper model download builtin:tiny" in unknown.json()["error"]
        described = (await http.get("/openapi.json", headers=AUTH)).json()
        assert "/v1/placements" in described["paths"]


async def test_the_plan_for_builtin_tiny_is_one_hive_with_its_need_from_the_header(
    rbee_home: Path,
) -> None:
    """Once downloaded, builtin:tiny fits the one hive whole, and its need is its weights
    (from the header the hive lists, with a margin) plus the KV of context × slots."""
    async with (
        queen_with_hive(rbee_home) as (queen, _),
        httpx.AsyncClient(base_url=queen.url, trust_env=False) as http,
    ):
        entry = await _download_tiny(queen.url)
        shape = entry["shape"]
        assert shape["layers"] == len(shape["layer_bytes"]) == 2
        assert sum(shape["layer_bytes"]) + shape["other_bytes"] <= entry["size"]

        answer = await http.get("/v1/placements?model=builtin:tiny")
        assert answer.status_code == 200, answer.text
        plan = answer.json()
        assert plan["model"] == "builtin:tiny" and plan["split"] is False
        assert plan["hives"] == [
            {"hive": "localhost", "layers": [0, 1], "bytes": plan["need_bytes"], "output": True}
        ]
        # the worker's default context (4096, but never beyond the trained window) and slots
        kv = shape["kv_bytes_per_token"] * min(4096, shape["context_length"]) * 2
        weights = sum(shape["layer_bytes"]) + shape["other_bytes"]
        assert weights + kv < plan["need_bytes"] < int(weights * 1.2) + kv
        # 128 tokens in 4 slots hold as much KV as the window's 256 in the default 2
        same_kv = await http.get("/v1/placements?model=tiny&ctx_size=128&parallel=4")
        assert same_kv.json()["need_bytes"] == plan["need_bytes"]  # by catalog id too


async def test_a_hive_lending_512_kib_caps_placement_and_the_plan_names_the_shortfall(
    rbee_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hive started with RBEE_LEND_MEMORY=512KiB reports lend_bytes in its beats (the
    queen's status shows it); builtin:tiny's plan is refused (503, one sentence with its
    need, what the hives lend and the shortfall), and so is starting its worker."""
    monkeypatch.setenv("RBEE_LEND_MEMORY", "512KiB")  # the hive reads it when it starts
    async with (
        queen_with_hive(rbee_home) as (queen, _),
        httpx.AsyncClient(base_url=queen.url, trust_env=False) as http,
    ):
        hives = (await http.get("/v1/status")).json()["hives"]
        assert [h["lend_bytes"] for h in hives if h["hive_id"] == "localhost"] == [LENT]
        await _download_tiny(queen.url)

        refused = await http.get("/v1/placements?model=builtin:tiny")
        assert refused.status_code == 503, refused.text
        body = refused.json()
        assert body["error"].startswith("builtin:tiny needs about ")
        assert "all hives that can take part lend 512 KiB together" in body["error"]
        assert (
            " short; lend more with `keeper hive start NAME --lend-memory SIZE`" in (body["error"])
        )
        assert body["detail"]["lend_bytes"] == LENT
        assert body["detail"]["short_bytes"] == body["detail"]["need_bytes"] - LENT

        async with JobClient(queen.url) as jobs:
            infer: dict[str, object] = {
                "operation": "infer",
                "model": "builtin:tiny",
                "prompt": "hi",
            }
            final = (await run_job(jobs, infer))[-1].data
        assert final["state"] == "failed", final
        # The prompt gets the plan's own sentence: no one hive, and no split, holds it.
        assert final["error"] == body["error"], final


async def test_keeper_explain_prints_the_plan_and_runs_nothing(
    rbee_home: Path, keeper: KeeperRunner
) -> None:
    """`keeper infer --explain` and `keeper worker spawn --explain` print the plan (a table;
    `--json`: the route's JSON) without a prompt, and start no worker; a bad
    `keeper hive start --lend-memory` is a usage error naming the value."""
    async with queen_with_hive(rbee_home) as (queen, _):
        await _download_tiny(queen.url)

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return keeper("--queen-url", queen.url, *args)

        table = await anyio.to_thread.run_sync(run, "infer", "--explain", "--model", "builtin:tiny")
        assert table.returncode == 0, table.stderr
        assert (
            "builtin:tiny needs about" in table.stdout and "fits on hive localhost" in table.stdout
        )
        assert "localhost" in table.stdout and "0-1 (2)" in table.stdout
        as_json = await anyio.to_thread.run_sync(
            run, "--json", "worker", "spawn", "--explain", "--model", "tiny", "--ctx-size", "8192"
        )
        assert as_json.returncode == 0, as_json.stderr
        plan = json.loads(as_json.stdout)
        assert plan["split"] is False and plan["hives"][0]["hive"] == "localhost"
        async with httpx.AsyncClient(base_url=queen.url, trust_env=False) as http:
            assert (await http.get("/v1/status")).json()["workers"] == []  # nothing started
        bad = await anyio.to_thread.run_sync(run, "hive", "start", "--lend-memory", "lots")
        assert bad.returncode == 2, bad.stderr
        assert "--lend-memory 'lots' is not a size; write e.g. 2G, 512M or 1.5GiB" in bad.stderr


async def test_two_hives_lending_512_kib_each_split_builtin_tiny_by_layers(
    rbee_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two real hives lending 512 KiB each (builtin:tiny needs about 780 KiB with its
    256-token window in 2 slots): the plan splits its 2 layers one per hive, the worker
    and the output on the first by id (a tie in what they lend), or on the hive `?hive=`
    names."""
    monkeypatch.setenv("RBEE_LEND_MEMORY", "512KiB")  # both hives read it when they start
    async with (
        queen_with_hive(rbee_home) as (queen, _),
        extra_hive(queen, tmp_path / "gpu2", "gpu2"),
        httpx.AsyncClient(base_url=queen.url, trust_env=False) as http,
    ):
        await _download_tiny(queen.url)  # on localhost only: its listing gives the shape
        answer = await http.get("/v1/placements?model=builtin:tiny")
        assert answer.status_code == 200, answer.text
        plan = answer.json()
        assert plan["split"] is True and plan["worker_hive"] == "gpu2"
        assert [(h["hive"], h["layers"], h["output"]) for h in plan["hives"]] == [
            ("gpu2", [0, 0], True),
            ("localhost", [1, 1], False),
        ]
        assert sum(h["bytes"] for h in plan["hives"]) == plan["need_bytes"]
        assert all(h["bytes"] <= LENT for h in plan["hives"])
        named = (await http.get("/v1/placements?model=builtin:tiny&hive=localhost")).json()
        assert [h["hive"] for h in named["hives"]] == ["localhost", "gpu2"]


def test_keeper_hive_start_lend_memory_reaches_the_hive_and_keeper_status(tmp_path: Path) -> None:
    """`keeper hive start --lend-memory 1.5GiB` starts the hive with that lend: its beats
    carry it and `keeper status` shows it; asking again of the running hive changes
    nothing and says so."""
    chain = Chain(tmp_path / "home")
    chain.start_queen()
    try:
        chain.run(
            "hive", "start", "--port", str(chain.hive_port),
            "--beat-interval", str(chain.beat_s), "--lend-memory", "1.5GiB",
        )  # fmt: skip

        def lends() -> list[object]:
            status = json.loads(chain.run("--json", "status").stdout)["result"]
            return [h.get("lend_bytes") for h in status["hives"] if h.get("last_seen")]

        wait_until(lambda: lends() == [int(1.5 * (1 << 30))], "the hive's beat with its lend")
        table = chain.run("status").stdout
        assert "lends" in table and "1.5 GiB" in table
        again = chain.run("hive", "start", "--lend-memory", "2G")
        assert "--lend-memory does not change what it lends" in again.stdout + again.stderr
        assert lends() == [int(1.5 * (1 << 30))]
    finally:
        chain.stop()
