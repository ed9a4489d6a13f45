"""Operations: what a job does, as flat JSON tagged by `operation` (upstream's wire shape).

    {"operation": "worker_spawn", "hive_id": "localhost", "model": "builtin:tiny", "device": "cpu"}

Unknown fields are rejected (422): queen, hive and keeper ship in one distribution, so an
unknown field is a typo (`max_token`) that would otherwise be silently ignored. Types are
strict (`"watch": "yes"` is not a boolean, `"5"` not an integer) and ids have one small
alphabet, so nothing a job stores can break a listing or a terminal later.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import from_json

from jobs._errors import InvalidRequest
from jobs._sampling import (
    CHOICES_MAX,
    LOGIT_BIAS_MAX,
    MAX_TOKENS_DEFAULT,
    MAX_TOKENS_LIMIT,
    PENALTY_MAX,
    TEMPERATURE_DEFAULT,
    TEMPERATURE_MAX,
    TOP_K_DEFAULT,
    TOP_K_MIN,
    TOP_LOGPROBS_MAX,
    TOP_P_DEFAULT,
    TOP_P_MAX,
)

DEFAULT_HIVE = "localhost"  # the hive on the queen's own machine
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # hive and worker ids: TOML bare keys, host names
ID_MAX_CHARS = 64  # longer than any alias or host name people type
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"  # one line, no C0/C1 control characters
TEXT_MAX_CHARS = 4096  # a model path or URL; prompts are bounded by the body limit

Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX_CHARS, pattern=ID_PATTERN)]
"""A hive or worker id. The pattern is plain enough for Python, Rust (pydantic) and JSON
Schema regex engines alike, so /openapi.json states exactly what the server accepts."""

Text = Annotated[
    str, StringConstraints(min_length=1, max_length=TEXT_MAX_CHARS, pattern=TEXT_PATTERN)
]
"""A one-line value such as a model reference or a device: any characters but controls."""


def _whole_number(value: Any) -> Any:
    """JSON Schema counts 5.0 as an integer, so the server does too (strict mode alone
    would refuse it); strings and booleans are still refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_WHOLE = BeforeValidator(_whole_number)
Int = Annotated[int, _WHOLE]
# An optional bounded Int keeps its bounds in the JSON schema only with the bounds on the
# int itself, before the validator: `Annotated[int, Field(ge=…), _WHOLE] | None`.
PARALLEL_MAX = 64  # slots in one worker
THREADS_MAX = 1024
CTX_SIZE_MIN = 64  # context tokens per slot
CTX_SIZE_MAX = 1 << 20
RPC_SERVERS_MAX = 16  # peers on its machine one split worker reaches (ggml has room for more)
RPC_LINKS_MAX = 8  # peers on other machines: one SSH connection each, held for its life
Endpoint = Annotated[str, StringConstraints(pattern=r"^127\.0\.0\.1:[0-9]{1,5}$")]
"""A peer's RPC server as a hive reaches it: on its own loopback, never an open address."""
Share = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""An integer as JSON Schema means it: 5 or 5.0, never "5" or true."""
Port = Annotated[int, Field(ge=1, le=65535), BeforeValidator(_whole_number)]
SshHost = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9.:-]*$")
]
"""A host name or address (IPv4, IPv6 without brackets) an SSH client connects to."""
SshUser = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
]
LINK_KEY_MAX_CHARS = 256  # an ed25519 public key line: type, 68 base64 characters, comment
LinkKey = Annotated[
    str,
    StringConstraints(
        max_length=LINK_KEY_MAX_CHARS,
        pattern=r"^ssh-ed25519 [A-Za-z0-9+/]{68}(?: [A-Za-z0-9 ._@:+-]*)?$",
    ),
]
"""rbee's RPC link key (hive/_rpc_link.py: always ed25519) in OpenSSH form: one line that
goes into a peer's authorized_keys, so nothing but the key and a plain comment is let in."""


