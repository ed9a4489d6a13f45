"""Every request field of the OpenAI door is mapped to the `infer` job, refused with a 400
naming it, or inert (issue 26): nothing is silently dropped. Without workers: the door's
mapping, its tool-call parser and its logprobs shapes, and its refusals over HTTP."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from queen._openai_errors import DoorError
from queen._openai_logprobs import completion_logprobs
from queen._openai_tools import Tools, parse_calls
from queen._openai_wire import ChatBody, CompletionBody, Plan, parse
from tests.support import RunningQueen

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
USER = [{"role": "user", "content": "hi"}]


def _chat(**fields: Any) -> Plan:
    return parse(ChatBody, json.dumps({"model": "m", "messages": USER, **fields}).encode()).plan()


def _completion(**fields: Any) -> Plan:
    return parse(CompletionBody, json.dumps({"model": "m", **fields}).encode()).plan()


def _refused(make: Any, **fields: Any) -> DoorError:
    with pytest.raises(DoorError) as refused:
        make(**fields)
    assert refused.value.status == 400
    return refused.value


def test_chat_fields_reach_the_infer_job_as_openai_spells_them() -> None:
    """Sampling, penalties, logit_bias, n, logprobs, response_format and tools all reach
    the job; developer turns are system turns; tool turns keep their call ids."""
    schema = {"name": "answer", "schema": {"type": "object"}, "strict": True}
    messages: list[dict[str, Any]] = [
        {"role": "developer", "content": "be brief"},
        *USER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    plan = _chat(
        messages=messages,
        max_completion_tokens=7,
        temperature=0.1,
        top_p=0.5,
        top_k=3,
        seed=4,
        stop="x",
        n=3,
        presence_penalty=1.5,
        frequency_penalty=-1,
        logit_bias={"42": -100},
        logprobs=True,
        top_logprobs=2,
        response_format={"type": "json_schema", "json_schema": schema},
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        user="u",
        metadata={"k": "v"},
        store=False,
        service_tier="auto",
        modalities=["text"],
    )
    (op,) = plan.ops
    assert (op.max_tokens, op.temperature, op.top_p, op.top_k, op.seed) == (7, 0.1, 0.5, 3, 4)
    assert (op.stop, op.n, op.presence_penalty, op.frequency_penalty) == (["x"], 3, 1.5, -1)
    assert (op.logit_bias, op.logprobs) == ({"42": -100}, 2)
    assert op.response_format == {"type": "json_schema", "json_schema": schema}
    assert (op.tools, op.tool_choice, op.parallel_tool_calls) == ([WEATHER], "required", False)
    assert op.messages is not None
    assert [m.role for m in op.messages] == ["system", "user", "assistant", "tool"]
    assert op.messages[2].tool_calls == messages[2]["tool_calls"]
    assert op.messages[3].tool_call_id == "call_1"
    assert plan.n == 3 and plan.logprobs and plan.tools is not None
    assert plan.tools.mode == "forced"
    assert _chat(logprobs=True).ops[0].logprobs == 0  # the chosen token's alone
    assert _chat(logprobs=False).ops[0].logprobs is None


def test_fields_the_workers_cannot_honour_are_400s_naming_them() -> None:
    """An unknown field, audio, images, deprecated functions, suffix, top_logprobs without
    logprobs, an unknown response_format or tool_choice: each a 400 whose param names it."""
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    cases: list[tuple[Any, dict[str, Any], str]] = [
        (_chat, {"max_token": 5}, "max_token"),
        (_chat, {"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        (_chat, {"modalities": ["text", "audio"]}, "modalities"),
        (_chat, {"functions": [WEATHER["function"]]}, "functions"),
        (_chat, {"reasoning_effort": "low"}, "reasoning_effort"),
        (_chat, {"messages": [{"role": "user", "content": image}]}, "messages[0].content[0]"),
        (_chat, {"messages": [{"role": "critic", "content": "x"}]}, "messages[0].role"),
        (_chat, {"top_logprobs": 2}, "top_logprobs"),
        (_chat, {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        (_chat, {"response_format": {"type": "xml"}}, "response_format.type"),
        (_chat, {"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (_chat, {"tools": [WEATHER], "tool_choice": _named("nope")}, "tool_choice"),
        (_chat, {"tool_choice": "required"}, "tool_choice"),
        (_chat, {"tools": [{"type": "custom", "custom": {}}]}, "tools[0].type"),
        (_chat, {"logit_bias": {"abc": 1}}, "logit_bias.abc.[key]"),
        (_completion, {"prompt": "p", "suffix": "end"}, "suffix"),
        (_completion, {"prompt": "p", "best_of": 3}, "best_of"),
        (_completion, {"prompt": "p", "echo": True, "logprobs": 1}, "echo"),
        (_completion, {"prompt": []}, "prompt"),
    ]
    for make, fields, param in cases:
        assert _refused(make, **fields).param == param, fields


def _named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def test_completion_prompts_as_texts_and_token_ids_make_one_job_each() -> None:
    """A list of prompts runs a job per prompt; token ids travel as `tokens`; echo and
    logprobs reach each job."""
    assert [op.prompt for op in _completion(prompt=["a", "b"], n=2).ops] == ["a", "b"]
    assert _completion(prompt=[1, 2, 3]).ops[0].tokens == [1, 2, 3]
    ops = _completion(prompt=[[1, 2], [3]], echo=True).ops
    assert [(op.tokens, op.echo) for op in ops] == [([1, 2], True), ([3], True)]
    assert _completion(prompt="p", logprobs=3, best_of=1).ops[0].logprobs == 3


def test_tool_calls_are_read_in_each_template_s_format_and_only_for_offered_tools() -> None:
    """Hermes, Mistral (both forms), Llama 3 (bare and python_tag) and the grammar's forced
    JSON give OpenAI tool_calls (`call_` ids, arguments a JSON string); a call of a tool
    nobody offered stays text; parallel_tool_calls false keeps the first."""
    auto = Tools.parse([WEATHER], None, None)
    args = '{"city": "Paris"}'
    texts = [
        f'<tool_call>\n{{"name": "get_weather", "arguments": {args}}}\n</tool_call>',
        f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {args}}}]',
        f"[TOOL_CALLS]get_weather[ARGS]{args}",
        f'{{"name": "get_weather", "parameters": {args}}}',
        f'<|python_tag|>{{"name": "get_weather", "parameters": {args}}}',
    ]
    for text in texts:
        (call,) = parse_calls(text, auto)
        assert call["id"].startswith("call_") and call["type"] == "function", text
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert parse_calls('{"name": "other", "arguments": {}}', auto) == []
    two = f'[{{"name": "get_weather", "arguments": {args}}}, {{"name": "get_weather"}}]'
    forced = Tools.parse([WEATHER], "required", None)
    assert len(parse_calls(two, forced)) == 2
    assert len(parse_calls(two, Tools.parse([WEATHER], "required", False))) == 1


def test_a_streamed_call_is_held_back_and_plain_text_flows() -> None:
    """While a call may be forming its text is held (a marker split across pieces too);
    plain text streams as it comes; a marker that leads to no call is given back."""
    reader = Tools.parse([WEATHER], "auto", None).reader()
    pieces = ["Let me ", "check. <tool", '_call>{"name": "get_weather", ', '"arguments": {}}']
    assert [reader.feed(p) for p in pieces] == ["Let me ", "check. ", "", ""]
    rest, calls = reader.finish()
    assert rest == "" and calls[0]["function"] == {"name": "get_weather", "arguments": "{}"}
    plain = Tools.parse([WEATHER], "auto", None).reader()
    assert [plain.feed(p) for p in ["Hello", " <b>", " world"]] == ["Hello", " <b>", " world"]
    assert plain.finish() == ("", [])
    broken = Tools.parse([WEATHER], "auto", None).reader()
    assert broken.feed("<tool_call>not json") == ""
    assert broken.finish() == ("<tool_call>not json", [])


def test_completion_logprobs_are_openai_s_four_lists() -> None:
    """tokens, token_logprobs, top_logprobs as {token: logprob}, and text_offset counting
    from where the piece starts in the choice's text."""
    entries = [
        {"token": "He", "logprob": -0.5, "bytes": [72, 101], "top_logprobs": []},
        {
            "token": "llo",
            "logprob": -1.0,
            "bytes": [108, 108, 111],
            "top_logprobs": [{"token": "llo", "logprob": -1.0}, {"token": "y", "logprob": -2.0}],
        },
    ]
    shaped = completion_logprobs(entries, 10)
    assert shaped == {
        "tokens": ["He", "llo"],
        "token_logprobs": [-0.5, -1.0],
        "top_logprobs": [{}, {"llo": -1.0, "y": -2.0}],
        "text_offset": [10, 12],
    }


