"""The queen's OpenAI-compatible door without workers: prompts, error shapes, the model list."""

from __future__ import annotations

import httpx
import pytest

from queen._openai_errors import DoorError
from queen.openai import Message
from tests.support import RunningQueen


def test_a_chat_message_s_text_parts_are_joined_and_an_image_part_refused() -> None:
    """A message whose content is a list of text parts is their text joined; an assistant
    message with no content is empty text; an image part is a 400 naming it (these
    workers read text only: the model would describe an image it never saw)."""
    parts = [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]
    assert Message(role="user", content=parts).text() == "hi"
    assert Message(role="assistant", content=None).text() == ""
    with pytest.raises(DoorError) as refused:
        Message(role="user", content=[*parts, {"type": "image_url"}]).text("messages[0].content")
    assert refused.value.status == 400
    assert refused.value.param == "messages[0].content[2]"


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