def _operation_is_required(schema: dict[str, Any]) -> None:
    """The tag has a default for Python callers, but on the wire it is required."""
    required = schema.setdefault("required", [])
    if "operation" not in required:
        required.insert(0, "operation")


class _Op(BaseModel):
    # strict: JSON types are taken as they are ("yes" is not a bool, "5" not an int).
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, json_schema_extra=_operation_is_required
    )
    # Operations that only read or free space still run while the disk is full (the
    # server's 507 refuses the rest): a user must be able to see what fills it and delete it.
    runs_on_full_disk: ClassVar[bool] = False

    def allowed_on_full_disk(self) -> bool:
        """True when this operation writes nothing but its own short log, or frees space."""
        return self.runs_on_full_disk


class QueenStatus(_Op):
    """The queen's uptime, version, job counts and known hives.

    With `watch`, the job keeps narrating a fresh snapshot every `interval_s` until it is
    cancelled (`keeper status --watch`); it is the one queen operation that runs until told
    to stop, or until no stream has read it for a while (the queen's `watch_idle_s`).
    """

    operation: Literal["queen_status"] = "queen_status"
    watch: bool = False
    interval_s: float = Field(default=2.0, ge=0.01, le=3600)  # a floor: no busy loop

    def allowed_on_full_disk(self) -> bool:
        return not self.watch  # a watch writes a snapshot every interval, for as long as it runs


class HiveStart(_Op):
    operation: Literal["hive_start"] = "hive_start"
    hive_id: Id = DEFAULT_HIVE


class HiveStop(_Op):
    operation: Literal["hive_stop"] = "hive_stop"
    hive_id: Id = DEFAULT_HIVE


class HiveList(_Op):
    operation: Literal["hive_list"] = "hive_list"
    runs_on_full_disk = True


class HiveStatus(_Op):
    operation: Literal["hive_status"] = "hive_status"
    runs_on_full_disk = True
    hive_id: Id = DEFAULT_HIVE


def _empty(value: Any) -> bool:
    return not value


def _absent(value: Any) -> bool:
    return value is None


class RpcPeer(BaseModel):
    """One peer's RPC server in a split worker's spawn: where this hive reaches it, and
    its share of the model's layers (shares are relative; llama.cpp's tensor_split)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    endpoint: Endpoint
    share: Share = 1.0
    hive_id: Id | None = None  # the hive lending it, named in the worker's messages


class RpcLinkPeer(BaseModel):
    """One peer on another machine in a split worker's spawn: the worker's hive opens an
    SSH local forward to the peer's sshd (`ssh_host`:`ssh_port` as `ssh_user`, with rbee's
    link key, which the peer granted) reaching the peer's 127.0.0.1:`remote_port`, its RPC
    server for the split; `share` as RpcPeer's."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    hive_id: Id
    ssh_host: SshHost
    ssh_port: Port = 22
    ssh_user: SshUser
    remote_port: Port
    share: Share = 1.0


def _local_share_needs_peers(schema: dict[str, Any]) -> None:
    """What `WorkerSpawn._peers` checks, stated in the schema: a number for local_share
    comes with at least one peer."""
    _operation_is_required(schema)
    schema["if"] = {"required": ["local_share"], "properties": {"local_share": {"type": "number"}}}
    schema["then"] = {
        "anyOf": [
            {"required": [name], "properties": {name: {"minItems": 1}}}
            for name in ("rpc_servers", "rpc_links")
        ]
    }


