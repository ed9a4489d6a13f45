"""The OpenAI door answers errors as OpenAI does, so the official client raises the right
class and does not retry a caller's mistake: 404 `model_not_found`, 400
`context_length_exceeded`, and the job server's own refusals (401, 408, 413, 415) in
OpenAI's `{"error": {message, type, param, code}}` shape; its routes are in /openapi.json."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs import InvalidRequest
from queen._openai_errors import from_job_error
from tests.support import RunningQueen, door_client, queen_settings, queen_with_hive, start_queen

OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}
LONG_PROMPT = "bees " * 400  # more tokens than builtin:tiny's 256-token context


async def door_answers(queen_url: str, status: int) -> float:
    """How many door requests the queen's /metrics says it answered with `status`."""
    async with httpx.AsyncClient(base_url=queen_url, trust_env=False) as http:
        text = (await http.get("/metrics")).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "rbee_requests_total" and sample.labels["status"] == str(status)
    )


@pytest.mark.anyio
async def test_an_unknown_model_is_a_404_model_not_found_that_the_client_does_not_retry(
    queen: RunningQueen,
) -> None:
    """A model no worker, catalog or reference names: openai.NotFoundError with code
    model_not_found, from one request (the client, retries on, sent no second) and no job."""
    async with door_client(queen) as client:
        with pytest.raises(openai.NotFoundError) as raised:
            await client.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": "hi"}]
            )
    assert raised.value.code == "model_not_found"
    assert raised.value.param == "model"
    assert await door_answers(queen.url, 404) == 1
    async with httpx.AsyncClient(base_url=queen.url, trust_env=False) as http:
        assert (await http.get("/v1/jobs")).json()["jobs"] == []


@pytest.mark.anyio
async def test_a_listed_model_can_be_retrieved_and_an_unlisted_one_is_model_not_found(
    queen: RunningQueen,
) -> None:
    """GET /v1/models/{id} answers the model for builtin:tiny and 404 model_not_found for
    a name the list does not hold."""
    async with door_client(queen) as client:
        model = await client.models.retrieve("builtin:tiny")
        with pytest.raises(openai.NotFoundError) as raised:
            await client.models.retrieve("no-such-model")
    assert (model.id, model.object, model.owned_by) == ("builtin:tiny", "model", "rbee")
    assert raised.value.code == "model_not_found"


@pytest.mark.anyio
async def test_the_job_server_s_refusals_on_the_door_are_in_openai_s_shape(
    rbee_home: Path,
) -> None:
    """A body over the limit (413), a body that is not JSON (415) and a body that does
    not arrive in time (408) are answered in OpenAI's error shape on the door's paths,
    while the job routes keep their own `{error, detail}`."""
    settings = queen_settings(rbee_home, max_body_bytes=1000, body_read_timeout_s=0.3)
    async with start_queen(settings) as queen:
        async with door_client(queen) as client:
            with pytest.raises(openai.APIStatusError) as too_large:
                await client.completions.create(model="builtin:tiny", prompt="b" * 2000)
        async with httpx.AsyncClient(base_url=queen.url, trust_env=False) as http:
            not_json = await http.post(
                "/v1/completions", content="{}", headers={"Content-Type": "text/plain"}
            )
            jobs_route = await http.post(
                "/v1/jobs", content="{}", headers={"Content-Type": "text/plain"}
            )
        late = await trickled(queen.url, "/v1/chat/completions")
    assert too_large.value.status_code == 413
    assert too_large.value.code == "request_too_large"
    assert not_json.status_code == 415
    assert set(not_json.json()["error"]) == OPENAI_ERROR_KEYS
    assert not_json.json()["error"]["type"] == "invalid_request_error"
    assert set(jobs_route.json()) == {"error", "detail"}
    assert late.startswith("HTTP/1.1 408")
    body = json.loads(late.split("\r\n\r\n", 1)[1])
    assert set(body["error"]) == OPENAI_ERROR_KEYS
    assert body["error"]["code"] == "request_timeout"


