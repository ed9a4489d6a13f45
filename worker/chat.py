"""Chat messages into one prompt, through the chat template of the model this worker loaded.

    prompt = render_chat(op.messages, engine.chat_template)

One path for every chat: `keeper infer` (unless `--raw`) and the OpenAI door's chat
completions both send `messages` in an `infer`, and the worker that took it renders them:
it alone holds the model's GGUF, so the template is always the loaded model's own
(`tokenizer.chat_template`) and never one guessed before the model loaded. A model
without one gets FALLBACK_TEMPLATE, the `<|role|>` format builtin:tiny carries. Templates
are Jinja from a file downloaded from anywhere: run sandboxed.

`tools` (OpenAI's function list) go to the template as `tools=`, as llama.cpp's server and
Hugging Face's `apply_chat_template` pass them; a template that never reads `tools` gets
them as a system message instead (TOOLS_PROMPT), so the model still knows them. `tool`
turns and an assistant's `tool_calls` pass through (their `arguments`, a JSON string in
OpenAI's wire form, as the object templates print with `tojson`); for a template that
knows no tools, a call is written into the assistant's text as the JSON it stands for.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jobs import ChatMessage, InvalidRequest

if TYPE_CHECKING:
    from jinja2 import Template

FALLBACK_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TOOLS_PROMPT = (
    "You can call these functions:\n{functions}\n"
    'To call one, answer with only a JSON object {{"name": <the function\'s name>, '
    '"arguments": {{<its parameters>}}}}.'
)
READS_TOOLS = re.compile(r"\btools\b")


def render_chat(
    messages: Sequence[ChatMessage],
    template: str | None,
    tools: Sequence[dict[str, Any]] | None = None,
) -> str:
    """The prompt for `messages` (and `tools`, OpenAI's list) through a GGUF chat template
    (sandboxed Jinja); raises InvalidRequest (400) when the template refuses the
    conversation or cannot run."""
    from jinja2.exceptions import TemplateError

    source = template or FALLBACK_TEMPLATE
    native = bool(tools) and READS_TOOLS.search(source) is not None
    turns = [_turn(m, native=native or not tools) for m in messages]
    if tools and not native:
        turns = _with_tools_prompt(turns, tools)
    extra: dict[str, Any] = {"tools": list(tools)} if native and tools else {}
    try:
        return _compiled(source).render(
            messages=turns,
            **extra,
            add_generation_prompt=True,
            bos_token="",  # llama.cpp adds the model's BOS token when it tokenizes
            eos_token="</s>",
            raise_exception=_raise_exception,
        )
    except TemplateError as exc:
        raise InvalidRequest(
            f"the model's chat template failed ({exc}); send the prompt as it is instead "
            "(`keeper infer --raw`, or POST /v1/completions)",
            status=400,
        ) from exc


def import_early() -> None:
    """Import jinja2 in a thread of its own now (~0.1 s of Python), beside the model load
    (C code that releases the GIL): `prepare` then only compiles."""
    import threading

    threading.Thread(target=_import_jinja, name="import jinja2", daemon=True).start()


def _import_jinja() -> None:
    import jinja2.sandbox  # noqa: F401


def prepare(source: str | None) -> None:
    """Compile the model's template now (jinja2's import is ~0.1 s, the compile more), so
    the first chat does not wait for it; a template that does not compile is reported to
    the chat that uses it, as before."""
    if source is not None:
        with contextlib.suppress(Exception):
            _compiled(source)


@functools.lru_cache(maxsize=8)
def _compiled(source: str) -> Template:
    """`source` compiled once in a sandbox: a worker renders its one template for every
    chat, and compiling it costs ~100 times rendering it."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(source)


def _raise_exception(message: str) -> None:
    """What templates call on a conversation they refuse: a 400 for the caller."""
    raise InvalidRequest(f"the model's chat template refused the messages: {message}", status=400)


def _turn(message: ChatMessage, *, native: bool) -> dict[str, Any]:
    """A message as templates read it. `native`: the template reads `tool_calls` itself;
    otherwise the calls become the assistant's text."""
    turn: dict[str, Any] = {"role": message.role, "content": message.content}
    calls = [_parsed_call(c) for c in message.tool_calls or ()]
    if calls and native:
        turn["tool_calls"] = calls
    elif calls:
        said = [
            {"name": c["function"].get("name"), "arguments": c["function"].get("arguments")}
            for c in calls
        ]
        text = json.dumps(said[0] if len(said) == 1 else said)
        turn["content"] = f"{message.content}\n{text}" if message.content else text
    if message.tool_call_id is not None:
        turn["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        turn["name"] = message.name
    return turn


def _parsed_call(call: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI tool call with its `arguments` string read as the JSON object it holds."""
    given = call.get("function")
    function = dict(given) if isinstance(given, dict) else {}
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # not JSON: printed as it came
            function["arguments"] = json.loads(arguments)
    return {**call, "function": function}


def _with_tools_prompt(
    turns: list[dict[str, Any]], tools: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """`turns` with the functions listed in the system message (one made if none)."""
    functions = [t.get("function", t) for t in tools]
    listing = TOOLS_PROMPT.format(functions=json.dumps(functions, indent=1))
    if turns and turns[0]["role"] == "system":
        first = dict(turns[0])
        first["content"] = f"{first['content']}\n\n{listing}" if first["content"] else listing
        return [first, *turns[1:]]
    return [{"role": "system", "content": listing}, *turns]
