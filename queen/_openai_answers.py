"""What the OpenAI door writes: OpenAI's answer objects and stream chunks.

`Shape` builds one request's objects (whole answer, chunks, the usage chunk) with the same
id, model and creation time. `Choice` follows one choice's pieces as the worker sends
them: its text (tool calls held back and parsed, see queen._openai_tools), its logprobs,
and, at the end, its finish_reason.
"""

from __future__ import annotations

import json
import time
from typing import Any

from queen._openai_logprobs import chat_logprobs, completion_logprobs
from queen._openai_tools import Tools


def usage(results: list[dict[str, Any]]) -> dict[str, int]:
    """OpenAI's `usage` from finished jobs' results, the workers' own model-token counts
    (every choice's tokens; a prompt counted once per job, as its n choices share it). A
    worker that does not count its prompt leaves prompt and total tokens out."""
    completion = sum(int(r.get("tokens_out") or 0) for r in results)
    counts = {"completion_tokens": completion}
    prompts = [r.get("prompt_tokens") for r in results]
    if all(isinstance(p, int) for p in prompts):
        prompt = sum(int(p or 0) for p in prompts)
        counts |= {"prompt_tokens": prompt, "total_tokens": prompt + completion}
    return counts


def stop_reason(result: dict[str, Any], choice: int) -> str:
    """OpenAI's finish_reason of one choice of a job: `length` when max_tokens cut it."""
    for entry in result.get("choices") or []:
        if entry.get("index") == choice:
            return "length" if entry.get("stop_reason") == "length" else "stop"
    return "length" if result.get("stop_reason") == "length" else "stop"


def frame(data: dict[str, Any]) -> bytes:
    """One SSE frame `data: {json}` as OpenAI streams it (no id or event lines)."""
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


class Choice:
    """One choice's answer as it arrives, piece by piece."""

    def __init__(self, index: int, *, chat: bool, logprobs: bool, tools: Tools | None) -> None:
        self.index = index
        self.chat = chat
        self.logprobs = logprobs
        self.reader = (tools or Tools()).reader()
        self.text: list[str] = []  # the content let through so far
        self.entries: list[dict[str, Any]] = []  # logprob entries so far
        self.offset = 0  # characters of text so far (completions' text_offset)
        self.calls: list[dict[str, Any]] = []

    def piece(self, data: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """The content a token event lets through, and its chunk's logprobs."""
        text = self.reader.feed(str(data.get("t", "")))
        entries = list(data.get("lp") or [])
        self.text.append(text)
        self.entries += entries
        logprobs = self._logprobs(entries, self.offset) if self.logprobs else None
        self.offset += len(str(data.get("t", "")))
        return text, logprobs

    def end(self, reason: str) -> tuple[str, str]:
        """The content still held (when it was no call) and the finish_reason."""
        rest, self.calls = self.reader.finish()
        self.text.append(rest)
        return rest, "tool_calls" if self.calls else reason

    def _logprobs(self, entries: list[dict[str, Any]], offset: int) -> dict[str, Any]:
        return chat_logprobs(entries) if self.chat else completion_logprobs(entries, offset)

    def whole(self, reason: str) -> dict[str, Any]:
        """This choice in a whole (not streamed) answer, once the job ended."""
        _, finish = self.end(reason)
        logprobs = self._logprobs(self.entries, 0) if self.logprobs else None
        text = "".join(self.text)
        choice: dict[str, Any] = {
            "index": self.index,
            "logprobs": logprobs,
            "finish_reason": finish,
        }
        if not self.chat:
            return {**choice, "text": text}
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if self.calls:
            message |= {"content": text or None, "tool_calls": self.calls}
        return {**choice, "message": message}


class Shape:
    """OpenAI's response objects for one request."""

    def __init__(self, ident: str, model: str, chat: bool) -> None:
        self.ident = ident
        self.model = model
        self.chat = chat
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.ident, "object": obj, "created": self.created, "model": self.model}

    def chunk(
        self,
        index: int,
        delta: dict[str, Any] | str,
        finish: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A chunk of one choice: a chat `delta` ({role?, content?, tool_calls?}), or a
        completion's text."""
        choice: dict[str, Any] = {"index": index, "logprobs": logprobs, "finish_reason": finish}
        if self.chat:
            return {**self._head("chat.completion.chunk"), "choices": [{**choice, "delta": delta}]}
        return {**self._head("text_completion"), "choices": [{**choice, "text": delta}]}

    def content(self, index: int, text: str, logprobs: dict[str, Any] | None) -> dict[str, Any]:
        return self.chunk(index, {"content": text} if self.chat else text, None, logprobs)

    def calls(self, index: int, calls: list[dict[str, Any]]) -> dict[str, Any]:
        """One delta with every call whole, as OpenAI's streamed calls end up."""
        deltas = [{"index": i, **call} for i, call in enumerate(calls)]
        return self.chunk(index, {"tool_calls": deltas})

    def finish(self, index: int, reason: str) -> dict[str, Any]:
        return self.chunk(index, {} if self.chat else "", reason)

    def usage_chunk(self, counts: dict[str, int]) -> dict[str, Any]:
        """The last chunk of a stream asked for `include_usage`: no choices, the counts."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [], "usage": counts}

    def whole(self, choices: list[dict[str, Any]], counts: dict[str, int]) -> dict[str, Any]:
        return {**self._head(self.object), "choices": choices, "usage": counts}