@pytest.mark.anyio
async def test_the_official_client_gets_400s_naming_the_field_before_any_job(
    queen: RunningQueen,
) -> None:
    """Over HTTP, with the `openai` client: a refused field is a BadRequestError whose
    param names it, and no job was submitted for it (the queen's hive is down: a submitted
    job would have been a 502)."""
    client = openai.AsyncOpenAI(base_url=f"{queen.url}/v1", api_key="unused", max_retries=0)
    async with client:
        with pytest.raises(openai.BadRequestError) as image:
            await client.chat.completions.create(
                model="builtin:tiny",
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}},
                        ],
                    }
                ],
            )
        with pytest.raises(openai.BadRequestError) as unknown:
            await client.completions.create(
                model="builtin:tiny", prompt="p", extra_body={"mirostat": 2}
            )
        with pytest.raises(openai.BadRequestError) as tool:
            await client.chat.completions.create(  # type: ignore[call-overload]
                model="builtin:tiny", messages=USER, tools=[WEATHER], tool_choice=_named("nope")
            )
    assert image.value.param == "messages[0].content[1]"
    assert unknown.value.param == "mirostat"
    assert tool.value.param == "tool_choice"
    async with httpx.AsyncClient(base_url=queen.url, trust_env=False) as http:
        jobs = (await http.get("/v1/jobs")).json()["jobs"]
    assert jobs == []
