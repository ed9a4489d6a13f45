"""What tests share, in one place: no test imports another test module.

Fixtures live in the nearest conftest.py; helpers live here, behind this face (private
`_*.py` modules). `tests.support.e2e` holds the end-to-end tests' constants.
"""

from tests.support._chain import BEAT_S, Chain, free_port
from tests.support._disk import fill_disk
from tests.support._door import door_client, job_result, queen_with_hive
from tests.support._extra_hive import extra_hive
from tests.support._fileserver import serve_models
from tests.support._fuzz import fuzz_config, served_for_fuzzing
from tests.support._gguf8 import write_gguf8
from tests.support._hangup import CANCEL_DEADLINE_S, job_states, only_job, silent_hive, state_after
from tests.support._hive import BeatAuth, BeatRecorder, hive_token, spawn_hive
from tests.support._http import foreign_http_server
from tests.support._jobs import (
    answer_tiny,
    cancel_running,
    narration,
    run_job,
    stop_the_only_worker,
    submit_followed,
)
from tests.support._jobserver import JobsKit, Served, Stream, parse_sse, read_stream, serve_jobs
from tests.support._keeper import (
    NOT_FOR_A_QUERY,
    NOT_FOR_HELP,
    KeeperRunner,
    freeze_once_spawned,
    imported_by,
    keeper_into_a_left_pipe,
    start_in_background,
)
from tests.support._otlp import OtlpReceiver, ReceivedLog, ReceivedSpan, otlp_receiver
from tests.support._processes import all_gone
from tests.support._programs import (
    START_DEADLINE_S,
    Ready,
    RunningProgram,
    closed_hive_url,
    spawn_program,
    url_of,
)
from tests.support._queen import RunningQueen, queen_settings, spawn_queen, start_queen
from tests.support._ranged import ranged_response
from tests.support._recording import RecordingHive, recording_hive
from tests.support._rpclink import LinkSshd, echo_server, link_sshd
from tests.support._screen import Screen
from tests.support._splitanswers import (
    download_on,
    placement,
    rpc_listeners,
    split_answer,
    unsplit_answer,
)
from tests.support._splithosts import (
    HomeSshd,
    Machine,
    Queen,
    hive_at,
    home_sshd,
    listeners,
    listeners_here,
    peer_machines,
    queen_call,
    rbee_lines,
)
from tests.support._streams import cutting_proxy, emitter
from tests.support._waiting import await_until, wait_until
from tests.support._worker import (
    WORKER_AUTH,
    WORKER_CREDENTIAL,
    in_process_llama,
    infer,
    spawn_worker,
    start_inference,
    text_of,
    timed_stream,
    wait_busy,
    worker_health,
)

__all__ = [
    "BEAT_S",
    "CANCEL_DEADLINE_S",
    "NOT_FOR_A_QUERY",
    "NOT_FOR_HELP",
    "START_DEADLINE_S",
    "WORKER_AUTH",
    "WORKER_CREDENTIAL",
    "BeatAuth",
    "BeatRecorder",
    "Chain",
    "HomeSshd",
    "JobsKit",
    "KeeperRunner",
    "LinkSshd",
    "Machine",
    "OtlpReceiver",
    "Queen",
    "Ready",
    "ReceivedLog",
    "ReceivedSpan",
    "RecordingHive",
    "RunningProgram",
    "RunningQueen",
    "Screen",
    "Served",
    "Stream",
    "all_gone",
    "answer_tiny",
    "await_until",
    "cancel_running",
    "closed_hive_url",
    "cutting_proxy",
    "door_client",
    "download_on",
    "echo_server",
    "emitter",
    "extra_hive",
    "fill_disk",
    "foreign_http_server",
    "free_port",
    "freeze_once_spawned",
    "fuzz_config",
    "hive_at",
    "hive_token",
    "home_sshd",
    "imported_by",
    "in_process_llama",
    "infer",
    "job_result",
    "job_states",
    "keeper_into_a_left_pipe",
    "link_sshd",
    "listeners",
    "listeners_here",
    "narration",
    "only_job",
    "otlp_receiver",
    "parse_sse",
    "peer_machines",
    "placement",
    "queen_call",
    "queen_settings",
    "queen_with_hive",
    "ranged_response",
    "rbee_lines",
    "read_stream",
    "recording_hive",
    "rpc_listeners",
    "run_job",
    "serve_jobs",
    "serve_models",
    "served_for_fuzzing",
    "silent_hive",
    "spawn_hive",
    "spawn_program",
    "spawn_queen",
    "spawn_worker",
    "split_answer",
    "start_in_background",
    "start_inference",
    "start_queen",
    "state_after",
    "stop_the_only_worker",
    "submit_followed",
    "text_of",
    "timed_stream",
    "unsplit_answer",
    "url_of",
    "wait_busy",
    "wait_until",
    "worker_health",
    "write_gguf8",
]
