"""jobs: what rbee's programs say to each other about jobs, in layers.

This package's own names are the vocabulary every program shares, the keeper included:
job events and states, the errors, the operations, heartbeats, folders and shared names,
sampling limits, the version, free-space checks, and exiting without teardown.

    jobs.client   JobClient and SyncJobClient: submit a job and follow its stream
    jobs.server   the one job-server shell queen, hive and worker are built on
    jobs.relay    forward an upstream job's stream into the current job (uses both)

The vocabulary imports neither of the others, and the keeper imports only the vocabulary
and the client. Kept light: operations and heartbeats are pydantic models, so they load on
first use, and `import jobs` costs a keeper command next to nothing.
"""

import typing

from jobs._errors import (
    AuthRequired,
    CannotListen,
    DaemonUnreachable,
    InvalidRequest,
    JobError,
    JobFinished,
    JobNotFound,
    NotAJobServer,
    OperationUnavailable,
    ServiceUnavailable,
    StateFolderBusy,
    StorageError,
    UpstreamFailed,
    UpstreamUnreachable,
)
from jobs._events import (
    CANCELLED,
    DONE,
    ERROR,
    EVENT_KINDS,
    FINAL_STATES,
    JOB_STATES,
    EventKind,
    JobEvent,
    JobState,
    LogEntry,
    is_final,
    iter_jsonl,
    parse_jsonl,
    terminator,
    to_narration,
)
from jobs._ops import (
    WireOperation,
    chat_messages,
    hive_list_op,
    hive_status_op,
    infer_op,
    model_delete_op,
    model_download_op,
    model_list_op,
    queen_status_op,
    worker_list_op,
    worker_spawn_op,
    worker_stop_op,
)
from jobs._paths import (
    APP_NAME,
    FILE_MODE,
    FOLDER_MODE,
    HIVE_PORT,
    HIVES_CONFIG,
    HOME_ENV,
    LOOPBACK,
    QUEEN_PORT,
    QUEEN_URL_ENV,
    TOKEN_ENV,
    RbeePaths,
    home_env,
    private_folder,
)
from jobs._process_exit import exit_process, how_it_ended
from jobs._sampling import (
    MAX_TOKENS_DEFAULT,
    MAX_TOKENS_LIMIT,
    TEMPERATURE_DEFAULT,
    TEMPERATURE_MAX,
    TOP_K_DEFAULT,
    TOP_K_MIN,
    TOP_P_DEFAULT,
    TOP_P_MAX,
)
from jobs._version import rbee_version

if typing.TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers
    from jobs._beats import (
        BEAT_BACKOFF_MAX_S,
        BEAT_INTERVAL_S,
        BEAT_NOW_PATH,
        GOODBYE_PATH,
        HEARTBEAT_PATH,
        STALE_AFTER_BEATS,
        HiveBeat,
        HiveGoodbye,
        WorkerInfo,
        WorkerState,
    )
    from jobs._credentials import (
        HIVE_CREDENTIAL_ENV,
        WORKER_CREDENTIAL_ENV,
        cluster_secret,
        hive_credential,
        same_credential,
        worker_credential,
    )
    from jobs._disk import FULL_ERRNOS, MIN_FREE_BYTES, check_room, free_bytes, storage_error
    from jobs._net import is_loopback, tcp_port
    from jobs._operations import (
        DEFAULT_HIVE,
        ID_MAX_CHARS,
        ID_PATTERN,
        OPERATION_ADAPTER,
        OPERATION_MODELS,
        OPERATION_NAMES,
        ROLE_MAX_CHARS,
        TEXT_MAX_CHARS,
        TEXT_PATTERN,
        ChatMessage,
        HiveList,
        HiveStart,
        HiveStatus,
        HiveStop,
        Infer,
        ModelDelete,
        ModelDownload,
        ModelList,
        Operation,
        QueenStatus,
        WorkerList,
        WorkerSpawn,
        WorkerStop,
        operation_json,
        parse_operation,
    )

