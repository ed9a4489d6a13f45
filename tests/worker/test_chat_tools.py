"""Tools in the chat prompt: the template's own `tools`, or a system message listing them;
tool turns and an assistant's tool calls passed through."""

from __future__ import annotations

import json

from jobs import ChatMessage
from worker.chat import render_chat

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TOOLS = [{"type": "function", "function": WEATHER}]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
TURNS = [
    ChatMessage(role="user", content="weather in Paris?"),
    ChatMessage(role="assistant", content="", tool_calls=[CALL]),
    ChatMessage(role="tool", content="sunny", tool_call_id="call_1"),
]
# The shape of Hermes/Qwen templates: tools listed, calls printed with tojson.
WITH_TOOLS = (
    "{% if tools %}<tools>{% for t in tools %}{{ t.function.name }};{% endfor %}</tools>"
    "{% endif %}{% for m in messages %}[{{ m.role }}]{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<call>{{ c.function.arguments | tojson }}</call>"
    "{% endfor %}{% if m.tool_call_id %}({{ m.tool_call_id }}){% endif %}{% endfor %}"
)
PLAIN = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"


def test_a_template_that_reads_tools_gets_them_and_the_tool_turns() -> None:
    """The template sees `tools`, the assistant's call with its arguments as an object
    (so `tojson` prints JSON, not a quoted string), and the tool turn's call id."""
    prompt = render_chat(TURNS, WITH_TOOLS, TOOLS)
    assert prompt == (
        '<tools>get_weather;</tools>[user]weather in Paris?[assistant]<call>{"city": "Paris"}'
        "</call>[tool]sunny(call_1)"
    )


def test_a_template_without_tools_gets_them_as_a_system_message() -> None:
    """A template that never reads `tools` (SmolLM2's, builtin:tiny's): the functions are
    listed as JSON in the system message (added before the first turn, or appended to the
    caller's), and an earlier call becomes the JSON the model is asked to answer with."""
    prompt = render_chat(TURNS, PLAIN, TOOLS)
    listing = prompt.split("[user]")[0]
    assert listing.startswith("[system]You can call these functions:")
    assert '"name": "get_weather"' in listing and '"arguments"' in listing
    said = prompt.split("[assistant]")[1].split("[tool]")[0]
    assert json.loads(said) == {"name": "get_weather", "arguments": {"city": "Paris"}}
    with_system = render_chat(
        [ChatMessage(role="system", content="be brief"), *TURNS], PLAIN, TOOLS
    )
    assert with_system.startswith("[system]be brief\n\nYou can call these functions:")
    assert with_system.count("[system]") == 1


def test_without_tools_nothing_about_them_is_added() -> None:
    """No tools (or tool_choice "none", which sends none): the prompt is the plain chat."""
    plain = [ChatMessage(role="user", content="hi")]
    assert render_chat(plain, PLAIN) == render_chat(plain, PLAIN, None) == "[user]hi"
    assert render_chat(plain, WITH_TOOLS, []) == "[user]hi"
