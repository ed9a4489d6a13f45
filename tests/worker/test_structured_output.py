"""Structured output and forced tool calls on the real worker with a real chat model
(builtin:smollm2, SmolLM2-135M-Instruct): whatever the model would have said, the answer
is JSON that parses and validates against the schema asked for."""

from __future__ import annotations

import json
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from tests.support import RunningProgram, infer, text_of

pytestmark = pytest.mark.anyio

BEEKEEPER = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer"},
        "hives": {
            "type": "array",
            "items": {"enum": ["top-bar", "langstroth", "skep"]},
            "maxItems": 3,
        },
        "likes_honey": {"type": "boolean"},
    },
    "required": ["name", "age", "hives", "likes_honey"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 30}},
    "required": ["zone"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
ASK = [{"role": "user", "content": "Describe a beekeeper."}]
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
MAX_TOKENS = 120  # room for the whole object; a cut-off answer would not parse


async def answer(worker: RunningProgram, messages: list[dict[str, Any]], **fields: Any) -> Any:
    """The answer's text read as JSON, once the generation stopped on its own."""
    events = await infer(worker.url, "", messages=messages, max_tokens=MAX_TOKENS, **fields)
    assert events[-1].data["result"]["stop_reason"] == "stop", text_of(events)
    return json.loads(text_of(events))


async def test_json_schema_answers_always_parse_and_validate(chat_worker: RunningProgram) -> None:
    """Sampled at temperature 0.8 with three seeds, each answer is the schema's object;
    json_object gives a JSON object, where the same question unconstrained does not."""
    fmt = {"type": "json_schema", "json_schema": {"name": "beekeeper", "schema": BEEKEEPER}}
    for seed in (1, 2, 3):
        value = await answer(chat_worker, ASK, temperature=0.8, seed=seed, response_format=fmt)
        jsonschema.validate(value, BEEKEEPER)
    loose = await answer(chat_worker, ASK, seed=4, response_format={"type": "json_object"})
    assert isinstance(loose, dict)
    free = await infer(chat_worker.url, "", messages=ASK, max_tokens=24, temperature=0)
    with pytest.raises(ValueError):
        json.loads(text_of(free))


async def test_a_forced_tool_call_parses_and_its_arguments_validate(
    chat_worker: RunningProgram,
) -> None:
    """A named function: exactly {"name", "arguments"} of that function, the arguments
    valid for its parameters. "required" with parallel calls: a list of one or more calls
    of the tools given; without parallel calls, one call."""
    named = {"type": "function", "function": {"name": "get_time"}}
    call = await answer(chat_worker, ASK_WEATHER, seed=1, tools=TOOLS, tool_choice=named)
    assert set(call) == {"name", "arguments"} and call["name"] == "get_time"
    jsonschema.validate(call["arguments"], TIME)
    calls = await answer(chat_worker, ASK_WEATHER, seed=2, tools=TOOLS, tool_choice="required")
    assert isinstance(calls, list) and calls
    single = await answer(
        chat_worker,
        ASK_WEATHER,
        seed=3,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
    )
    for each in [*calls, single]:
        schema = {"get_weather": WEATHER, "get_time": TIME}[each["name"]]
        jsonschema.validate(each["arguments"], schema)
