"""One model split across three hives: the worker's hive on the queen's machine and two
peers, each a "machine" of its own (a network namespace with its own address and sshd).
None lends enough alone, nor any two together, so the plan takes all three; the answer
through the queen at temperature 0 is, token for token, that of an unsplit worker of the
same file; and on each peer nothing but sshd and the hive listens beyond loopback (its
RPC server is on its 127.0.0.1, reached only over SSH).

The model is an 8-layer GGUF (tests/support/_gguf8.py): builtin:tiny's 2 layers cannot
go three ways.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.support import (
    Machine,
    Queen,
    download_on,
    hive_at,
    listeners,
    peer_machines,
    placement,
    rpc_listeners,
    spawn_queen,
    split_answer,
    unsplit_answer,
    write_gguf8,
)

pytestmark = [pytest.mark.slow, pytest.mark.anyio]
TOKEN = "split-three-test-token"  # the queen's and the namespaced hives' (beyond loopback)
# The 8-layer model needs about 2.53 MiB (2 653 412 bytes: 8 layers of 311 859 with the
# KV of 256 trained tokens x 2 slots, and 158 540 outside them, kept by the worker). The
# worker's hive lends most (the plan puts the worker there); each hive holds 3 layers
# whole (layers do not straddle hives), and no two hives lend enough: 1100 + 950 KiB.
WORKER_LENT = "1100KiB"
PEER_LENT = "950KiB"


def assert_only_sshd_and_hive_beyond_loopback(peer: Machine, hive_url: str) -> None:
    """In `peer`'s namespace every listener off loopback is its sshd or its hive's HTTP
    port; its RPC server (the port its grant names) listens on 127.0.0.1 only."""
    hive_port = int(hive_url.rsplit(":", 1)[1])
    found = listeners(peer.ns)
    for pid, address, port, command in found:
        if address not in ("127.0.0.1", "::1"):
            assert "sshd" in command or (address, port) == (peer.ip, hive_port), (
                peer.ns, pid, address, port, command,
            )  # fmt: skip
    rpc = rpc_listeners(peer.authorized_keys, found)
    assert [entry[1] for entry in rpc] == ["127.0.0.1"], (peer.ns, rpc)
    assert "hive._rpc_host" in rpc[0][3], rpc


async def test_an_8_layer_model_split_across_three_hives_answers_as_one_worker_would(
    rbee_home: Path, tmp_path: Path
) -> None:
    with peer_machines(tmp_path, ["b", "c"]) as (b, c):  # skips first where it cannot
        model = write_gguf8(tmp_path / "eight.gguf")
        expected = await unsplit_answer(tmp_path / "reference", model)
        assert expected, "the unsplit worker answered nothing"
        known_hosts = tmp_path / "a-known_hosts"
        known_hosts.write_text(b.known_hosts_line + c.known_hosts_line)
        async with (
            spawn_queen(rbee_home, "--bind", b.host_ip, "--token", TOKEN) as running,
            contextlib.AsyncExitStack() as stack,
        ):
            queen = Queen(running.url, TOKEN, rbee_home)
            await stack.enter_async_context(
                hive_at(queen, rbee_home, "localhost", "127.0.0.1",
                        env={"RBEE_LEND_MEMORY": WORKER_LENT,
                             "RBEE_KNOWN_HOSTS": str(known_hosts)})
            )  # fmt: skip
            peer_urls: dict[str, str] = {}
            for peer, hive_id in ((b, "boxb"), (c, "boxc")):
                hive = await stack.enter_async_context(
                    hive_at(queen, peer.home, hive_id, peer.ip, *peer.prefix,
                            env={"RBEE_LEND_MEMORY": PEER_LENT, "RBEE_TOKEN": TOKEN,
                                 "RBEE_AUTHORIZED_KEYS": str(peer.authorized_keys)})
                )  # fmt: skip
                peer_urls[hive_id] = hive.url
            await download_on(queen, model, ["localhost", "boxb", "boxc"])

            plan = await placement(queen, model)
            assert plan["split"] and plan["worker_hive"] == "localhost", plan
            assert sorted(h["hive"] for h in plan["hives"]) == ["boxb", "boxc", "localhost"], plan

            said, tokens = await split_answer(queen, model)
            assert "splitting it by layers" in said, said
            for hive_id in ("boxb", "boxc"):
                assert f"Hive localhost reaches hive {hive_id}'s RPC server over SSH" in said
            assert tokens == expected

            assert_only_sshd_and_hive_beyond_loopback(b, peer_urls["boxb"])
            assert_only_sshd_and_hive_beyond_loopback(c, peer_urls["boxc"])
