"""Token logprobs in OpenAI's two shapes, from the worker's entries.

A token event carrying logprobs has `"lp": [entry, ...]`, one entry per model token of
its piece: `{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
"bytes"}, ...]}`, which is already what chat completions answer under
`choices[i].logprobs.content`. Legacy completions answer four parallel lists instead:
`tokens`, `token_logprobs`, `top_logprobs` (one `{token: logprob}` per token) and
`text_offset` (where each token starts in the choice's text).
"""

from __future__ import annotations

from typing import Any


def chat_logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """`choices[i].logprobs` of a chat answer or chunk."""
    content = [
        {
            "token": str(entry.get("token", "")),
            "logprob": float(entry.get("logprob", 0.0)),
            "bytes": entry.get("bytes"),
            "top_logprobs": [
                {
                    "token": str(t.get("token", "")),
                    "logprob": float(t.get("logprob", 0.0)),
                    "bytes": t.get("bytes"),
                }
                for t in entry.get("top_logprobs") or []
            ],
        }
        for entry in entries
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(entries: list[dict[str, Any]], offset: int) -> dict[str, Any]:
    """`choices[i].logprobs` of a completion answer or chunk whose text starts at
    character `offset` of the choice's text."""
    tokens: list[str] = []
    offsets: list[int] = []
    for entry in entries:
        token = str(entry.get("token", ""))
        tokens.append(token)
        offsets.append(offset)
        offset += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": [float(e.get("logprob", 0.0)) for e in entries],
        "top_logprobs": [
            {
                str(t.get("token", "")): float(t.get("logprob", 0.0))
                for t in e.get("top_logprobs") or []
            }
            for e in entries
        ],
        "text_offset": offsets,
    }
