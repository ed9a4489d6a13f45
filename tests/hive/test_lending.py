"""A real hive lends memory to a split: `rpc_serve` starts one RPC server per split on the
hive's loopback, `rpc_stop` stops it, and the hive's exit takes its servers along; a
split across machines gets an SSH grant for that server alone (hive/_rpc_link.py)."""

from __future__ import annotations

import getpass
from pathlib import Path

import httpx
import psutil
import pytest

from jobs import InvalidRequest
from jobs.client import JobClient
from tests.support import (
    KeeperRunner,
    free_port,
    hive_token,
    link_sshd,
    run_job,
    spawn_hive,
    wait_until,
)


def listeners(endpoint: str) -> list[str]:
    """The addresses anything listens on at `endpoint`'s port (any interface)."""
    port = int(endpoint.rsplit(":", 1)[1])
    return [
        conn.laddr.ip
        for conn in psutil.net_connections("tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    ]


@pytest.mark.anyio
async def test_a_split_gets_one_loopback_server_until_it_is_stopped(rbee_home: Path) -> None:
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        served = await run_job(client, {"operation": "rpc_serve", "split_id": "s1"})
        again = await run_job(client, {"operation": "rpc_serve", "split_id": "s1"})
        other = await run_job(client, {"operation": "rpc_serve", "split_id": "s2"})
        first = served[-1].data["result"]
        assert served[-1].state == "completed", served[-1].data
        assert again[-1].data["result"]["endpoint"] == first["endpoint"]  # the same server
        assert other[-1].data["result"]["endpoint"] != first["endpoint"]
        assert listeners(first["endpoint"]) == ["127.0.0.1"]
        said = " ".join(e.data.get("human", "") for e in served)
        assert "Lending this hive's memory to split s1" in said

        stopped = await run_job(client, {"operation": "rpc_stop", "split_id": "s1"})
        assert stopped[-1].state == "completed"
        assert listeners(first["endpoint"]) == []
        assert not psutil.pid_exists(first["pid"]) or (
            psutil.Process(first["pid"]).status() == psutil.STATUS_ZOMBIE
        )
        with pytest.raises(InvalidRequest, match="lends nothing to split s1") as refused:
            await client.submit({"operation": "rpc_stop", "split_id": "s1"})
        assert refused.value.status == 404
        second_pid = other[-1].data["result"]["pid"]
    # The hive stopped (SIGTERM): the server it still ran for s2 went with it.
    wait_until(lambda: not psutil.pid_exists(second_pid), "the hive's RPC server to exit")


FOREIGN = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop\n"
)


@pytest.mark.anyio
async def test_a_grant_confines_the_link_key_to_its_server_until_stopped(
    rbee_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rpc_serve with a grant_key writes one restricted line for the server's port into the
    authorized_keys the hive is told of, keeps the user's own line, and rpc_stop removes
    it; lines an earlier run of this hive left are gone once it starts, another hive's
    stay; a key that is not one OpenSSH line is refused before anything is written."""
    keys = tmp_path / "authorized_keys"
    leftover = f'restrict,permitopen="127.0.0.1:9" {FOREIGN.split(" me@")[0]} rbee-rpc-link:'
    keys.write_text(f"{FOREIGN}{leftover}localhost@split-old\n{leftover}gpu2@split-x\n")
    monkeypatch.setenv("RBEE_AUTHORIZED_KEYS", str(keys))
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        assert keys.read_text() == f"{FOREIGN}{leftover}gpu2@split-x\n"  # its own leftover went
        async with httpx.AsyncClient(trust_env=False) as http:
            found = await http.get(
                f"{hive.url}/v1/capabilities", headers={"authorization": f"Bearer {hive.token}"}
            )
        key = found.json()["rpc_link_key"]
        assert key.startswith("ssh-ed25519 ")

        served = await run_job(
            client, {"operation": "rpc_serve", "split_id": "s1", "grant_key": key}
        )
        assert served[-1].state == "completed", served[-1].data
        result = served[-1].data["result"]
        assert result["ssh_user"] == getpass.getuser()
        port = result["endpoint"].rsplit(":", 1)[1]
        lines = keys.read_text().splitlines(keepends=True)
        assert lines[:2] == [FOREIGN, f"{leftover}gpu2@split-x\n"]  # kept byte for byte
        (granted,) = lines[2:]
        assert granted.startswith(f'restrict,port-forwarding,permitopen="127.0.0.1:{port}",')
        assert 'command="false"' in granted
        assert granted.split()[1:3] == key.split()[:2]
        assert granted.rstrip().endswith("rbee-rpc-link:localhost@s1")

        with pytest.raises(InvalidRequest, match="grant_key") as refused:
            await client.submit(
                {"operation": "rpc_serve", "split_id": "s2", "grant_key": f"{key}\n{key}"}
            )
        assert refused.value.status == 422

        stopped = await run_job(client, {"operation": "rpc_stop", "split_id": "s1"})
        assert stopped[-1].state == "completed"
        assert keys.read_text() == f"{FOREIGN}{leftover}gpu2@split-x\n"


@pytest.mark.anyio
async def test_a_link_to_a_peer_whose_host_key_is_unknown_fails_the_spawn_naming_it(
    rbee_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """worker_spawn with an rpc_link to a peer sshd missing from known_hosts: the job
    fails in one sentence naming the peer and how to see its key; no worker starts."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    monkeypatch.setenv("RBEE_KNOWN_HOSTS", str(known_hosts))
    (tmp_path / "sshd").mkdir()
    with link_sshd(tmp_path / "sshd", free_port()) as sshd:
        async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
            link = {"hive_id": "gpu2", "ssh_host": "127.0.0.1", "ssh_port": sshd.port,
                    "ssh_user": "root", "remote_port": 9}  # fmt: skip
            events = await run_job(
                client,
                {"operation": "worker_spawn", "model": "builtin:tiny", "rpc_links": [link],
                 "local_share": 1},
            )  # fmt: skip
            final = events[-1].data
            assert final["state"] == "failed", final
            assert f"peer gpu2 (root@127.0.0.1:{sshd.port}) is not in {known_hosts}" in str(
                final["error"]
            )
            assert f"ssh-keyscan -p {sshd.port} 127.0.0.1" in str(final["error"])
            listed = await run_job(client, {"operation": "worker_list"})
            assert listed[-1].data["result"]["workers"] == []


def test_a_hive_that_can_lend_prints_no_third_party_warning(keeper: KeeperRunner) -> None:
    """asyncssh (for the links) warns about cryptography's deprecations when imported:
    neither `keeper hive start` nor the hive's log, once its link key is made (its
    capabilities), shows that to the user."""
    port = free_port()
    env_url = f"http://127.0.0.1:{free_port()}"  # no queen: the hive retries its beats
    started = keeper("--queen-url", env_url, "hive", "start", "--port", str(port))
    try:
        assert started.returncode == 0, started.stderr
        assert "Warning" not in started.stdout + started.stderr
        token = hive_token(keeper.home)
        answer = httpx.get(
            f"http://127.0.0.1:{port}/v1/capabilities",
            headers={"authorization": f"Bearer {token}"},
            trust_env=False,
            timeout=30,
        )
        assert answer.json()["rpc_link_key"].startswith("ssh-ed25519 ")
        log = (keeper.home / "logs" / "hive-localhost.log").read_text()
        assert "ready" in log and "Warning" not in log
    finally:
        keeper("--queen-url", env_url, "hive", "stop")
