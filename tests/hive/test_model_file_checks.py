"""A local model path is checked before the hive trusts it, and hashing it can be stopped.

Each file here would once have been registered (a device, a FIFO, a sparse 200 GB file, a
link to a file its maker may not read, a file whose content is a secret), or hashed for
minutes with no way to stop it short of SIGKILL. Now each is refused in under a second
with one sentence that names the file and never its content, and a hash in progress stops
within a second of a cancel or of SIGTERM to the hive.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import gguf.constants  # noqa: F401 - imported here, so a check's time is not numpy's import
import httpx
import psutil
import pytest

from hive.errors import ModelFileRefused
from hive.modelfile import check_model_file, hash_model_file
from hive.tiny_model import write_tiny_model
from jobs.client import JobClient
from tests.support import run_job, spawn_hive

pytestmark = pytest.mark.anyio

SECRET = "root:$6$s3cr3t-hash-nobody-may-see:19000:0:99999:7:::"
NOBODY = 65534
BIG_BYTES = 4 << 30  # hashed at ~1 GB/s by one core: seconds, so a stop is seen


def tiny(folder: Path) -> Path:
    path = folder / "tiny.gguf"
    write_tiny_model(path)
    return path


def link_to_dev_zero(folder: Path) -> Path:
    (folder / "zero.gguf").symlink_to("/dev/zero")
    return folder / "zero.gguf"


def fifo(folder: Path) -> Path:
    os.mkfifo(folder / "pipe.gguf")
    return folder / "pipe.gguf"


def sparse_gguf(folder: Path) -> Path:
    """GGUF's magic, then a 200 GB hole: no byte of it was ever written."""
    path = folder / "sparse.gguf"
    with path.open("wb") as f:
        f.write(b"GGUF")
        f.truncate(200 << 30)
    return path


def sparse_zeros(folder: Path) -> Path:
    path = folder / "holes.gguf"
    path.touch()
    os.truncate(path, 200 << 30)
    return path


def secret_file(folder: Path) -> Path:
    """A link to a file holding a secret (as /etc/shadow does), which a root hive can read."""
    secret = folder / "shadow"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    (folder / "shadow.gguf").symlink_to(secret)
    return folder / "shadow.gguf"


def lent_link(folder: Path) -> Path:
    """nobody's link to root's 0600 model: it must not borrow a root hive's reach."""
    model = tiny(folder)
    model.chmod(0o600)
    (folder / "lent.gguf").symlink_to(model)
    os.lchown(folder / "lent.gguf", NOBODY, NOBODY)
    return folder / "lent.gguf"


