"""What the OpenAI door reads: request bodies, every field named, and the plan they make.

Each body lists every field OpenAI's API defines for its route (and rbee's `top_k`
extension). A field is mapped to the `infer` operation (jobs.Infer carries OpenAI's
sampling, structured-output and tool fields as OpenAI spells them), refused with a 400
naming it when these text-only workers cannot honour it (an image part, `audio`,
`suffix`, …), or accepted because it changes nothing in the answer (`user`, `metadata`,
`store`, `service_tier`, `prediction`: see docs/api.md's table). An unknown field is a
400 naming it too, never dropped: a typo'd option would otherwise be silently ignored.

`Plan` is what the door runs: one `infer` per prompt (a completion may list several),
and what the answer needs to know (chat or not, logprobs wanted, the tools offered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)

from jobs import (
    MAX_TOKENS_LIMIT,
    ROLE_MAX_CHARS,
    TEMPERATURE_MAX,
    TEXT_MAX_CHARS,
    TEXT_PATTERN,
    TOP_K_MIN,
    TOP_P_MAX,
    ChatMessage,
    Infer,
)
from queen._openai_errors import DoorError
from queen._openai_tools import Tools
from queen._openai_wire_schema import (
    CONTENT_SCHEMA,
    LOGIT_BIAS_SCHEMA,
    PROMPT_SCHEMA,
    PROMPTS_MAX,
    REFUSED_SCHEMA,
    RESPONSE_FORMAT_SCHEMA,
    TOOL_CHOICE_SCHEMA,
    TOOLS_SCHEMA,
    chat_schema,
    completion_schema,
    message_schema,
)

TOP_LOGPROBS_MAX = 20  # chat `top_logprobs`, OpenAI's limit (jobs.Infer's too)
CHOICES_MAX = 16  # `n`, as jobs.Infer bounds it
# Fields the door refuses whatever their value (None aside), and why: these workers
# read and write text, and rbee has no such feature.
REFUSED = {
    "audio": "these workers write text only; leave out `audio`",
    "modalities": 'these workers write text only: modalities must be ["text"]',
    "functions": "`functions` is OpenAI's deprecated form of `tools`: send `tools`",
    "function_call": "`function_call` is OpenAI's deprecated form of `tool_choice`: send it",
    "reasoning_effort": "these models do not reason in a hidden budget; leave it out",
    "verbosity": "these models have no verbosity setting; leave it out",
    "web_search_options": "rbee has no web search; leave out `web_search_options`",
    "suffix": "rbee cannot insert text before a suffix; leave out `suffix`",
}
# The models' role names: OpenAI's `developer` is the newer name of `system`.
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
ROLES |= {"tool": "tool"}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Wire):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # padding against length side channels: none here


class TextPart(_Wire):
    type: Literal["text", "refusal"]
    text: str | None = None
    refusal: str | None = None


class Message(_Wire):
    model_config = ConfigDict(json_schema_extra=message_schema)

    role: Annotated[str, WithJsonSchema({"enum": list(ROLES)})] = Field(
        min_length=1, max_length=ROLE_MAX_CHARS
    )
    content: Annotated[str | list[dict[str, Any]] | None, CONTENT_SCHEMA] = None
    name: str | None = Field(default=None, max_length=TEXT_MAX_CHARS)
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = Field(default=None, max_length=TEXT_MAX_CHARS)
    refusal: str | None = None  # an assistant turn's refusal text, as the model wrote it
    audio: Annotated[None, REFUSED_SCHEMA] = None  # an earlier audio answer (text only)
    function_call: Annotated[None, REFUSED_SCHEMA] = None  # the deprecated tool_calls

    def text(self, where: str = "content") -> str:
        """The content as text: its text parts joined; any other part (an image, audio,
        a file) is a 400, as these workers read text only."""
        if not isinstance(self.content, list):
            return self.content or ""
        texts = []
        for index, part in enumerate(self.content):
            kind = part.get("type")
            if kind not in ("text", "refusal"):
                raise DoorError(
                    f"{where}[{index}]: a {kind!r} part cannot be read by these text-only "
                    "models; send text parts only",
                    param=f"{where}[{index}]",
                )
            try:
                parsed = TextPart.model_validate(part)
            except ValidationError as exc:
                raise invalid(exc, prefix=f"{where}[{index}]") from None
            texts.append(parsed.text or parsed.refusal or "")
        return "".join(texts)


class FunctionCall(_Wire):
    name: str = Field(min_length=1, max_length=TEXT_MAX_CHARS)
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(_Wire):
    id: str = Field(max_length=TEXT_MAX_CHARS)
    type: Literal["function"] = "function"
    function: FunctionCall


Message.model_rebuild()


class _Body(_Wire):
    model: str = Field(min_length=1, max_length=TEXT_MAX_CHARS, pattern=TEXT_PATTERN)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0, le=TEMPERATURE_MAX)
    top_p: float | None = Field(default=None, gt=0, le=TOP_P_MAX)
    top_k: int | None = Field(default=None, ge=TOP_K_MIN)  # rbee's extension (llama.cpp's)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=CHOICES_MAX)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: Annotated[dict[str, float] | None, LOGIT_BIAS_SCHEMA] = None  # jobs.Infer checks
    user: str | None = None  # inert: an end-user id for abuse tracking
    metadata: dict[str, str] | None = None  # inert: tags for stored completions
    store: bool | None = None  # inert: rbee stores no completions (its job log aside)
    service_tier: str | None = None  # inert: one tier here
    prompt_cache_key: str | None = None  # inert: each worker keeps its own prompt cache
    safety_identifier: str | None = None  # inert, as `user`

    @property
    def include_usage(self) -> bool:
        """True when a stream should end with a chunk carrying `usage`."""
        return bool(self.stream) and bool(self.stream_options and self.stream_options.include_usage)

    def _checked(self) -> None:
        given = self.model_dump(exclude_none=True)
        harmless = {"modalities": ["text"], "suffix": ""}  # what OpenAI does anyway
        for name, reason in REFUSED.items():
            if name in given and given[name] != harmless.get(name, ...):
                raise DoorError(f"{name}: {reason}", param=name)

    def _fields(self, max_tokens: int | None) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "stop": [self.stop] if isinstance(self.stop, str) else self.stop,
            "n": self.n,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "logit_bias": self.logit_bias,
        }
        return {key: value for key, value in fields.items() if value is not None}

    def _infer(self, **fields: Any) -> Infer:
        try:
            return Infer(model=self.model, **fields)
        except ValidationError as exc:
            raise invalid(exc) from None


class ChatBody(_Body):
    model_config = ConfigDict(json_schema_extra=chat_schema)

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=TOP_LOGPROBS_MAX)
    response_format: Annotated[dict[str, Any] | None, RESPONSE_FORMAT_SCHEMA] = None
    tools: Annotated[list[dict[str, Any]] | None, TOOLS_SCHEMA] = None
    tool_choice: Annotated[str | dict[str, Any] | None, TOOL_CHOICE_SCHEMA] = None
    parallel_tool_calls: bool | None = None
    prediction: dict[str, Any] | None = None  # inert: a latency hint, the answer is the same
    modalities: Annotated[
        list[str] | None, WithJsonSchema({"anyOf": [{"const": ["text"]}, {"type": "null"}]})
    ] = None
    audio: Annotated[dict[str, Any] | None, REFUSED_SCHEMA] = None
    functions: Annotated[list[dict[str, Any]] | None, REFUSED_SCHEMA] = None
    function_call: Annotated[str | dict[str, Any] | None, REFUSED_SCHEMA] = None
    reasoning_effort: Annotated[str | None, REFUSED_SCHEMA] = None
    verbosity: Annotated[str | None, REFUSED_SCHEMA] = None
    web_search_options: Annotated[dict[str, Any] | None, REFUSED_SCHEMA] = None

    def plan(self) -> Plan:
        self._checked()
        if self.top_logprobs is not None and not self.logprobs:
            raise DoorError(
                "top_logprobs: set logprobs to true to ask for top_logprobs",
                param="top_logprobs",
            )
        tools = Tools.parse(self.tools, self.tool_choice, self.parallel_tool_calls)
        _check_response_format(self.response_format)
        messages = [_message(m, f"messages[{i}]") for i, m in enumerate(self.messages)]
        fields = self._fields(self.max_completion_tokens or self.max_tokens)
        if self.logprobs:
            fields["logprobs"] = self.top_logprobs or 0
        if self.response_format is not None and self.response_format.get("type") != "text":
            fields["response_format"] = self.response_format
        fields |= tools.infer_fields()
        op = self._infer(messages=messages, **fields)
        return Plan([op], chat=True, n=op.n, logprobs=bool(self.logprobs), tools=tools)


Token = Annotated[int, Field(ge=0)]


class CompletionBody(_Body):
    model_config = ConfigDict(json_schema_extra=completion_schema)

    # a text, several texts, a prompt as token ids, or several of those: one job each
    prompt: Annotated[str | list[str] | list[Token] | list[list[Token]], PROMPT_SCHEMA]
    echo: bool | None = None
    logprobs: int | None = Field(default=None, ge=0, le=TOP_LOGPROBS_MAX)
    best_of: Annotated[
        int | None,
        WithJsonSchema(
            {
                "description": "n (or 1 when n is left out)",
                "type": ["integer", "null"],
                "const": None,
            }
        ),
    ] = Field(default=None, ge=1, le=CHOICES_MAX)
    suffix: Annotated[str | None, WithJsonSchema({"enum": ["", None]})] = None

    def prompts(self) -> list[dict[str, Any]]:
        """One input per job: `{"prompt": text}` or `{"tokens": ids}`."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [{"prompt": prompt}]
        if not prompt:
            raise DoorError("prompt: the list of prompts is empty", param="prompt")
        if all(isinstance(p, int) for p in prompt):
            return [{"tokens": prompt}]
        many = [{"prompt": p} if isinstance(p, str) else {"tokens": p} for p in prompt]
        if len(many) > PROMPTS_MAX:
            raise DoorError(
                f"prompt: at most {PROMPTS_MAX} prompts in one request; send more requests",
                param="prompt",
            )
        for index, one in enumerate(many):
            if one.get("tokens") == []:
                raise DoorError(f"prompt[{index}]: a prompt has no tokens", param="prompt")
        return many

    def plan(self) -> Plan:
        self._checked()
        if self.best_of is not None and self.best_of != (self.n or 1):
            raise DoorError(
                "best_of: rbee returns every choice it generates, so best_of must equal n; "
                "leave it out or set it to n",
                param="best_of",
            )
        if self.echo and self.logprobs is not None:
            raise DoorError(
                "echo: the prompt's tokens have no logprobs here; ask for echo or logprobs",
                param="echo",
            )
        fields = self._fields(self.max_tokens)
        if self.logprobs is not None:
            fields["logprobs"] = self.logprobs
        if self.echo:
            fields["echo"] = True
        ops = [self._infer(**fields, **one) for one in self.prompts()]
        return Plan(ops, chat=False, n=ops[0].n, logprobs=self.logprobs is not None)


