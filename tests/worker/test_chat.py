"""Chat messages into a prompt: the model's own template, or builtin:tiny's format."""

from __future__ import annotations

import pytest

from hive.tiny_model import CHAT_TEMPLATE
from jobs import ChatMessage, InvalidRequest
from worker.chat import FALLBACK_TEMPLATE, render_chat

MESSAGES = [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi")]


def test_messages_go_through_the_model_s_template_or_builtin_tiny_s() -> None:
    """The given template renders the messages; without one, the fallback is exactly
    builtin:tiny's own template, ending on the assistant's turn."""
    own = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
    assert render_chat(MESSAGES, own) == "[system]be brief[user]hi"
    assert FALLBACK_TEMPLATE == CHAT_TEMPLATE
    assert render_chat(MESSAGES, None) == (
        "<|system|>\nbe brief</s>\n<|user|>\nhi</s>\n<|assistant|>\n"
    )


def test_a_template_that_refuses_or_breaks_is_the_caller_s_400() -> None:
    """A template's raise_exception (a conversation it does not allow) and a template that
    cannot run are each one sentence with status 400, never a crash of the worker."""
    refusing = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(InvalidRequest, match="refused the messages: roles must alternate") as e:
        render_chat(MESSAGES, refusing)
    assert e.value.status == 400
    with pytest.raises(InvalidRequest, match="--raw") as broken:
        render_chat(MESSAGES, "{% for %}")
    assert broken.value.status == 400


def test_a_template_cannot_reach_python_s_internals() -> None:
    """Templates come with downloaded GGUFs: the sandbox refuses attribute escapes."""
    escape = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(InvalidRequest, match="chat template failed"):
        render_chat(MESSAGES, escape)