# Operations and heartbeats pull in pydantic (~45 ms), the address checks argparse, and
# the free-space checks matter only to servers and to a keeper starting one; the keeper's
# --help and `keeper run` need none of them, so these names load on first use (PEP 562).
_OPERATIONS = (
    "DEFAULT_HIVE",
    "ID_MAX_CHARS",
    "ID_PATTERN",
    "OPERATION_ADAPTER",
    "OPERATION_MODELS",
    "OPERATION_NAMES",
    "ROLE_MAX_CHARS",
    "TEXT_MAX_CHARS",
    "TEXT_PATTERN",
    "ChatMessage",
    "HiveList",
    "HiveStart",
    "HiveStatus",
    "HiveStop",
    "Infer",
    "ModelDelete",
    "ModelDownload",
    "ModelList",
    "Operation",
    "QueenStatus",
    "WorkerList",
    "WorkerSpawn",
    "WorkerStop",
    "operation_json",
    "parse_operation",
)
_BEATS = (
    "BEAT_BACKOFF_MAX_S",
    "BEAT_INTERVAL_S",
    "BEAT_NOW_PATH",
    "GOODBYE_PATH",
    "HEARTBEAT_PATH",
    "STALE_AFTER_BEATS",
    "HiveBeat",
    "HiveGoodbye",
    "WorkerInfo",
    "WorkerState",
)
_DISK = ("FULL_ERRNOS", "MIN_FREE_BYTES", "check_room", "free_bytes", "storage_error")
_NET = ("is_loopback", "tcp_port")
_CREDENTIALS = (
    "HIVE_CREDENTIAL_ENV",
    "WORKER_CREDENTIAL_ENV",
    "cluster_secret",
    "hive_credential",
    "same_credential",
    "worker_credential",
)
_LAZY = {
    **dict.fromkeys(_CREDENTIALS, "jobs._credentials"),
    **dict.fromkeys(_OPERATIONS, "jobs._operations"),
    **dict.fromkeys(_BEATS, "jobs._beats"),
    **dict.fromkeys(_DISK, "jobs._disk"),
    **dict.fromkeys(_NET, "jobs._net"),
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jobs' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "APP_NAME",
    "BEAT_BACKOFF_MAX_S",
    "BEAT_INTERVAL_S",
    "BEAT_NOW_PATH",
    "CANCELLED",
    "DEFAULT_HIVE",
    "DONE",
    "ERROR",
    "EVENT_KINDS",
    "FILE_MODE",
    "FINAL_STATES",
    "FOLDER_MODE",
    "FULL_ERRNOS",
    "GOODBYE_PATH",
    "HEARTBEAT_PATH",
    "HIVES_CONFIG",
    "HIVE_CREDENTIAL_ENV",
    "HIVE_PORT",
    "HOME_ENV",
    "ID_MAX_CHARS",
    "ID_PATTERN",
    "JOB_STATES",
    "LOOPBACK",
    "MAX_TOKENS_DEFAULT",
    "MAX_TOKENS_LIMIT",
    "MIN_FREE_BYTES",
    "OPERATION_ADAPTER",
    "OPERATION_MODELS",
    "OPERATION_NAMES",
    "QUEEN_PORT",
    "QUEEN_URL_ENV",
    "ROLE_MAX_CHARS",
    "STALE_AFTER_BEATS",
    "TEMPERATURE_DEFAULT",
    "TEMPERATURE_MAX",
    "TEXT_MAX_CHARS",
    "TEXT_PATTERN",
    "TOKEN_ENV",
    "TOP_K_DEFAULT",
    "TOP_K_MIN",
    "TOP_P_DEFAULT",
    "TOP_P_MAX",
    "WORKER_CREDENTIAL_ENV",
    "AuthRequired",
    "CannotListen",
    "ChatMessage",
    "DaemonUnreachable",
    "EventKind",
    "HiveBeat",
    "HiveGoodbye",
    "HiveList",
    "HiveStart",
    "HiveStatus",
    "HiveStop",
    "Infer",
    "InvalidRequest",
    "JobError",
    "JobEvent",
    "JobFinished",
    "JobNotFound",
    "JobState",
    "LogEntry",
    "ModelDelete",
    "ModelDownload",
    "ModelList",
    "NotAJobServer",
    "Operation",
    "OperationUnavailable",
    "QueenStatus",
    "RbeePaths",
    "ServiceUnavailable",
    "StateFolderBusy",
    "StorageError",
    "UpstreamFailed",
    "UpstreamUnreachable",
    "WireOperation",
    "WorkerInfo",
    "WorkerList",
    "WorkerSpawn",
    "WorkerState",
    "WorkerStop",
    "chat_messages",
    "check_room",
    "cluster_secret",
    "exit_process",
    "free_bytes",
    "hive_credential",
    "hive_list_op",
    "hive_status_op",
    "home_env",
    "how_it_ended",
    "infer_op",
    "is_final",
    "is_loopback",
    "iter_jsonl",
    "model_delete_op",
    "model_download_op",
    "model_list_op",
    "operation_json",
    "parse_jsonl",
    "parse_operation",
    "private_folder",
    "queen_status_op",
    "rbee_version",
    "same_credential",
    "storage_error",
    "tcp_port",
    "terminator",
    "to_narration",
    "worker_credential",
    "worker_list_op",
    "worker_spawn_op",
    "worker_stop_op",
]