@dataclass
class Plan:
    """The jobs one request runs and what its answer needs to know. Choice indexes are
    prompt-major: prompt p's choice c is choice `p * n + c`."""

    ops: list[Infer]
    chat: bool
    n: int
    logprobs: bool
    tools: Tools | None = None


def _message(message: Message, where: str) -> ChatMessage:
    role = ROLES.get(message.role)
    if role is None:
        raise DoorError(
            f"{where}.role: {message.role!r} is not a role; use system, developer, user, "
            "assistant or tool",
            param=f"{where}.role",
        )
    if role == "tool" and not message.tool_call_id:
        raise DoorError(
            f"{where}.tool_call_id: a tool message names the call it answers",
            param=f"{where}.tool_call_id",
        )
    calls = None
    if message.tool_calls:
        calls = [call.model_dump() for call in message.tool_calls]
    try:
        return ChatMessage(
            role=role,
            content=message.text(f"{where}.content"),
            tool_calls=calls,
            tool_call_id=message.tool_call_id,
            name=message.name,
        )
    except ValidationError as exc:
        raise invalid(exc, prefix=where) from None


RESPONSE_FORMATS = ("text", "json_object", "json_schema")


def _check_response_format(given: dict[str, Any] | None) -> None:
    """OpenAI's shapes only: `{"type": "text" | "json_object"}` or `{"type":
    "json_schema", "json_schema": {"name", "schema"?, "strict"?, "description"?}}`."""
    if given is None:
        return
    kind = given.get("type")
    if kind not in RESPONSE_FORMATS:
        raise DoorError(
            f"response_format.type: {kind!r} is not one of text, json_object, json_schema",
            param="response_format.type",
        )
    if kind != "json_schema":
        if set(given) != {"type"}:
            raise DoorError(
                f"response_format: a {kind} format has no other field than type",
                param="response_format",
            )
        return
    spec = given.get("json_schema")
    known = {"name", "schema", "strict", "description"}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or set(spec) - known:
        raise DoorError(
            "response_format.json_schema: give {name, schema, strict?, description?}",
            param="response_format.json_schema",
        )
    if not isinstance(spec.get("schema", {}), dict):
        raise DoorError(
            "response_format.json_schema.schema: a JSON schema is an object",
            param="response_format.json_schema.schema",
        )


def parse(model: type[ChatBody] | type[CompletionBody], raw: bytes) -> ChatBody | CompletionBody:
    """The body as `model`, or a 400 DoorError naming the first bad field."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid(exc) from None


def invalid(exc: ValidationError, *, prefix: str = "") -> DoorError:
    """A 400 naming the first bad field; an unknown field is said to be one."""
    first = exc.errors(include_url=False)[0]
    path = [str(p) for p in first.get("loc", ())]
    where = ".".join([prefix, *path] if prefix else path) or "body"
    if first.get("type") == "extra_forbidden":
        return DoorError(
            f"{where}: unrecognized request argument; docs/api.md lists the fields the door takes",
            param=where,
        )
    if path and path[-1] in REFUSED:
        return DoorError(f"{where}: {REFUSED[path[-1]]}", param=where)
    return DoorError(f"{where}: {first.get('msg', 'invalid')}", param=where)
