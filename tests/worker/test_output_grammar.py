"""Which grammar a request's response_format and tool_choice make, and which it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from jobs import Infer, InvalidRequest
from worker._grammar import output_grammar

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
HI = [{"role": "user", "content": "hi"}]


def infer(**fields: Any) -> Infer:
    return Infer.model_validate({"model": "m", "messages": HI, **fields})


def test_free_text_unless_json_or_a_forced_call_is_asked_for() -> None:
    """No grammar for plain text, `auto` or `none` tools; a JSON grammar otherwise, whose
    root is an array only for `required` with parallel calls."""
    assert output_grammar(infer()) is None
    assert output_grammar(infer(response_format={"type": "text"})) is None
    assert output_grammar(infer(tools=TOOLS, tool_choice="auto")) is None
    assert output_grammar(infer(tools=TOOLS, tool_choice="none")) is None
    json_object = output_grammar(infer(response_format={"type": "json_object"}))
    assert json_object is not None and "root ::= object" in json_object
    many = output_grammar(infer(tools=TOOLS, tool_choice="required"))
    one = output_grammar(infer(tools=TOOLS, tool_choice="required", parallel_tool_calls=False))
    assert many is not None and many.split("root ::= ")[1].startswith('"["')
    assert (
        one is not None
        and '"\\"get_weather\\""' in one
        and not one.split("root ::= ")[1].startswith('"["')
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "retrieval"}], "tool_choice": "required"}, "tools[0]"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"type": "string", "format": "email"}},
                }
            },
            "response_format.json_schema.schema.format",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "schema": {
                            "type": "object",
                            "properties": {"n": {"type": "integer", "minimum": 1}},
                        }
                    },
                }
            },
            "response_format.json_schema.schema.properties.n.minimum",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema.schema",
        ),
        (
            {"response_format": {"type": "json_object"}, "tools": TOOLS, "tool_choice": "required"},
            "response_format",
        ),
    ],
)
def test_what_a_grammar_cannot_enforce_is_a_400_naming_it(
    fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        output_grammar(infer(**fields))
    assert refused.value.status == 400 and refused.value.detail == {"field": field}
