"""Chat messages into one prompt, through the chat template of the model this worker loaded.

    prompt = render_chat(op.messages, engine.chat_template)

One path for every chat: `keeper infer` (unless `--raw`) and the OpenAI door's chat
completions both send `messages` in an `infer`, and the worker that took it renders them:
it alone holds the model's GGUF, so the template is always the loaded model's own
(`tokenizer.chat_template`) and never one guessed before the model loaded. A model
without one gets FALLBACK_TEMPLATE, the `<|role|>` format builtin:tiny carries. Templates
are Jinja from a file downloaded from anywhere: run sandboxed.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobs import ChatMessage, InvalidRequest

FALLBACK_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def render_chat(messages: Sequence[ChatMessage], template: str | None) -> str:
    """The prompt for `messages` through a GGUF chat template (sandboxed Jinja); raises
    InvalidRequest (400) when the template refuses the conversation or cannot run."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:  # templates call it on bad conversations
        raise InvalidRequest(
            f"the model's chat template refused the messages: {message}", status=400
        )

    try:
        compiled = env.from_string(template or FALLBACK_TEMPLATE)
        return compiled.render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            bos_token="",  # llama.cpp adds the model's BOS token when it tokenizes
            eos_token="</s>",
            raise_exception=raise_exception,
        )
    except TemplateError as exc:
        raise InvalidRequest(
            f"the model's chat template failed ({exc}); send the prompt as it is instead "
            "(`keeper infer --raw`, or POST /v1/completions)",
            status=400,
        ) from exc
