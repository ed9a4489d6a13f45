"""A split whose worker runs on the far side: the hive that lends most is on another
"machine" (a network namespace with its own address), so the worker starts there and
reaches the layers lent by the hive on the queen's machine over SSH, through an sshd of
the queen's machine. The answer at temperature 0 is that of an unsplit worker, and the
queen's machine's RPC server listens on its 127.0.0.1 only.

The model is the 8-layer GGUF (tests/support/_gguf8.py); see test_split_three.py for its
sizes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.support import (
    Queen,
    download_on,
    hive_at,
    home_sshd,
    listeners_here,
    peer_machines,
    placement,
    rpc_listeners,
    spawn_queen,
    split_answer,
    unsplit_answer,
    write_gguf8,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
TOKEN = "split-far-test-token"
# The 8 layers need ~2.53 MiB with the worker's 155 KiB outside them; each layer ~305 KiB.
# The far hive holds those and 5 layers (1680 KiB), the queen's machine's the other 3
# (915 KiB); neither lends enough alone.
FAR_LENT = "1700KiB"
HOME_LENT = "1000KiB"


async def test_a_worker_on_another_machine_reaches_the_queen_machines_layers_over_ssh(
    rbee_home: Path, tmp_path: Path
) -> None:
    with (
        peer_machines(tmp_path, ["f"]) as (far,),  # skips first where it cannot
        home_sshd(tmp_path / "home-sshd", far) as sshd,
    ):
        model = write_gguf8(tmp_path / "eight.gguf")
        expected = await unsplit_answer(tmp_path / "reference", model)
        known_hosts = tmp_path / "far-known_hosts"
        known_hosts.write_text(sshd.known_hosts_line)
        async with (
            spawn_queen(rbee_home, "--bind", far.host_ip, "--token", TOKEN) as running,
            contextlib.AsyncExitStack() as stack,
        ):
            queen = Queen(running.url, TOKEN, rbee_home)
            # The queen's machine's hive listens where the far machine reaches it, so its
            # sshd is found at the same address (the hive URL's host, port 22).
            await stack.enter_async_context(
                hive_at(queen, rbee_home, "home", far.host_ip,
                        env={"RBEE_LEND_MEMORY": HOME_LENT, "RBEE_TOKEN": TOKEN,
                             "RBEE_AUTHORIZED_KEYS": str(sshd.authorized_keys)})
            )  # fmt: skip
            await stack.enter_async_context(
                hive_at(queen, far.home, "farbox", far.ip, *far.prefix,
                        env={"RBEE_LEND_MEMORY": FAR_LENT, "RBEE_TOKEN": TOKEN,
                             "RBEE_KNOWN_HOSTS": str(known_hosts)})
            )  # fmt: skip
            await download_on(queen, model, ["home", "farbox"])
            plan = await placement(queen, model)
            assert plan["split"] and plan["worker_hive"] == "farbox", plan

            said, tokens = await split_answer(queen, model)
            assert "Hive farbox reaches hive home's RPC server over SSH" in said, said
            assert tokens == expected

            rpc = rpc_listeners(sshd.authorized_keys, listeners_here())
            assert [entry[1] for entry in rpc] == ["127.0.0.1"], rpc
            assert "hive._rpc_host" in rpc[0][3], rpc
