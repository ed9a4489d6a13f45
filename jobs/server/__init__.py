"""jobs.server: the one job-server shell queen, hive and worker are built on.

    job_app = create_app(ServerConfig("rbee-hive", version, state_dir), handlers, routes=[...])
    run_daemon("rbee-hive", state_dir, host, port, serve_on)  # claim, serve, exit

where `serve_on(sock)` ends with `await serve(job_app, sock)` (until SIGTERM/SIGINT).

Behind this face: the app factory, its serving and the daemons' entry (`_app`, `_serve`,
`_entry`), the job routes with their SSE stream (`_routes`, `_sse`), the job service
(`_service`), the event store (`_eventlog`, `_joblog`, `_logreaders`, `_storage`; in memory
only: `_tailstore`), the job table (`_registry`), bearer auth (the user's token and the
daemons' credentials), Host/Origin checks, body limits, error shapes by path (OpenAI's at
the queen's door) and the OpenAPI document (`_auth`, `_origin`, `_limits`, `_errorshape`,
`_openapi`). The server imports the vocabulary (`jobs`), never the client or the relay.
"""

from jobs.server._app import JobApp, Lifespan, RouteFactory, ServerConfig, create_app
from jobs.server._auth import BearerAuth
from jobs.server._entry import EXIT_BUSY, EXIT_FAILED, run_daemon
from jobs.server._eventlog import FLUSH_INTERVAL_S, MEMORY_TAIL, EventStore
from jobs.server._joblog import JobLog
from jobs.server._limits import BODY_READ_TIMEOUT_S, MAX_BODY_BYTES, MAX_BODY_ENV, BodyLimit
from jobs.server._logreaders import FileReader, LogFile, LogReader, MemoryReader
from jobs.server._openapi import openapi_schema
from jobs.server._origin import HOSTS_ENV, ORIGINS_ENV, HostOriginGuard
from jobs.server._registry import CRASH_REASON, JobRecord, JobRegistry, lock_state_folder
from jobs.server._routes import (
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    error_body,
    ready_unless_hung_up,
    until_hung_up,
)
from jobs.server._serve import (
    JobServer,
    bind_socket,
    claim,
    open_job_server,
    serve,
    socket_url,
)
from jobs.server._service import Handler, HandlerFactory, Job, JobService, Retention, Upstream
from jobs.server._sse import KEEPALIVE_S
from jobs.server._tailstore import TailStore

__all__ = [
    "BODY_READ_TIMEOUT_S",
    "CRASH_REASON",
    "EXIT_BUSY",
    "EXIT_FAILED",
    "FLUSH_INTERVAL_S",
    "HOSTS_ENV",
    "KEEPALIVE_S",
    "LIST_LIMIT_DEFAULT",
    "LIST_LIMIT_MAX",
    "MAX_BODY_BYTES",
    "MAX_BODY_ENV",
    "MEMORY_TAIL",
    "ORIGINS_ENV",
    "BearerAuth",
    "BodyLimit",
    "EventStore",
    "FileReader",
    "Handler",
    "HandlerFactory",
    "HostOriginGuard",
    "Job",
    "JobApp",
    "JobLog",
    "JobRecord",
    "JobRegistry",
    "JobServer",
    "JobService",
    "Lifespan",
    "LogFile",
    "LogReader",
    "MemoryReader",
    "Retention",
    "RouteFactory",
    "ServerConfig",
    "TailStore",
    "Upstream",
    "bind_socket",
    "claim",
    "create_app",
    "error_body",
    "lock_state_folder",
    "open_job_server",
    "openapi_schema",
    "ready_unless_hung_up",
    "run_daemon",
    "serve",
    "socket_url",
    "until_hung_up",
]
