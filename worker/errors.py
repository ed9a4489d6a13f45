"""Errors llm-worker-rbee raises; each ends the worker with exit 1 and one narrated line.

WorkerError
├── ModelLoadError     the model file is missing, unreadable or not a model llama.cpp loads
├── DeviceUnavailable  the device asked for is not one this build of llama.cpp can use
└── ParentGone         the hive that spawned the worker died, so the worker stops too
"""

from __future__ import annotations


class WorkerError(Exception):
    """Root of llm-worker-rbee's own errors."""


class ModelLoadError(WorkerError):
    """Raised when llama.cpp cannot load the model."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot load model {path}: {reason}")


class DeviceUnavailable(WorkerError):
    """Raised when `--device` names something this machine or build cannot use."""


class ParentGone(WorkerError):
    """Raised when the worker's parent (its hive) has exited."""

    def __init__(self, parent_pid: int) -> None:
        self.parent_pid = parent_pid
        super().__init__(f"the hive that started this worker (pid {parent_pid}) is gone")