class WorkerSpawn(_Op):
    model_config = ConfigDict(json_schema_extra=_local_share_needs_peers)

    operation: Literal["worker_spawn"] = "worker_spawn"
    hive_id: Id = DEFAULT_HIVE
    model: Text
    device: Text = "cpu"
    # None: the worker's own defaults (2 slots on a CPU, 4 on a GPU; the physical cores;
    # 4096 context tokens per slot, never above the model's trained window).
    parallel: Annotated[int, Field(ge=1, le=PARALLEL_MAX), _WHOLE] | None = None
    threads: Annotated[int, Field(ge=1, le=THREADS_MAX), _WHOLE] | None = None
    ctx_size: Annotated[int, Field(ge=CTX_SIZE_MIN, le=CTX_SIZE_MAX), _WHOLE] | None = None
    # A split (docs/splitting.md): the peers' ggml RPC servers as this hive reaches them
    # (127.0.0.1:P: a peer on this machine, or this hive's end of an SSH forward), each
    # with its share of the layers, and the share this hive's own device keeps.
    # Left out of the wire form when empty (no split), so a plain spawn stays plain.
    rpc_servers: list[RpcPeer] = Field(
        default_factory=list, max_length=RPC_SERVERS_MAX, exclude_if=_empty
    )
    # Peers on other machines, reached over SSH links this hive opens for the worker's
    # life (docs/splitting.md); their devices follow `rpc_servers`' in that order.
    rpc_links: list[RpcLinkPeer] = Field(
        default_factory=list, max_length=RPC_LINKS_MAX, exclude_if=_empty
    )
    local_share: Share | None = Field(default=None, exclude_if=_absent)

    @model_validator(mode="after")
    def _peers(self) -> WorkerSpawn:
        if self.local_share is not None and not (self.rpc_servers or self.rpc_links):
            raise ValueError("local_share is a split's: give rpc_servers or rpc_links with it")
        return self


class RpcServe(_Op):
    """Lend this hive's memory to a split: start a ggml RPC server on its loopback (a free
    port) for `split_id`; the result names its endpoint. The queen asks, never a user.

    With `grant_key` (the worker's hive's RPC link key, OpenSSH form), the hive also grants
    that key, in the authorized_keys its sshd reads, an SSH forward to that server's port
    and nothing else; `rpc_stop` revokes it. The result then adds `ssh_user`, the user to
    log in as."""

    operation: Literal["rpc_serve"] = "rpc_serve"
    hive_id: Id = DEFAULT_HIVE
    split_id: Id
    grant_key: LinkKey | None = Field(default=None, exclude_if=_absent)


class RpcStop(_Op):
    """Stop the RPC server this hive runs for `split_id` (the split unloaded)."""

    operation: Literal["rpc_stop"] = "rpc_stop"
    runs_on_full_disk = True
    hive_id: Id = DEFAULT_HIVE
    split_id: Id


class WorkerList(_Op):
    operation: Literal["worker_list"] = "worker_list"
    runs_on_full_disk = True
    hive_id: Id = DEFAULT_HIVE


class WorkerStop(_Op):
    operation: Literal["worker_stop"] = "worker_stop"
    runs_on_full_disk = True
    hive_id: Id = DEFAULT_HIVE
    worker_id: Id


class ModelDownload(_Op):
    operation: Literal["model_download"] = "model_download"
    hive_id: Id = DEFAULT_HIVE
    model: Text


class ModelList(_Op):
    operation: Literal["model_list"] = "model_list"
    runs_on_full_disk = True
    hive_id: Id = DEFAULT_HIVE


class ModelDelete(_Op):
    operation: Literal["model_delete"] = "model_delete"
    runs_on_full_disk = True
    hive_id: Id = DEFAULT_HIVE
    model: Text


REPLICAS_MAX = 64  # workers of one model the queen keeps running


class ModelServe(_Op):
    """Keep `replicas` workers of `model` running (0: stop keeping any), placed by memory
    across the hives (or on `hive_id`); with `max_replicas`, the queen adds workers up to
    that many while the model's queue grows. The queen replaces a worker that dies and
    remembers the wish across restarts; workers above `replicas` stop once idle for
    keep_alive."""

    operation: Literal["model_serve"] = "model_serve"
    model: Text
    replicas: Annotated[int, Field(ge=0, le=REPLICAS_MAX), _WHOLE]
    max_replicas: Annotated[int, Field(ge=1, le=REPLICAS_MAX), _WHOLE] | None = None
    hive_id: Id | None = None  # None: any hive, placed by memory

    @model_validator(mode="after")
    def _bounds(self) -> ModelServe:
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below replicas ({self.replicas}); "
                "give at least as many"
            )
        return self


