"""What the OpenAI door reads and writes: request bodies in, OpenAI's response objects out.

Bodies are pydantic models that ignore the fields rbee has no use for; `_Body.infer` turns
one into the `infer` operation the door submits. `Shape` builds one request's answers
(whole, chunks, the usage chunk) with the same id, model and creation time.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _Body(BaseModel):
    # OpenAI clients send fields rbee has no use for (user, n=1, logprobs=None): ignored.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=TEXT_MAX_CHARS, pattern=TEXT_PATTERN)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0, le=TEMPERATURE_MAX)
    top_p: float | None = Field(default=None, gt=0, le=TOP_P_MAX)
    top_k: int | None = Field(default=None, ge=TOP_K_MIN)
    seed: int | None = None
    stop: str | list[str] | None = None

    @property
    def include_usage(self) -> bool:
        """True when a stream should end with a chunk carrying `usage`."""
        return self.stream and self.stream_options is not None and self.stream_options.include_usage

    def infer(self, prompt: str = "", messages: list[ChatMessage] | None = None) -> Infer:
        fields: dict[str, Any] = {
            "messages": messages,
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "stop": [self.stop] if isinstance(self.stop, str) else self.stop,
        }
        given = {k: v for k, v in fields.items() if v is not None}
        try:
            return Infer(prompt=prompt, model=self.model, **given)
        except ValidationError as exc:
            raise invalid(exc) from None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str = Field(min_length=1, max_length=ROLE_MAX_CHARS)
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The content as text: parts of type `text` joined (images are not supported)."""
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatBody(_Body):
    messages: list[Message] = Field(min_length=1)

    def operation(self) -> Infer:
        try:
            messages = [ChatMessage(role=m.role, content=m.text()) for m in self.messages]
        except ValidationError as exc:
            raise invalid(exc) from None
        return self.infer(messages=messages)


class CompletionBody(_Body):
    # one prompt per request: a list of several is a 400 (one choice per answer)
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]

    def text(self) -> str:
        return self.prompt[0] if isinstance(self.prompt, list) else self.prompt

    def operation(self) -> Infer:
        return self.infer(self.text())


def parse(model: type[ChatBody] | type[CompletionBody], raw: bytes) -> ChatBody | CompletionBody:
    """The body as `model`, or a 400 DoorError naming the first bad field."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid(exc) from None


def invalid(exc: ValidationError) -> DoorError:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    return DoorError(f"{where}: {first.get('msg', 'invalid')}", param=where)


def usage(result: dict[str, Any]) -> dict[str, int]:
    """OpenAI's `usage` from a finished job's result: the worker's own counts. A worker
    that does not count its prompt leaves prompt and total tokens out (never guessed)."""
    completion = int(result.get("tokens_out") or 0)
    counts = {"completion_tokens": completion}
    prompt = result.get("prompt_tokens")
    if isinstance(prompt, int):
        counts |= {"prompt_tokens": prompt, "total_tokens": prompt + completion}
    return counts


def finish_reason(result: dict[str, Any]) -> str:
    """OpenAI's finish_reason: `length` when max_tokens cut it, else `stop`."""
    return "length" if result.get("stop_reason") == "length" else "stop"


def frame(data: dict[str, Any]) -> bytes:
    """One SSE frame `data: {json}` as OpenAI streams it (no id or event lines)."""
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


class Shape:
    """OpenAI's response objects for one request."""

    def __init__(self, ident: str, model: str, chat: bool) -> None:
        self.ident = ident
        self.model = model
        self.chat = chat
        self.created = int(time.time())

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.ident, "object": obj, "created": self.created, "model": self.model}

    def chunk(self, text: str | None, finish: str | None, *, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**self._head("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return {**self._head("text_completion"), "choices": [choice]}

    def usage_chunk(self, counts: dict[str, int]) -> dict[str, Any]:
        """The last chunk of a stream asked for `include_usage`: no choices, the counts."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [], "usage": counts}

    def whole(self, text: str, result: dict[str, Any]) -> dict[str, Any]:
        finish = finish_reason(result)
        if self.chat:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        return {**self._head(obj), "choices": [choice], "usage": usage(result)}