def truncated(folder: Path) -> Path:
    data = tiny(folder).read_bytes()
    (folder / "cut.gguf").write_bytes(data[: len(data) // 2])
    return folder / "cut.gguf"


def appended(folder: Path) -> Path:
    data = tiny(folder).read_bytes()
    (folder / "grown.gguf").write_bytes(data + SECRET.encode() * 100)
    return folder / "grown.gguf"


def folder_named_gguf(folder: Path) -> Path:
    (folder / "dir.gguf").mkdir()
    return folder / "dir.gguf"


REFUSED: dict[str, tuple[Callable[[Path], Path], str]] = {
    "/dev/zero": (link_to_dev_zero, "it is a character device, not a regular file"),
    "FIFO": (fifo, "it is a FIFO (named pipe), not a regular file"),
    "sparse GGUF": (sparse_gguf, "it is sparse: 200.0 GiB long"),
    "sparse zeros": (sparse_zeros, "it does not start with the GGUF magic bytes"),
    "secret": (secret_file, "it does not start with the GGUF magic bytes"),
    "lent link": (lent_link, f"the link's owner (uid {NOBODY}) may not read that file"),
    "truncated": (truncated, "it is truncated: its 21 tensors need"),
    "appended": (appended, "so something was added to it"),
    "folder": (folder_named_gguf, "it is a folder, not a regular file"),
}


@pytest.mark.skipif(os.geteuid() != 0, reason="lends a link to nobody: needs root")
@pytest.mark.parametrize("kind", sorted(REFUSED))
async def test_a_file_that_is_not_a_model_is_refused_in_under_a_second(
    tmp_path: Path, kind: str
) -> None:
    """Each file is refused within a second with one sentence naming it and the reason,
    without a word of its content."""
    make, reason = REFUSED[kind]
    path = make(tmp_path)
    started = time.monotonic()
    with pytest.raises(ModelFileRefused) as refused:
        await check_model_file(path)
    took = time.monotonic() - started
    message = str(refused.value)
    assert took < 1.0, f"{kind} took {took:.2f} s"
    assert message.startswith(f"cannot use {path}") and reason in message, message
    assert "\n" not in message and "s3cr3t" not in message and refused.value.status == 400


async def test_a_real_model_passes_and_its_hash_is_its_sha256(tmp_path: Path) -> None:
    """The builtin tiny model passes every check, and its hash is the file's sha256."""
    import hashlib

    path = tiny(tmp_path)
    checked = await check_model_file(path)
    assert checked.tensors == 21 and checked.size == path.stat().st_size
    size, sha256 = await hash_model_file(checked)
    assert (size, sha256) == (checked.size, hashlib.sha256(path.read_bytes()).hexdigest())


@pytest.mark.skipif(os.geteuid() != 0, reason="lends a link to nobody: needs root")
async def test_the_hive_answers_400_and_registers_none_of_them(
    rbee_home: Path, tmp_path: Path
) -> None:
    """Through a real hive, each of those files gets 400 from `POST /v1/jobs` with the
    sentence (content never echoed), and the catalog stays empty."""
    paths = {}
    for kind, (make, _) in REFUSED.items():
        folder = tmp_path / kind.replace(" ", "-").replace("/", "")
        folder.mkdir()
        paths[kind] = make(folder)
    async with spawn_hive(rbee_home) as hive:
        headers = {"Authorization": f"Bearer {hive.token}"} if hive.token else {}
        async with httpx.AsyncClient(base_url=hive.url, headers=headers, trust_env=False) as http:
            for kind, path in paths.items():
                operation = {"operation": "model_download", "model": str(path)}
                answer = await http.post("/v1/jobs", json=operation)
                assert answer.status_code == 400, (kind, answer.text)
                body = answer.json()
                assert body["error"].startswith(f"cannot use {path}"), body
                assert REFUSED[kind][1] in body["error"] and "s3cr3t" not in answer.text
        async with JobClient(hive.url, token=hive.token) as client:
            listed = await run_job(client, {"operation": "model_list"})
    assert listed[-1].data["result"]["models"] == []


def big_gguf(folder: Path) -> Path:
    """A GGUF of one f32 tensor filling BIG_BYTES, its blocks allocated but never written
    (fallocate): a real, non-sparse file that costs no writing, and reads as zeros."""
    path = folder / "big.gguf"

    def header(elements: int) -> bytes:  # version 3, 1 tensor, no metadata; "w": 1-D, f32
        counts = b"GGUF" + struct.pack("<IQQ", 3, 1, 0)
        return counts + struct.pack("<Q", 1) + b"w" + struct.pack("<IQIQ", 1, elements, 0, 0)

    start = len(header(0)) + (-len(header(0))) % 32  # the data starts aligned to 32
    elements = (BIG_BYTES - start) // 4
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, start + elements * 4)
        os.pwrite(fd, header(elements), 0)
    finally:
        os.close(fd)
    return path


def on_a_disk(folder: Path) -> bool:
    """Whether `folder` is on a disk filesystem with room, where fallocate costs neither
    memory (tmpfs) nor writes."""
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    best = max((m for m in mounts if str(folder).startswith(m[1])), key=lambda m: len(m[1]))
    stat = os.statvfs(folder)
    return best[2] in ("ext4", "xfs", "btrfs") and stat.f_bavail * stat.f_frsize > 4 * BIG_BYTES


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A 4 GiB GGUF on a disk filesystem (fallocated), for the hashing tests."""
    if not Path("/proc/mounts").exists() or not on_a_disk(tmp_path):
        pytest.skip("needs a Linux disk filesystem with 16 GiB free for a fallocated 4 GiB model")
    return big_gguf(tmp_path)


async def start_hashing(client: JobClient, model: Path) -> str:
    """Submit the registration of `model` and return once its hash has started."""
    job_id = await client.submit({"operation": "model_download", "model": str(model)})
    async for event in client.stream(job_id):
        if event.kind == "narration" and event.data["action"] == "model_hash":
            return job_id
    raise AssertionError("the job ended before hashing")


async def reads_stop(process: psutil.Process, *, within_s: float) -> float:
    """Seconds until `process` reads less than 1 MiB in 0.1 s (hashing reads ~100 MB)."""
    started = time.monotonic()
    with anyio.fail_after(within_s):
        while True:
            before = process.io_counters().read_chars
            await anyio.sleep(0.1)
            if process.io_counters().read_chars - before < 1 << 20:
                return time.monotonic() - started


async def test_cancelling_a_hashing_job_stops_the_hash_within_a_second(
    rbee_home: Path, model: Path
) -> None:
    """DELETE of a job hashing a 4 GiB model ends it `cancelled`, and the hive stops
    reading the file within a second (it used to read on for as long as the hash took)."""
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        process = psutil.Process(hive.process.pid)
        job_id = await start_hashing(client, model)
        await client.cancel(job_id)
        took = await reads_stop(process, within_s=1.0)
        assert (await client.get_job(job_id))["state"] == "cancelled"
        listed = await run_job(client, {"operation": "model_list"})
    print(f"hashing stopped {took:.2f} s after the cancel")
    assert all(m["status"] != "available" for m in listed[-1].data["result"]["models"])


async def test_sigterm_during_a_hash_stops_the_hive_without_sigkill(
    rbee_home: Path, model: Path
) -> None:
    """SIGTERM to a hive hashing a 4 GiB model: it exits 0 within a few seconds by itself."""
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        await start_hashing(client, model)
        started = time.monotonic()
        hive.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(3.0):
            code = await hive.process.wait()
        took = time.monotonic() - started
    print(f"the hive exited {took:.2f} s after SIGTERM")
    assert code == 0


async def test_deleting_a_model_while_it_is_hashed_stops_the_hash_within_a_second(
    rbee_home: Path, model: Path
) -> None:
    """model_delete of a model being hashed (listed `downloading`) stops the job hashing it
    (`cancelled`), the hive stops reading within a second, and the model is gone."""
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        process = psutil.Process(hive.process.pid)
        job_id = await start_hashing(client, model)
        listed = await run_job(client, {"operation": "model_list"})
        assert [m["status"] for m in listed[-1].data["result"]["models"]] == ["downloading"]
        started = time.monotonic()
        deleted = await run_job(client, {"operation": "model_delete", "model": "big"})
        await reads_stop(process, within_s=1.0)
        took = time.monotonic() - started
        assert (await client.get_job(job_id))["state"] == "cancelled"
        after = await run_job(client, {"operation": "model_list"})
    print(f"hashing stopped {took:.2f} s after the delete was asked")
    assert took < 2.0 and deleted[-1].state == "completed", deleted[-1].data
    assert after[-1].data["result"]["models"] == [] and await anyio.Path(model).exists()


async def test_a_registered_file_changed_since_is_refused_before_a_worker_loads_it(
    rbee_home: Path, tmp_path: Path
) -> None:
    """A local model registered when it was a GGUF and overwritten since with something
    else: worker_spawn answers 400 naming the file, and no worker is started."""
    model = tiny(tmp_path)
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        added = await run_job(client, {"operation": "model_download", "model": str(model)})
        assert added[-1].state == "completed", added[-1].data
        model.write_text(SECRET + "\n")
        headers = {"Authorization": f"Bearer {hive.token}"} if hive.token else {}
        async with httpx.AsyncClient(base_url=hive.url, headers=headers, trust_env=False) as http:
            answer = await http.post(
                "/v1/jobs", json={"operation": "worker_spawn", "model": "tiny"}
            )
        listed = await run_job(client, {"operation": "worker_list"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith(f"cannot use {model} as a model: it does not start")
    assert "s3cr3t" not in answer.text and listed[-1].data["result"]["workers"] == []
