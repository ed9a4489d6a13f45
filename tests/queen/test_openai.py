"""The queen's OpenAI-compatible door without workers: prompts, error shapes, the model list."""

from __future__ import annotations

import httpx
import pytest

from hive.tiny_model import CHAT_TEMPLATE
from queen.openai import FALLBACK_TEMPLATE, Message, render_chat
from tests.queen.conftest import RunningQueen


def test_chat_prompt_uses_the_template_or_builtin_tiny_s() -> None:
    """Messages go through the given chat template (text parts joined); without one, the
    fallback is exactly builtin:tiny's own template."""
    messages = [
        Message(role="system", content="be brief"),
        Message(role="user", content=[{"type": "text", "text": "hi"}, {"type": "image_url"}]),
    ]
    own = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
    assert render_chat(messages, own) == "[system]be brief[user]hi"
    assert FALLBACK_TEMPLATE == CHAT_TEMPLATE
    assert render_chat(messages, None) == (
        "<|system|>\nbe brief</s>\n<|user|>\nhi</s>\n<|assistant|>\n"
    )


@pytest.mark.anyio
async def test_errors_have_openai_s_shape_and_models_lists_builtin_tiny(
    queen: RunningQueen,
) -> None:
    """A malformed body is a 400, and a prompt whose hive is down a 502 naming the hive,
    both in OpenAI's shape {"error": {message, type, param, code}}; GET /v1/models still
    lists builtin:tiny."""
    async with httpx.AsyncClient(base_url=queen.url, trust_env=False) as http:
        bad = await http.post("/v1/chat/completions", json={"model": "builtin:tiny"})
        down = await http.post(
            "/v1/completions", json={"model": "builtin:tiny", "prompt": "hi", "stream": True}
        )
        models = await http.get("/v1/models")
    assert bad.status_code == 400
    assert set(bad.json()["error"]) == {"message", "type", "param", "code"}
    assert bad.json()["error"]["param"] == "messages"
    assert down.status_code == 502
    assert down.json()["error"]["message"].startswith("hive localhost unreachable at ")
    assert down.json()["error"]["type"] == "server_error"
    assert models.json()["object"] == "list"
    assert "builtin:tiny" in {m["id"] for m in models.json()["data"]}
