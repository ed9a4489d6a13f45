"""`keeper worker spawn|list|stop`: worker jobs the queen hands to a hive and relays.

The keeper shows the worker's own narration (`startup`, `model_load`) live, with the
worker's actor, as the hive and queen relay it under the queen job.
"""

from __future__ import annotations

from keeper.commands.jobs import stream_operation
from keeper.settings import KeeperSettings


def spawn(settings: KeeperSettings, *, model: str, hive: str, device: str) -> None:
    """Start a worker for `model` on `hive`; returns once it is ready (or raises JobFailed)."""
    stream_operation(
        settings,
        {"operation": "worker_spawn", "hive_id": hive, "model": model, "device": device},
    )


def list_workers(settings: KeeperSettings, *, hive: str) -> None:
    stream_operation(settings, {"operation": "worker_list", "hive_id": hive})


def stop(settings: KeeperSettings, worker_id: str, *, hive: str) -> None:
    stream_operation(
        settings, {"operation": "worker_stop", "hive_id": hive, "worker_id": worker_id}
    )