async def trickled(queen_url: str, path: str) -> str:
    """POST to `path` declaring a body it never finishes sending; the whole answer."""
    host, port = queen_url.removeprefix("http://").split(":")
    async with await anyio.connect_tcp(host, int(port)) as conn:
        await conn.send(
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n{".encode()
        )
        answer = b""
        with anyio.fail_after(10):
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                answer += await conn.receive()
    return answer.decode()


@pytest.mark.anyio
async def test_a_wrong_api_key_is_openai_s_authentication_error(rbee_home: Path) -> None:
    """With a queen token, an API key that is not it gets openai.AuthenticationError
    (401, code invalid_api_key); the right key lists the models."""
    async with start_queen(queen_settings(rbee_home, token="s3cret")) as queen:
        async with door_client(queen, api_key="wrong") as client:
            with pytest.raises(openai.AuthenticationError) as raised:
                await client.models.list()
        async with door_client(queen, api_key="s3cret") as client:
            listed = [m.id async for m in client.models.list()]
    assert raised.value.code == "invalid_api_key"
    assert "builtin:tiny" in listed


@pytest.mark.anyio
async def test_openapi_json_lists_the_door_s_routes_and_metrics(queen: RunningQueen) -> None:
    """/openapi.json describes the door (chat, completions, models, a model) and /metrics,
    with the chat body's schema requiring `messages`."""
    async with httpx.AsyncClient(base_url=queen.url, trust_env=False) as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
    door = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/models/{model}"}
    assert door | {"/metrics"} <= set(paths)
    chat = paths["/v1/chat/completions"]["post"]
    assert "messages" in chat["requestBody"]["content"]["application/json"]["schema"]["required"]
    assert {"400", "404", "413"} <= set(chat["responses"])


@pytest.mark.anyio
@pytest.mark.process
async def test_a_prompt_over_the_context_or_a_missing_model_file_is_the_caller_s_400(
    rbee_home: Path, tmp_path: Path
) -> None:
    """A prompt over builtin:tiny's context gets openai.BadRequestError with code
    context_length_exceeded, streamed or not (the stream fails before its first chunk);
    a model path with no file behind it is a BadRequestError naming `model` (the hive
    refused it), not a 5xx; a prompt that fits still completes."""
    missing = str(tmp_path / "missing.gguf")
    async with queen_with_hive(rbee_home) as (queen, _), door_client(queen) as client:
        fits = await client.completions.create(model="builtin:tiny", prompt="hi", max_tokens=2)
        with pytest.raises(openai.BadRequestError) as whole:
            await client.completions.create(model="builtin:tiny", prompt=LONG_PROMPT)
        with pytest.raises(openai.BadRequestError) as streamed:
            await client.chat.completions.create(
                model="builtin:tiny",
                messages=[{"role": "user", "content": LONG_PROMPT}],
                stream=True,
            )
        with pytest.raises(openai.BadRequestError) as no_file:
            await client.completions.create(model=missing, prompt="hi")
    assert fits.choices[0].finish_reason in ("stop", "length")
    assert whole.value.code == "context_length_exceeded"
    assert whole.value.param == "prompt"
    assert "maximum context length is 256 tokens" in whole.value.message
    assert streamed.value.code == "context_length_exceeded"
    assert streamed.value.param == "messages"
    assert no_file.value.param == "model"
    assert missing in no_file.value.message


@pytest.mark.parametrize(("status", "code"), [(429, "rate_limit_exceeded"), (503, "overloaded")])
def test_an_overloaded_queen_says_when_to_come_back(status: int, code: str) -> None:
    """An infer job refused for load (the scheduler's full queue) is answered with its
    status, OpenAI's code for it and the scheduler's guess as the Retry-After header."""
    refused = InvalidRequest("busy; retry in 7 s", status=status, detail={"retry_after": 7})
    response = from_job_error(refused, param="prompt").response()
    assert response.status_code == status
    assert response.headers["retry-after"] == "7"
    assert json.loads(bytes(response.body))["error"]["code"] == code
