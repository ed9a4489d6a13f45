"""Grammars (GBNF) for constrained output: OpenAI's `response_format` and forced tool calls.

    grammar = output_grammar(op)   # None: free text

JSON schemas become GBNF through llama-cpp-python's `json_schema_to_gbnf` (llama.cpp's
json-schema-to-grammar, in Python). It reads the structural keywords of JSON Schema and
ignores the rest, so a schema is checked first: a keyword it would ignore (`minimum`,
`uniqueItems`, an unknown `format`...) is refused (400 naming it), since output that only
seems constrained by it is a field accepted and ignored.

A forced tool call (`tool_choice` "required" or a named function) is exactly the JSON
object `{"name": "<function>", "arguments": {...its parameters}}`; with "required" and
`parallel_tool_calls`, a JSON array of one or more of them.
"""

from __future__ import annotations

import json
from typing import Any

from jobs import Infer, InvalidRequest

ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated"}
    | {"readOnly", "writeOnly"}
)
STRUCTURE = frozenset(
    {"type", "properties", "required", "additionalProperties", "items", "prefixItems"}
    | {"minItems", "maxItems", "enum", "const", "oneOf", "anyOf", "allOf", "$ref", "$defs"}
    | {"definitions", "pattern", "format", "minLength", "maxLength"}
)
TYPES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})
FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4"})
FORMATS_ALL = FORMATS | {"uuid5"}
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def output_grammar(op: Infer) -> str | None:
    """The GBNF `op`'s output must match, or None; raises InvalidRequest (400) naming the
    field for a shape it cannot honour."""
    tools = _forced_tools(op)
    fmt = op.response_format
    kind = None if fmt is None else fmt.get("type")
    if tools is not None and kind not in (None, "text"):
        raise InvalidRequest(
            "response_format and a forced tool_choice both constrain the answer; send one",
            status=400,
            detail={"field": "response_format"},
        )
    if tools is not None:
        calls = [_call_schema(t) for t in tools]
        one: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
        many = op.parallel_tool_calls and op.tool_choice == "required"
        call = {"type": "array", "items": one, "minItems": 1} if many else one
        return schema_grammar(call, "tools")
    if fmt is None or kind == "text":
        return None
    if kind == "json_object":
        return schema_grammar(ANY_OBJECT)
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest(
                "response_format.json_schema.schema must be a JSON schema object",
                status=400,
                detail={"field": "response_format.json_schema.schema"},
            )
        check_schema(schema, "response_format.json_schema.schema")
        return schema_grammar(schema, "response_format.json_schema.schema")
    raise InvalidRequest(
        f"response_format.type {kind!r} is not one of text, json_object, json_schema",
        status=400,
        detail={"field": "response_format.type"},
    )


def schema_grammar(schema: dict[str, Any], where: str = "response_format") -> str:
    """GBNF for a checked JSON schema (llama-cpp-python's converter); `where` names the
    field that sent it, for the 400 when it cannot be converted."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter asserts, indexes and compiles as it goes
        raise InvalidRequest(
            f"the JSON schema cannot be turned into a grammar ({exc}); simplify it",
            status=400,
            detail={"field": where},
        ) from None


def check_schema(schema: Any, where: str) -> None:
    """Raise InvalidRequest (400) naming the first keyword the grammar would not enforce."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        _refuse(where, "is not a JSON schema object")
    for key, value in schema.items():
        at = f"{where}.{key}"
        if key in ANNOTATIONS:
            continue
        if key not in STRUCTURE:
            _refuse(at, "is a JSON schema keyword structured output does not enforce")
        if key == "type":
            named = value if isinstance(value, list) else [value]
            if not all(isinstance(t, str) and t in TYPES for t in named):
                _refuse(at, f"must name JSON types ({', '.join(sorted(TYPES))})")
        elif key == "format" and value not in FORMATS_ALL:
            _refuse(at, f"{value!r} is not enforced (only {', '.join(sorted(FORMATS))})")
        elif key in ("properties", "$defs", "definitions"):
            if not isinstance(value, dict):
                _refuse(at, "must be an object of schemas")
            for name, sub in value.items():
                check_schema(sub, f"{at}.{name}")
        elif key in ("items", "additionalProperties"):
            if isinstance(value, list):
                for i, sub in enumerate(value):
                    check_schema(sub, f"{at}[{i}]")
            else:
                check_schema(value, at)
        elif key in ("prefixItems", "oneOf", "anyOf", "allOf"):
            if not isinstance(value, list):
                _refuse(at, "must be a list of schemas")
            for i, sub in enumerate(value):
                check_schema(sub, f"{at}[{i}]")
        elif key == "$ref" and not (isinstance(value, str) and value.startswith("#")):
            _refuse(at, "must point inside the schema (#/...); remote schemas are not fetched")


def _refuse(where: str, why: str) -> None:
    raise InvalidRequest(f"{where} {why}; remove it", status=400, detail={"field": where})


def _forced_tools(op: Infer) -> list[dict[str, Any]] | None:
    """The functions a forced tool_choice calls (checked), or None when not forced."""
    choice = op.tool_choice
    if choice is None or choice in ("auto", "none"):
        return None
    if not op.tools:
        raise InvalidRequest(
            "tool_choice forces a tool call but no tools were sent; send tools",
            status=400,
            detail={"field": "tool_choice"},
        )
    functions = [tool_function(t, i) for i, t in enumerate(op.tools)]
    if choice == "required":
        return functions
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise InvalidRequest(
            'tool_choice must be "none", "auto", "required" or '
            '{"type": "function", "function": {"name": ...}}',
            status=400,
            detail={"field": "tool_choice"},
        )
    named = [f for f in functions if f["name"] == name]
    if not named:
        raise InvalidRequest(
            f"tool_choice names {name!r}, which is not one of the tools sent",
            status=400,
            detail={"field": "tool_choice"},
        )
    return named


def tool_function(tool: dict[str, Any], i: int, *, constrained: bool = True) -> dict[str, Any]:
    """tools[i]'s function; its parameters checked when a grammar is to enforce them."""
    function = tool.get("function") if tool.get("type") == "function" else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise InvalidRequest(
            f'tools[{i}] must be {{"type": "function", "function": {{"name": ...}}}}',
            status=400,
            detail={"field": f"tools[{i}]"},
        )
    if constrained:
        check_schema(function.get("parameters", ANY_OBJECT), f"tools[{i}].function.parameters")
    return function


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "name": {"const": function["name"]},
            "arguments": function.get("parameters") or ANY_OBJECT,
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def grammar_parses(vocab: Any, grammar: str) -> bool:
    """Whether llama.cpp takes `grammar` for this model's vocabulary (reads the model only,
    so any thread may ask)."""
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True