ROLE_MAX_CHARS = 64  # system, user, assistant, tool: a name, not text


class ChatMessage(BaseModel):
    """One message of a conversation; the queen renders them through the model's template."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    role: Annotated[str, StringConstraints(min_length=1, max_length=ROLE_MAX_CHARS)]
    content: str
    # OpenAI's tool turns, as the chat template reads them: an assistant's `tool_calls`
    # ([{id, type: "function", function: {name, arguments}}]), a tool's answer naming the
    # call it answers (`tool_call_id`) and, in older clients, the function's `name`.
    # Left out of the wire form when absent (most messages), so plain turns stay plain.
    tool_calls: list[dict[str, Any]] | None = Field(default=None, exclude_if=_absent)
    tool_call_id: Annotated[str, StringConstraints(max_length=TEXT_MAX_CHARS)] | None = Field(
        default=None, exclude_if=_absent
    )
    name: Annotated[str, StringConstraints(max_length=TEXT_MAX_CHARS)] | None = Field(
        default=None, exclude_if=_absent
    )


def _one_input_schema(schema: dict[str, Any]) -> None:
    """The tag is required, and the schema states what `Infer._one_input` checks, so a
    client reading /openapi.json never sends a body the server then refuses."""
    _operation_is_required(schema)
    given = {"prompt": {"minLength": 1}, "messages": {"type": "array"}, "tokens": {"type": "array"}}
    pairs = [("prompt", "messages"), ("prompt", "tokens"), ("messages", "tokens")]
    schema["not"] = {
        "anyOf": [
            {"required": list(pair), "properties": {k: given[k] for k in pair}} for pair in pairs
        ]
    }
    # Keys of logit_bias are token ids: nothing else may stand beside the pattern.
    bias = schema.get("properties", {}).get("logit_bias")
    if isinstance(bias, dict) and "patternProperties" not in bias:
        pattern = bias.get("propertyNames", {}).get("pattern")
        if pattern:
            bias["patternProperties"] = {pattern: bias.pop("additionalProperties", {})}
    if isinstance(bias, dict):
        bias["additionalProperties"] = False


class Infer(_Op):
    """Generate text; tokens arrive as `token` events on the job's stream.

    The input is one of `prompt`, sent to the model as it is, `tokens`, the prompt as the
    model's token ids, or `messages`, which the worker renders into the prompt through its
    model's chat template (`keeper infer` without `--raw`, the OpenAI door's chat
    completions) with `tools` when given.

    The fields after `stop` are OpenAI's, with OpenAI's meaning, so the door passes them
    through: `response_format` and `tool_choice` keep OpenAI's shape; `logprobs` is the
    number of alternatives listed per token (0: the chosen token's alone; None: none).
    """

    model_config = ConfigDict(json_schema_extra=_one_input_schema)

    operation: Literal["infer"] = "infer"
    prompt: str = ""
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    model: Text
    max_tokens: Int = Field(default=MAX_TOKENS_DEFAULT, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float = Field(default=TEMPERATURE_DEFAULT, ge=0, le=TEMPERATURE_MAX)
    top_p: float = Field(default=TOP_P_DEFAULT, gt=0, le=TOP_P_MAX)
    top_k: Int = Field(default=TOP_K_DEFAULT, ge=TOP_K_MIN)
    seed: Int | None = None
    stop: list[str] = Field(default_factory=list)
    tokens: list[Int] | None = Field(default=None, min_length=1)
    presence_penalty: float = Field(default=0.0, ge=-PENALTY_MAX, le=PENALTY_MAX)
    frequency_penalty: float = Field(default=0.0, ge=-PENALTY_MAX, le=PENALTY_MAX)
    # token id (decimal, as OpenAI's JSON keys are) -> bias added to its logit
    logit_bias: dict[
        Annotated[str, StringConstraints(pattern=r"^[0-9]{1,9}$")],
        Annotated[float, Field(ge=-LOGIT_BIAS_MAX, le=LOGIT_BIAS_MAX)],
    ] = Field(default_factory=dict)
    logprobs: Annotated[int, Field(ge=0, le=TOP_LOGPROBS_MAX), _WHOLE] | None = None
    n: Int = Field(default=1, ge=1, le=CHOICES_MAX)
    echo: bool = False  # the prompt's text comes first in the answer (completions)
    # {"type": "text" | "json_object" | "json_schema", "json_schema": {name, schema, strict}}
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None  # [{"type": "function", "function": {...}}]
    # "none" | "auto" | "required" | {"type": "function", "function": {"name": ...}}
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    hive_id: Id | None = None  # None: any hive with the model loaded
    worker_id: Id | None = None  # None: any idle worker with the model (or a new one)

    @model_validator(mode="after")
    def _one_input(self) -> Infer:
        given = [bool(self.prompt), self.messages is not None, self.tokens is not None]
        if sum(given) > 1:
            raise ValueError("give one of prompt, messages and tokens, not several")
        return self


Operation = Annotated[
    QueenStatus
    | HiveStart
    | HiveStop
    | HiveList
    | HiveStatus
    | WorkerSpawn
    | WorkerList
    | WorkerStop
    | RpcServe
    | RpcStop
    | ModelDownload
    | ModelList
    | ModelDelete
    | ModelServe
    | Infer,
    Field(discriminator="operation"),
]
OPERATION_ADAPTER: TypeAdapter[Operation] = TypeAdapter(Operation)
OPERATION_MODELS: tuple[type[BaseModel], ...] = (
    QueenStatus,
    HiveStart,
    HiveStop,
    HiveList,
    HiveStatus,
    WorkerSpawn,
    WorkerList,
    WorkerStop,
    RpcServe,
    RpcStop,
    ModelDownload,
    ModelList,
    ModelDelete,
    ModelServe,
    Infer,
)
OPERATION_NAMES: tuple[str, ...] = tuple(
    m.model_fields["operation"].default for m in OPERATION_MODELS
)


def parse_operation(body: bytes | str | dict[str, Any]) -> Operation:
    """Validate a request body; raises InvalidRequest (400 malformed JSON, 422 invalid)."""
    if isinstance(body, bytes | str):
        body = _json_value(body)
    if not isinstance(body, dict):
        raise InvalidRequest(
            'the body must be a JSON object with an "operation" field', detail=None, status=422
        )
    try:
        return OPERATION_ADAPTER.validate_python(body)
    except ValidationError as exc:
        detail = exc.errors(include_url=False, include_context=False, include_input=False)
        first: dict[str, Any] = dict(detail[0]) if detail else {}
        loc = first.get("loc", ())[1:]  # the first element is the operation tag
        where = ".".join(str(p) for p in loc) or "operation"
        raise InvalidRequest(
            f"invalid operation at {where}: {first.get('msg', 'invalid')}; "
            "see GET /openapi.json for the accepted shapes",
            detail=detail,
        ) from None


def _json_value(body: bytes | str) -> Any:
    """Parse with pydantic's JSON reader: unlike `json.loads` it bounds nesting (a
    1,000-deep body is an error, not a RecursionError) and refuses lone surrogates and
    invalid UTF-8, which would otherwise be stored and break every later listing."""
    try:
        raw = body.encode() if isinstance(body, str) else body
        return from_json(raw, allow_inf_nan=False)
    except ValueError as exc:  # UnicodeEncodeError is one too
        raise InvalidRequest(
            f"the body is not valid JSON ({exc}); send an object such as "
            '{"operation": "queen_status"}',
            status=400,
        ) from None


def operation_json(op: Operation) -> dict[str, Any]:
    """The flat wire form of an operation, defaults included."""
    return op.model_dump(mode="json")
