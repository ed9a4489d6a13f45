"""Operation -> handler for the hive: workers and models.

Model operations check their arguments before they report ready (`Upstream`), so a
model id that names a path is answered 400 by `POST /v1/jobs` itself, not only recorded
as a failed job.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from hive._links import Links
from hive.capabilities import capabilities
from hive.catalog import (
    REF_PREFIXES,
    Catalog,
    ModelEntry,
    ModelRef,
    check_id,
    new_entry,
    parse_ref,
)
from hive.download import download
from hive.errors import ChecksumMismatch, DownloadError, ModelInUse
from hive.modelfile import check_model_file, hash_model_file
from hive.smollm2 import fetch_smollm2
from hive.supervisor import Supervisor
from hive.tiny_model import write_tiny_model
from jobs import (
    HiveStatus,
    InvalidRequest,
    ModelDelete,
    ModelDownload,
    ModelList,
    WorkerList,
    WorkerSpawn,
    WorkerStop,
    storage_error,
)
from jobs.server import Handler, Job, Upstream
from narration_core import Narrator, redact

NARRATE = Narrator("rbee-hive")
HF_TOKEN_ENV = "HF_TOKEN"  # sent as a bearer token to huggingface.co only
HF_HOSTS = ("https://huggingface.co/",)
FETCH_STOP_WAIT_S = 5.0  # how long model_delete waits for a fetch it cancelled to end


def create_router(
    catalog: Catalog, supervisor: Supervisor, *, links: Links | None = None
) -> Mapping[str, Handler]:
    """The handlers this hive serves, closed over its catalog and supervisor (and the SSH
    links a split's worker reaches peers on other machines through)."""
    fetching: dict[str, Job] = {}  # model id -> the job downloading or hashing it

    async def worker_spawn(op: WorkerSpawn, job: Job) -> dict[str, Any]:
        """Spawn a worker for a catalog id, or for a ref: a ref the catalog lacks is fetched
        first (narrated into this job), as `keeper infer` fetches it."""
        entry = catalog.find(op.model)
        fetch = None
        if entry is None or entry.status != "available":
            if not op.model.startswith(REF_PREFIXES) and not op.model.endswith(".gguf"):
                entry = catalog.resolve(op.model)  # an id the catalog lacks: raises, 404
            fetch = await _checked_ref(op.model)
        else:  # checked again: the file may have changed since it was registered
            await check_model_file(Path(entry.path))
        found = await anyio.to_thread.run_sync(capabilities)  # what /v1/capabilities says
        if op.device not in found["devices"]:
            raise InvalidRequest(
                f"this hive has no device {op.device!r}; it has: {', '.join(found['devices'])}",
                detail={"device": op.device, "devices": found["devices"]},
                status=400,
            )
        if op.rpc_links and links is None:
            raise InvalidRequest(
                "this hive opens no SSH links for splits; give peers on this machine in "
                "rpc_servers instead of rpc_links",
                detail={"field": "rpc_links"},
                status=400,
            )
        job.mark_ready()
        if fetch is not None:
            NARRATE.action("model_download").target(op.model).human(
                f"{op.model} is not in this hive's catalog yet; fetching it first"
            ).emit()
            entry = await _fetch(*fetch, job)
        assert entry is not None
        held = None
        if op.rpc_links:  # peers on other machines: their SSH links first
            assert links is not None
            held = await links.open(op.rpc_links)
        try:
            worker = await supervisor.spawn(
                entry.id,
                Path(entry.path),
                op.device,
                job_id=job.id,
                parallel=op.parallel,
                threads=op.threads,
                ctx_size=op.ctx_size,
                rpc_servers=[peer.endpoint for peer in op.rpc_servers]
                + ([] if held is None else held.endpoints),
                rpc_names=[peer.hive_id or "" for peer in op.rpc_servers]
                + [link.hive_id for link in op.rpc_links],
                tensor_split=_shares(op),
            )
        except BaseException:
            if held is not None:
                held.close()
            raise
        if held is not None:
            held.watch(worker, supervisor)
        return worker.to_dict()

    async def worker_list(op: WorkerList, job: Job) -> dict[str, Any]:
        workers = supervisor.workers()
        for w in workers:
            NARRATE.action("worker_list").target(w.id).human(
                f"{w.id}: {w.model_id} on {w.device} at {w.url}, {w.state} (pid {w.pid})"
            ).emit()
        if not workers:
            NARRATE.action("worker_list").human("No workers running on this hive").emit()
        return {"workers": [w.to_dict() for w in workers]}

    async def worker_stop(op: WorkerStop, job: Job) -> dict[str, Any]:
        NARRATE.action("worker_stop").target(op.worker_id).human(
            f"Stopping worker {op.worker_id}"
        ).emit()
        worker = await supervisor.stop(op.worker_id)
        NARRATE.action("worker_stop").target(op.worker_id).human(
            f"Worker {op.worker_id} stopped (exit {worker.returncode})"
        ).emit()
        return {"worker_id": worker.id, "returncode": worker.returncode}

    async def model_download(op: ModelDownload, job: Job) -> dict[str, Any]:
        ref, existing = await _checked_ref(op.model)
        job.mark_ready()
        if existing is not None and existing.status == "available":
            NARRATE.action("model_download").target(existing.id).human(
                f"{op.model} is already in the catalog as {existing.id}"
            ).emit()
            return existing.to_dict()
        return (await _fetch(ref, existing, job)).to_dict()

    async def _checked_ref(model: str) -> tuple[ModelRef, ModelEntry | None]:
        """The parsed ref and its catalog entry, if any, once it may be fetched: raises
        InvalidRequest (400 not a ref or no such local file, 409 being fetched already)
        before the job reports ready."""
        ref = parse_ref(model)
        existing = catalog.find(ref.source)
        if existing is not None and existing.status == "downloading":
            raise InvalidRequest(
                f"{model} is already being downloaded; wait for that job", status=409
            )
        if ref.path is not None and (existing is None or existing.status != "available"):
            await _check_file(ref.path)
            await check_model_file(ref.path)
        return ref, existing

    async def _fetch(ref: ModelRef, existing: ModelEntry | None, job: Job) -> ModelEntry:
        model_id = existing.id if existing is not None else catalog.new_id(ref)
        fetching[model_id] = job  # what `model_delete` cancels while the model is fetched
        try:
            return await _add(ref, model_id)
        except OSError as exc:  # the model or the catalog could not be written
            raise storage_error(catalog.folder, exc) from exc
        finally:
            fetching.pop(model_id, None)

    async def _add(ref: ModelRef, model_id: str) -> ModelEntry:
        if ref.kind == "local":
            return await _register_local(ref, model_id)
        path = catalog.file_for(model_id)
        entry = new_entry(model_id, ref, path, owned=True)
        catalog.put(entry)
        try:
            if ref.kind == "builtin" and ref.name == "smollm2":
                size, sha256 = await fetch_smollm2(path, label=model_id)
            elif ref.kind == "builtin":
                NARRATE.action("model_download").target(model_id).human(
                    f"Writing {ref.source} (random weights, seeded) to {path}"
                ).emit()
                await anyio.to_thread.run_sync(write_tiny_model, path)
                size, sha256 = await hash_model_file(await check_model_file(path))
            else:
                assert ref.url is not None
                NARRATE.action("model_download").target(model_id).human(
                    f"Downloading {ref.source} to {path}"
                ).emit()
                done = await download(
                    ref.url,
                    path,
                    headers=_auth_headers(ref),
                    expected_sha256=ref.expected_sha256,
                    label=model_id,
                )
                size, sha256 = done.size, done.sha256
        except ChecksumMismatch:
            catalog.remove(model_id)  # wrong bytes: nothing is registered
            raise
        except DownloadError as exc:
            entry.status, entry.error = "failed", redact(str(exc))  # catalog.json keeps it
            _keep_failed(entry)  # the .part stays: downloading again resumes
            raise
        except OSError as exc:  # disk full: the download removed its .part (download.py)
            entry.status, entry.error = "failed", redact(str(storage_error(catalog.folder, exc)))
            _keep_failed(entry)
            raise
        except BaseException:  # cancelled (or a bug): record it; a .part resumes
            entry.status, entry.error = "failed", "interrupted; download again to resume"
            _keep_failed(entry)
            raise
        entry.size, entry.sha256, entry.status = size, sha256, "available"
        catalog.put(entry)
        NARRATE.action("model_ready").target(model_id).human(
            f"Model {model_id} available ({size / 1e6:.1f} MB, sha256 {sha256[:12]}…)"
        ).emit()
        return entry

    def _keep_failed(entry: ModelEntry) -> None:
        """Record a failed entry; on a full disk it stays failed in memory only (a restart
        reads the saved `downloading` as failed too), and the first error is the one told."""
        with contextlib.suppress(OSError):
            catalog.put(entry)

    async def _register_local(ref: ModelRef, model_id: str) -> ModelEntry:
        """Check the user's file (ModelFileRefused: 400 naming it, never the hive's disk),
        hash it (a cancel stops the hash within a chunk) and register the file checked."""
        assert ref.path is not None
        checked = await check_model_file(ref.path)
        entry = new_entry(model_id, ref, checked.target, owned=False)
        catalog.put(entry)  # listed as `downloading` while it is hashed; deletable
        NARRATE.action("model_hash").target(model_id).human(
            f"Hashing {checked.target} ({checked.size / 1e6:.1f} MB, {checked.tensors} tensors)"
        ).emit()
        try:
            size, sha256 = await hash_model_file(checked)
        except BaseException:  # cancelled, or the file changed: nothing of it is kept
            if catalog.find(model_id) is entry:
                with contextlib.suppress(OSError):
                    catalog.remove(model_id)
            raise
        entry.size, entry.sha256, entry.status = size, sha256, "available"
        catalog.put(entry)
        NARRATE.action("model_ready").target(model_id).human(
            f"Registered {ref.path} as {model_id} (not copied; {size / 1e6:.1f} MB)"
        ).emit()
        return entry

    async def model_list(op: ModelList, job: Job) -> dict[str, Any]:
        entries = catalog.entries()
        for e in entries:
            size = f"{e.size / 1e6:.1f} MB" if e.size is not None else "size unknown"
            NARRATE.action("model_list").target(e.id).human(
                f"{e.id}: {e.status}, {size}, from {e.source}"
            ).emit()
        if not entries:
            NARRATE.action("model_list").human("The catalog is empty").emit()
        return {"models": [e.to_dict() for e in entries]}

    async def model_delete(op: ModelDelete, job: Job) -> dict[str, Any]:
        entry = catalog.find(op.model)
        if entry is None:
            if not op.model.startswith(REF_PREFIXES):
                check_id(op.model)  # a path posing as an id: 400
            raise InvalidRequest(
                f"model {op.model!r} is not in this hive's catalog; `keeper model list` "
                "shows what it has",
                detail={"model": op.model},
                status=404,
            )
        users = supervisor.using(entry.id)
        if users:
            raise ModelInUse(entry.id, users)
        job.mark_ready()
        if (fetch := fetching.get(entry.id)) is not None:  # stop its download or hash first
            NARRATE.action("model_delete").target(entry.id).human(
                f"Stopping job {fetch.id}, which is fetching {entry.id}"
            ).emit()
            fetch.cancel_scope.cancel()
            with anyio.move_on_after(FETCH_STOP_WAIT_S):
                await fetch.finished.wait()
        if catalog.find(entry.id) is not None:  # a cancelled hash already took it away
            catalog.remove(entry.id)
        kept = "" if entry.owned else f" (the file {entry.path} was left in place)"
        NARRATE.action("model_delete").target(entry.id).human(
            f"Deleted model {entry.id}{kept}"
        ).emit()
        return {"model": entry.id, "deleted": True}

    async def hive_status(op: HiveStatus, job: Job) -> dict[str, Any]:
        """What the queen forwards `keeper hive status` to: this hive's workers right now."""
        workers = [w.to_dict() for w in supervisor.workers()]
        NARRATE.action("hive_status").human(
            f"Hive is up with {len(workers)} worker{'s' * (len(workers) != 1)}"
        ).emit()
        return {"workers": workers}

    return {
        "hive_status": hive_status,
        "worker_spawn": Upstream(worker_spawn),
        "worker_list": worker_list,
        "worker_stop": worker_stop,
        "model_download": Upstream(model_download),
        "model_list": model_list,
        "model_delete": Upstream(model_delete),
    }


def _shares(op: WorkerSpawn) -> list[float]:
    """--tensor-split for a split spawn: each peer's share (rpc_servers, then rpc_links,
    as their devices are registered), then this hive's own (when given); none for a spawn
    that splits nothing."""
    if not op.rpc_servers and not op.rpc_links:
        return []
    local = [] if op.local_share is None else [op.local_share]
    return [peer.share for peer in op.rpc_servers] + [link.share for link in op.rpc_links] + local


async def _check_file(path: Path) -> None:
    """Refuse (400) a local model path with nothing behind it, before the job is ready (what
    is there is then checked: hive.modelfile)."""
    if not await anyio.to_thread.run_sync(os.path.lexists, path):
        raise InvalidRequest(
            f"there is no file {path} on this hive; check the path",
            detail={"path": str(path)},
            status=400,
        )


def _auth_headers(ref: ModelRef) -> dict[str, str]:
    token = os.environ.get(HF_TOKEN_ENV, "").strip()
    if ref.is_hf and token and ref.url is not None and ref.url.startswith(HF_HOSTS):
        return {"Authorization": f"Bearer {token}"}
    return {}
