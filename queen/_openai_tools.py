"""Tools at the OpenAI door: the request's `tools` and `tool_choice` checked, and the
calls a model wrote turned into OpenAI's `tool_calls`.

The worker renders the tools through its model's chat template. With `tool_choice`
"required" or a named function its output is grammar-constrained to exactly
`{"name", "arguments"}` (or, with parallel calls, a list of them), so the door reads that
JSON. With "auto" the model writes a call in its own format, which the door recognises:
Hermes/Qwen `<tool_call>{json}</tool_call>`, Mistral `[TOOL_CALLS][{...}]` (or
`[TOOL_CALLS]name[ARGS]{...}`), Llama 3 bare JSON `{"name", "parameters"}` (optionally
after `<|python_tag|>`). Text that names no offered function stays text.

`CallReader` follows one choice's text as it streams: it lets text through until a call
may be forming, then holds the rest, so a call never leaks out as content.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from queen._openai_errors import DoorError

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for a function's name
MARKERS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>")  # where an "auto" call begins
CHOICES = ("none", "auto", "required")
CALL_ID_BYTES = 12  # `call_` + 24 hex digits, as long as OpenAI's ids


@dataclass
class Tools:
    """The tools a request offers and how the model may call them."""

    names: list[str] = field(default_factory=list)
    mode: str = "none"  # "none": no calls; "auto": the model's choice; "forced": must call
    parallel: bool = True
    given: dict[str, Any] = field(default_factory=dict)  # the Infer fields, as sent

    @classmethod
    def parse(cls, tools: list[dict[str, Any]] | None, choice: Any, parallel: bool | None) -> Tools:
        """The request's tool fields checked: a 400 names the first wrong one."""
        names = [_tool_name(tool, index) for index, tool in enumerate(tools or [])]
        mode = "auto" if names else "none"
        if isinstance(choice, str):
            if choice not in CHOICES:
                raise DoorError(
                    f"tool_choice: {choice!r} is not none, auto, required or "
                    '{"type": "function", "function": {"name": …}}',
                    param="tool_choice",
                )
            mode = {"none": "none", "auto": mode, "required": "forced"}[choice]
        elif choice is not None:
            named = _named(choice)
            if named not in names:
                raise DoorError(
                    f"tool_choice: no tool is named {named!r}; name one of the tools",
                    param="tool_choice",
                )
            mode = "forced"
        if mode == "forced" and not names:
            raise DoorError("tool_choice: a required call needs tools", param="tool_choice")
        given: dict[str, Any] = {}
        if names:
            given["tools"] = tools
            if choice is not None:
                given["tool_choice"] = choice
            if parallel is not None:
                given["parallel_tool_calls"] = parallel
        return cls(names, mode, True if parallel is None else parallel, given)

    def infer_fields(self) -> dict[str, Any]:
        return dict(self.given)

    def reader(self) -> CallReader:
        return CallReader(self)


def _tool_name(tool: Any, index: int) -> str:
    where = f"tools[{index}]"
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise DoorError(f"{where}.type: only function tools are supported", param=f"{where}.type")
    function = tool.get("function")
    known = {"name", "description", "parameters", "strict"}
    if not isinstance(function, dict) or set(function) - known:
        raise DoorError(
            f"{where}.function: give {{name, description?, parameters?, strict?}}",
            param=f"{where}.function",
        )
    name = function.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise DoorError(
            f"{where}.function.name: 1 to 64 letters, digits, _ or -",
            param=f"{where}.function.name",
        )
    if not isinstance(function.get("parameters", {}), dict):
        raise DoorError(
            f"{where}.function.parameters: a JSON schema is an object",
            param=f"{where}.function.parameters",
        )
    return name


def _named(choice: Any) -> str:
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not name:
        raise DoorError(
            'tool_choice: name a function as {"type": "function", "function": {"name": …}}',
            param="tool_choice",
        )
    return str(name)


class CallReader:
    """One choice's text, as it streams, split into content and tool calls."""

    def __init__(self, tools: Tools) -> None:
        self.tools = tools
        self.pending = ""  # text not yet let through: it may start a call
        self.capturing = tools.mode == "forced"  # everything goes to the call
        self.emitted = False

    def feed(self, piece: str) -> str:
        """The part of `piece` (with what was held) that is surely content."""
        self.pending += piece
        if self.capturing or self.tools.mode == "none":
            out, self.pending = ("", self.pending) if self.capturing else (self.pending, "")
            return out
        stripped = self.pending.lstrip()
        if not self.emitted and (not stripped or stripped.startswith("{")):
            if stripped:  # a bare JSON call (Llama 3) can only be the whole answer
                self.capturing = True
            return ""
        starts = [i for i in (self.pending.find(m) for m in MARKERS) if i >= 0]
        if starts:
            cut = min(starts)
            out, self.pending = self.pending[:cut], self.pending[cut:]
            self.capturing = True
        else:
            cut = len(self.pending) - _partial_marker(self.pending)
            out, self.pending = self.pending[:cut], self.pending[cut:]
        self.emitted = self.emitted or bool(out)
        return out

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """What remains: the held text as content, or the calls it holds."""
        held, self.pending = self.pending, ""
        if self.tools.mode == "none" or not held.strip():
            return held, []
        calls = parse_calls(held, self.tools)
        return ("", calls) if calls else (held, [])


def _partial_marker(text: str) -> int:
    """The length of the longest end of `text` that begins a marker."""
    for size in range(min(len(text), max(map(len, MARKERS)) - 1), 0, -1):
        if any(m.startswith(text[-size:]) for m in MARKERS):
            return size
    return 0


def parse_calls(text: str, tools: Tools) -> list[dict[str, Any]]:
    """The calls `text` holds, in OpenAI's shape; [] when it holds none of the offered
    functions (the text is then the answer)."""
    found = [call for call in _raw_calls(text.strip()) if call[0] in tools.names]
    if not tools.parallel:
        found = found[:1]
    return [
        {
            "id": f"call_{secrets.token_hex(CALL_ID_BYTES)}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            },
        }
        for name, arguments in found
    ]


def _raw_calls(text: str) -> list[tuple[str, Any]]:
    if text.startswith("<tool_call>"):
        bodies = re.findall(r"<tool_call>(.*?)(?:</tool_call>|$)", text, flags=re.DOTALL)
        return [c for body in bodies for c in _json_calls(body.strip())]
    if text.startswith("[TOOL_CALLS]"):
        rest = text.removeprefix("[TOOL_CALLS]").strip()
        named = re.fullmatch(r"([A-Za-z0-9_-]+)\[ARGS\](.*)", rest, flags=re.DOTALL)
        if named:
            arguments = _json(named.group(2))
            return [] if arguments is None else [(named.group(1), arguments)]
        return _json_calls(rest)
    text = text.removeprefix("<|python_tag|>").strip()
    calls = _json_calls(text)
    if not calls and ";" in text:  # Llama 3.2 separates several calls with ";"
        calls = [c for part in text.split(";") for c in _json_calls(part.strip())]
    return calls


def _json_calls(text: str) -> list[tuple[str, Any]]:
    value = _json(text)
    items = value if isinstance(value, list) else [value]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return []
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            parsed = _json(arguments)
            arguments = arguments if isinstance(parsed, dict) else None
        if not isinstance(arguments, dict | str):
            return []
        calls.append((item["name"], arguments))
    return calls


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
