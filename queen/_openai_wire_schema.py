"""What /openapi.json states for the request fields the OpenAI door checks itself (to
name the field in its own words): exactly the values it accepts, so a client reading the
document never sends a body the door then refuses. What JSON Schema cannot say (a named
tool_choice must name one of `tools`; best_of equal to n) is in the descriptions."""

from __future__ import annotations

from typing import Any

from pydantic import WithJsonSchema

REFUSED_SCHEMA = WithJsonSchema({"type": "null", "description": "refused unless null"})
NAME_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
TEXT_PARTS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "type": {"enum": ["text", "refusal"]},
            "text": {"type": ["string", "null"]},
            "refusal": {"type": ["string", "null"]},
        },
        "required": ["type"],
        "additionalProperties": False,
    },
}
CONTENT_SCHEMA = WithJsonSchema({"anyOf": [{"type": "string"}, TEXT_PARTS, {"type": "null"}]})
OBJECT = {"type": "object"}
TOOLS_SCHEMA = WithJsonSchema(
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "type": {"const": "function"},
                "function": {
                    "type": "object",
                    "properties": {
                        "name": NAME_SCHEMA,
                        "description": {"type": "string"},
                        "parameters": OBJECT,
                        "strict": {"type": "boolean"},
                    },
                    "required": ["name"],
                    "additionalProperties": False,
                },
            },
            "required": ["type", "function"],
            "additionalProperties": False,
        },
    }
)
TOOL_CHOICE_SCHEMA = WithJsonSchema(
    {
        "description": 'also "required", or {"type": "function", "function": {"name"}} '
        "naming one of `tools`, when tools are given",
        "anyOf": [{"enum": ["none", "auto"]}, {"type": "null"}],
    }
)
RESPONSE_FORMAT_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {
                "type": "object",
                "properties": {"type": {"enum": ["text", "json_object"]}},
                "required": ["type"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {
                    "type": {"const": "json_schema"},
                    "json_schema": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "schema": OBJECT,
                            "strict": {"type": ["boolean", "null"]},
                            "description": {"type": "string"},
                        },
                        "required": ["name"],
                        "additionalProperties": False,
                    },
                },
                "required": ["type", "json_schema"],
                "additionalProperties": False,
            },
            {"type": "null"},
        ]
    }
)


def chat_schema(schema: dict[str, Any]) -> None:
    """What the door checks across fields: top_logprobs only with logprobs true."""
    schema["if"] = {
        "required": ["top_logprobs"],
        "properties": {"top_logprobs": {"type": "integer"}},
    }
    schema["then"] = {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}}


def completion_schema(schema: dict[str, Any]) -> None:
    """What the door checks across fields: echo and logprobs not together."""
    schema["if"] = {"required": ["echo"], "properties": {"echo": {"const": True}}}
    schema["then"] = {"properties": {"logprobs": {"type": "null"}}}


TOKEN = {"type": "integer", "minimum": 0}
PROMPTS_MAX = 16  # prompts in one completion request (queen._openai_wire)
PROMPT_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": PROMPTS_MAX},
            {"type": "array", "items": TOKEN, "minItems": 1},
            {
                "type": "array",
                "items": {"type": "array", "items": TOKEN, "minItems": 1},
                "minItems": 1,
                "maxItems": PROMPTS_MAX,
            },
        ]
    }
)
LOGIT_BIAS_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {
                "type": "object",
                "patternProperties": {
                    "^[0-9]{1,9}$": {"type": "number", "minimum": -100, "maximum": 100}
                },
                "additionalProperties": False,
                "description": "token id -> bias added to its logit",
            },
            {"type": "null"},
        ]
    }
)


def message_schema(schema: dict[str, Any]) -> None:
    """A tool turn names the call it answers."""
    schema["if"] = {"required": ["role"], "properties": {"role": {"const": "tool"}}}
    schema["then"] = {
        "required": ["tool_call_id"],
        "properties": {"tool_call_id": {"type": "string", "minLength": 1}},
    }
